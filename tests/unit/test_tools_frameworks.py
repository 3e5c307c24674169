"""`tools=[...]` takes LangChain tools and `dspy.Tool`s as well as callables, on every face. Real worker REPLs."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

pytest.importorskip("langchain_core")
dspy = pytest.importorskip("dspy")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import StructuredTool, tool  # noqa: E402

from rlm_integrations import RLM, RLMConfig  # noqa: E402
from rlm_integrations.core.events import SubCallFinished, SubCallStarted  # noqa: E402
from rlm_integrations.core.tools import TOOL_MODEL, check_tools  # noqa: E402
from rlm_integrations.errors import ConfigError, ReservedNameError  # noqa: E402
from rlm_integrations.lm import ScriptedLM  # noqa: E402

CONFIG = RLMConfig(cell_timeout_s=20.0)
CALLS: list[tuple[str, int, Any]] = []
"""Every framework tool below records (name, the pid it ran in, its arguments): the host's pid proves where it ran."""


@tool
def shout(text: str) -> str:
    """Upper-case a text (a LangChain tool)."""
    CALLS.append(("shout", os.getpid(), text))
    return text.upper()


def _area(width: int, height: int) -> int:
    CALLS.append(("area", os.getpid(), (width, height)))
    return width * height


area = StructuredTool.from_function(_area, name="area", description="Area of a rectangle (a structured LangChain tool)")


def _count_words(text: str) -> int:
    """Count the words of a text (a dspy.Tool)."""
    CALLS.append(("count_words", os.getpid(), text))
    return len(text.split())


count_words = dspy.Tool(_count_words, name="count_words")


async def _fetch(key: str) -> dict[str, str]:
    """Fetch a record by key (an async dspy.Tool)."""
    await asyncio.sleep(0)
    CALLS.append(("fetch", os.getpid(), key))
    return {"key": key, "value": key[::-1]}


fetch = dspy.Tool(_fetch, name="fetch")


@tool
def broken(text: str) -> str:
    """Always fails (a LangChain tool)."""
    raise RuntimeError(f"cannot handle {text}")


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    CALLS.clear()


def tool_calls(result: Any) -> list[tuple[str, str, str]]:
    events = result.trajectory.events
    starts = {e.call_id: e for e in events if isinstance(e, SubCallStarted) and e.model == TOOL_MODEL}
    ends = [e for e in events if isinstance(e, SubCallFinished) and e.call_id in starts]
    return [(starts[e.call_id].prompt, e.response, e.error or "") for e in ends]


# -- the core face ---------------------------------------------------------------------------------
def test_a_langchain_tool_runs_in_the_host_with_positional_or_keyword_arguments():
    code = "a = shout('hi there')\nb = area(3, height=4)\nprint(a, b)\nFINAL([a, b])"
    root = ScriptedLM([block(code)])
    result = RLM(root, tools=[shout, area], config=CONFIG).completion("q", "ctx")
    assert result.answer == ["HI THERE", 12]
    assert [(name, args) for name, _, args in CALLS] == [("shout", "hi there"), ("area", (3, 4))]
    assert {pid for _, pid, _ in CALLS} == {os.getpid()}  # host callbacks, not the sandboxed worker
    assert tool_calls(result) == [("shout('hi there')", "HI THERE", ""), ("area(3, height=4)", "12", "")]
    system = root.calls[0][0]["content"]
    assert "`shout(...)`: Upper-case a text (a LangChain tool)." in system
    assert "`area(...)`: Area of a rectangle" in system


def test_dspy_tools_sync_and_async_run_in_the_host_and_appear_in_the_run_tree():
    root = ScriptedLM([block("FINAL([count_words('a b c'), fetch(key='abc')])")])
    result = RLM(root, tools=[count_words, fetch], config=CONFIG).completion("q", "ctx")
    assert result.answer == [3, {"key": "abc", "value": "cba"}]
    assert sorted(name for name, _, _ in CALLS) == ["count_words", "fetch"]
    assert {pid for _, pid, _ in CALLS} == {os.getpid()}
    assert [prompt for prompt, _, _ in tool_calls(result)] == ["count_words('a b c')", "fetch(key='abc')"]
    assert "`count_words(...)`: Count the words of a text (a dspy.Tool)." in root.calls[0][0]["content"]


