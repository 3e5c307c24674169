"""The run tree LangSmith would show, built from callbacks alone (no network). Real worker REPLs."""

from __future__ import annotations

from typing import Any, cast

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from rlm_integrations.langchain import RLMRunnable, ScriptedChatModel


class Collector(BaseTracer):
    """Keeps every finished root run (with its children), as LangSmith would receive them."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


def message(text: str, model: str) -> AIMessage:
    return AIMessage(
        content=text,
        usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
        response_metadata={"model_name": model},
    )


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def shape(run: Run) -> tuple[Any, ...]:
    """(run type, name, role, children...) with children in start order."""
    role = (run.extra or {}).get("metadata", {}).get("rlm_role")
    children = sorted(run.child_runs, key=lambda child: (child.start_time, child.dotted_order or ""))
    return (run.run_type, run.name, role, *(shape(child) for child in children))


def walk(run: Run) -> list[Run]:
    return [run, *(r for child in run.child_runs for r in walk(child))]


def metadata(run: Run) -> dict[str, Any]:
    return dict((run.extra or {}).get("metadata", {}))


def test_exact_run_tree_with_sub_calls_and_a_child_rlm():
    root = FakeMessagesListChatModel(
        responses=[
            message(
                block("a = llm_query('summarise')\nb = rlm_query('dig deeper', context=[1, 2, 3])\nprint(a, b)"), "root"
            ),
            message(block("FINAL(sum(context))"), "root"),  # the child's only turn
            message(block("FINAL(b)"), "root"),
        ]
    )
    sub = FakeMessagesListChatModel(responses=[message("a summary", "sub")])
    rlm = RLMRunnable(model=root.with_config(tags=["user-tag"]), sub_model=sub, max_depth=1)
    collector = Collector()
    out = rlm.invoke({"query": "q", "context": "some text"}, {"callbacks": [collector], "tags": ["outer"]})
    assert out.answer == "6"
    assert len(collector.roots) == 1
    tree = collector.roots[0]
    llm = "FakeMessagesListChatModel"
    assert shape(tree) == (
        "chain", "RLM", None,
        ("chain", "rlm_iteration", "iteration",
            ("llm", llm, "root"),
            ("tool", "repl", "cell",
                ("llm", llm, "sub"),
                ("chain", "rlm_query", "child",
                    ("chain", "rlm_iteration", "iteration",
                        ("llm", llm, "root"),
                        ("tool", "repl", "cell"))))),
        ("chain", "rlm_iteration", "iteration",
            ("llm", llm, "root"),
            ("tool", "repl", "cell")),
    )  # fmt: skip

    runs = walk(tree)
    assert all(run.end_time is not None and run.error is None for run in runs)
    assert len({run.id for run in runs}) == len(runs)
    # depth, iteration and role, as tags and metadata
    child = next(run for run in runs if run.name == "rlm_query")
    assert all(metadata(run)["rlm_depth"] == 1 for run in walk(child))
    assert "rlm:child" in cast(list[str], child.tags)
    sub_run = next(run for run in runs if metadata(run).get("rlm_role") == "sub")
    assert metadata(sub_run)["rlm_iteration"] == 1
    assert metadata(sub_run)["rlm_purpose"] == "llm_query"
    assert "rlm:sub" in cast(list[str], sub_run.tags) and "outer" in cast(list[str], sub_run.tags)
    root_runs = [run for run in runs if metadata(run).get("rlm_role") == "root"]
    assert all("user-tag" in cast(list[str], run.tags) and "rlm:root" in cast(list[str], run.tags) for run in root_runs)
    assert [metadata(run)["rlm_iteration"] for run in root_runs] == [1, 1, 2]
    # inputs and outputs
    first_cell = tree.child_runs[0].child_runs[1]
    assert "llm_query('summarise')" in first_cell.inputs["code"]
    assert cast(dict[str, Any], first_cell.outputs)["output"].strip() == "a summary 6"
    assert child.inputs["query"] == "dig deeper"
    assert cast(dict[str, Any], child.outputs)["answer"] == 6
    assert tree.inputs == {"query": "q", "context": "some text"}
    assert cast(dict[str, Any], tree.outputs)["output"].answer == "6"
    # usage from usage_metadata: 4 root calls (3 parent + child) and one sub call
    assert out.usage.by_model["root"].prompt_tokens == 21
    assert out.usage.by_model["sub"].completion_tokens == 3


def test_cell_error_is_the_tool_runs_error_and_the_closing_call_sits_under_the_rlm():
    model = FakeMessagesListChatModel(
        responses=[message(block("print(undefined_name)"), "m"), message("my best guess", "m")]
    )
    collector = Collector()
    out = RLMRunnable(model=model, max_iterations=1).invoke("q", {"callbacks": [collector]})
    assert (out.status, out.answer) == ("max_iterations", "my best guess")
    tree = collector.roots[0]
    assert shape(tree) == (
        "chain", "RLM", None,
        ("chain", "rlm_iteration", "iteration", ("llm", "FakeMessagesListChatModel", "root"), ("tool", "repl", "cell")),
        ("llm", "FakeMessagesListChatModel", "root"),
    )  # fmt: skip
    cell = tree.child_runs[0].child_runs[1]
    assert "NameError" in (cell.error or "")
    closing = tree.child_runs[1]
    assert metadata(closing)["rlm_purpose"] == "final_answer"


def test_nostream_tags_every_internal_model_call():
    def reply(messages: list[BaseMessage]) -> str:
        if messages[0].type == "human":
            return "sub"
        return block("print(llm_query('x'))") if len(messages) <= 2 else block("FINAL(1)")

    collector = Collector()
    RLMRunnable(model=ScriptedChatModel(replies=reply), nostream=True).invoke("q", {"callbacks": [collector]})
    llm_runs = [run for run in walk(collector.roots[0]) if run.run_type == "llm"]
    assert len(llm_runs) == 3
    assert all("nostream" in cast(list[str], run.tags) for run in llm_runs)
    other = [run for run in walk(collector.roots[0]) if run.run_type != "llm"]
    assert all("nostream" not in cast(list[str], run.tags) for run in other)


async def test_concurrent_runs_build_separate_trees():
    def reply(messages: list[BaseMessage]) -> str:
        if messages[0].type == "human":
            return "sub"
        return block("n = len(context)\nprint(llm_query('x'))") if len(messages) <= 2 else block("FINAL(n)")

    collector = Collector()
    rlm = RLMRunnable(model=ScriptedChatModel(replies=reply, latency_s=0.01))
    inputs: list[Any] = [{"query": "q", "context": "v" * n} for n in range(4)]  # dicts: validated into RLMInput
    outs = await rlm.abatch(inputs, {"callbacks": [collector]})
    assert [o.answer for o in outs] == [0, 1, 2, 3]
    assert len(collector.roots) == 4
    for tree in collector.roots:
        assert [len(iteration.child_runs) for iteration in tree.child_runs] == [2, 2]
        run_ids = {metadata(run)["rlm_run_id"] for run in walk(tree) if "rlm_run_id" in metadata(run)}
        assert len(run_ids) == 1  # nothing from another run nested here


def test_tool_run_nests_the_rlm_run():
    from rlm_integrations.langchain import RLMTool

    model = FakeMessagesListChatModel(responses=[message(block("FINAL(context.upper())"), "m")])
    tool = RLMTool(rlm=RLMRunnable(model=model), context="bound data")
    collector = Collector()
    result = tool.invoke(
        {"name": tool.name, "args": {"query": "shout"}, "id": "call-1", "type": "tool_call"}, {"callbacks": [collector]}
    )
    assert result.content == "BOUND DATA"
    assert result.artifact.answer == "BOUND DATA"
    tree = collector.roots[0]
    assert (tree.run_type, tree.name) == ("tool", "recursive_language_model")
    assert shape(tree.child_runs[0])[:2] == ("chain", "RLM")


def test_a_model_failure_ends_every_open_run():
    calls = {"n": 0}

    def second_turn_fails(messages: list[BaseMessage]) -> AIMessage:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("provider down")
        return message(block("print(1)"), "m")

    from langchain_core.runnables import RunnableLambda

    collector = Collector()
    rlm = RLMRunnable(model=RunnableLambda(second_turn_fails), raise_on_error=False)
    out = rlm.invoke("q", {"callbacks": [collector]})
    assert out.status == "error"
    tree = collector.roots[0]
    assert tree.error is None  # the runnable returned its output
    runs = walk(tree)
    assert all(run.end_time is not None for run in runs)
    second_turn = tree.child_runs[1]
    assert "ended before this step finished" in (second_turn.error or "")
    assert "provider down" in (second_turn.child_runs[0].error or "")