def test_a_sync_dspy_tool_does_not_block_the_event_loop():
    seen: list[str] = []

    def slow(x: int) -> int:
        """Slow."""
        seen.append(threading.current_thread().name)
        return x + 1

    root = ScriptedLM([block("FINAL(slow(1))")])
    assert RLM(root, tools=[dspy.Tool(slow)], config=CONFIG).completion("q", "c").answer == 2
    assert seen and seen[0] != threading.main_thread().name  # ran in a worker thread


def test_a_failing_tool_is_an_error_for_the_cell_and_recorded_the_run_goes_on():
    code1 = "try:\n    broken('x')\nexcept Exception as e:\n    print('caught', e)"
    root = ScriptedLM([block(code1), block("FINAL('recovered')")])
    result = RLM(root, tools={"broken": broken}, config=CONFIG).completion("q", "c")
    assert result.answer == "recovered"
    assert "cannot handle x" in root.calls[1][-1]["content"]
    ((prompt, _, error),) = tool_calls(result)
    assert prompt == "broken('x')" and "cannot handle x" in error


def test_wrong_arguments_reach_the_code_as_a_type_error():
    root = ScriptedLM([block("print(area(1, 2, 3))"), block("FINAL('ok')")])
    RLM(root, tools=[area], config=CONFIG).completion("q", "c")
    assert "area() takes 2 argument(s) (width, height), got 3" in root.calls[1][-1]["content"]


@pytest.mark.parametrize(
    "tools",
    [
        [StructuredTool.from_function(_area, name="print", description="d")],
        [dspy.Tool(_count_words, name="llm_query")],
        [dspy.Tool(_count_words, name="len")],
        {"FINAL": shout},
    ],
    ids=["langchain-print", "dspy-llm_query", "dspy-len", "dict-FINAL"],
)
def test_framework_tools_are_checked_against_reserved_names(tools):
    with pytest.raises(ReservedNameError, match="would replace it inside the REPL"):
        RLM(ScriptedLM([]), tools=tools)


def test_bad_tools_get_clear_errors():
    with pytest.raises(ConfigError, match="two tools are named 'shout'"):
        check_tools([shout, shout])
    with pytest.raises(ConfigError, match=r"must be a callable, a LangChain tool or a dspy\.Tool"):
        check_tools({"thing": 42})
    with pytest.raises(ConfigError, match="must be a list of tools or a dict"):
        check_tools("shout")
    assert set(check_tools({"yell": shout, "words": count_words})) == {"yell", "words"}  # a dict renames


# -- the DSPy and LangChain faces ------------------------------------------------------------------
def test_the_dspy_module_takes_a_langchain_tool():
    from rlm_integrations.dspy import RLM as DSPyRLM
    from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=shout(question))"]))
    program = DSPyRLM("question -> answer", tools=[shout], config=CONFIG)
    with dspy.context(lm=lm):
        pred = program(question="quiet")
    assert pred.answer == "QUIET"
    assert [(name, args) for name, _, args in CALLS] == [("shout", "quiet")]
    assert tool_calls(pred.rlm_result) == [("shout('quiet')", "QUIET", "")]
    assert "`shout(...)`: Upper-case a text" in lm.calls[0][-1]["content"]


def test_the_langchain_runnable_takes_dspy_and_langchain_tools():
    from rlm_integrations.langchain import RLMRunnable

    reply = AIMessage(content=block("FINAL([count_words(context), shout('x')])"))
    runnable = RLMRunnable(model=FakeMessagesListChatModel(responses=[reply]), tools=[count_words, shout])
    out = runnable.invoke({"query": "how many words?", "context": "one two"})
    assert out.answer == [2, "X"]
    assert sorted(name for name, _, _ in CALLS) == ["count_words", "shout"]
    assert len(tool_calls(out)) == 2


def test_dspy_callbacks_see_dspy_tool_calls_made_from_the_code():
    from dspy.utils.callback import BaseCallback

    from rlm_integrations.dspy import RLM as DSPyRLM
    from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

    class Recorder(BaseCallback):
        def __init__(self) -> None:
            self.seen: list[tuple[str, Any]] = []

        def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.seen.append((instance.name, inputs["kwargs"]))

        def on_tool_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
            self.seen.append(("end", outputs))

    recorder = Recorder()
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=str(count_words('a b')) + fetch('k')['value'])"]))
    program = DSPyRLM("question -> answer", tools=[count_words, fetch], config=CONFIG)
    with dspy.context(lm=lm, callbacks=[recorder]):
        assert program(question="q").answer == "2k"
    assert recorder.seen == [
        ("count_words", {"text": "a b"}),
        ("end", 2),
        ("fetch", {"key": "k"}),
        ("end", {"key": "k", "value": "k"}),
    ]
