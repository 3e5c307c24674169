"""OpenTelemetry spans from real runs (scripted models, real worker REPLs), read back from the in-memory exporter.

Every test builds its own `TracerProvider`; the global provider is never touched.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import typing
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from engine_helpers import block, config, make_rlm, router, run
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rlm_integrations import RLM
from rlm_integrations.core.events import CellStarted, Event, RunStarted
from rlm_integrations.errors import ModelError, RunCancelled
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.otel import HANDLED_EVENTS, OpenTelemetryObserver


class Started(SpanProcessor):
    """Counts every span started, so a test can check that each one also ended."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.names.append(span.name)


class Traced:
    """A private provider with an in-memory exporter, and an observer writing to it."""

    def __init__(self, **options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.started = Started()
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.started)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.observer = OpenTelemetryObserver(self.provider, **options)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def root(self) -> ReadableSpan:
        (root,) = [s for s in self.spans if s.name == "invoke_agent rlm" and attrs(s)["rlm.depth"] == 0]
        return root

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        kids = [s for s in self.spans if s.parent is not None and s.parent.span_id == span.context.span_id]
        return sorted(kids, key=lambda s: (s.start_time, s.name))

    def shape(self, span: ReadableSpan, *, generic_chat: bool = False) -> tuple[Any, ...]:
        name = "chat" if generic_chat and span.name.startswith("chat ") else span.name
        return (name, *(self.shape(child, generic_chat=generic_chat) for child in self.children(span)))

    def all_ended(self) -> bool:
        return sorted(self.started.names) == sorted(s.name for s in self.spans) and self.observer.open_spans == 0


def attrs(item: Any) -> dict[str, Any]:
    """A span's or span event's attributes, as a plain dict."""
    return dict(item.attributes or {})


def start(span: ReadableSpan) -> int:
    assert span.start_time is not None
    return span.start_time


def end(span: ReadableSpan) -> int:
    assert span.end_time is not None
    return span.end_time


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


FAN_OUT = "a = llm_query_batched(['p1', 'p2'])\nb = rlm_query('dig deeper', context=[1, 2, 3])\nprint(a, b)"

EXPECTED = (
    "invoke_agent rlm",
    ("rlm.iteration",
        ("chat",),
        ("rlm.cell",
            ("chat",),
            ("chat",),
            ("rlm_query",
                ("invoke_agent rlm",
                    ("rlm.iteration",
                        ("chat",),
                        ("rlm.cell",)))))),
    ("rlm.iteration",
        ("chat",),
        ("rlm.cell",)),
)  # fmt: skip
"""The tree of a run whose first turn fans out two `llm_query` prompts and one child run, and whose second answers."""


# -- the core face -----------------------------------------------------------------------------


async def test_span_tree_attributes_and_tokens_match_the_run() -> None:
    traced = Traced()
    replies = router({"What is it?": [block(FAN_OUT), block("FINAL(b)")], "dig deeper": [block("FINAL(sum(context))")]})
    rlm, _, _ = make_rlm(ScriptedLM(replies, name="openai/root-model", cost_per_call=0.5), max_depth=1)
    result = await run(rlm, observers=[traced.observer])
    assert (result.status, result.answer) == ("completed", "6")

    root = traced.root()
    assert traced.shape(root, generic_chat=True) == EXPECTED
    assert traced.all_ended()
    spans = traced.spans
    assert len({s.context.trace_id for s in spans}) == 1
    assert root.parent is None

    # the run spans
    (child,) = [s for s in named(spans, "invoke_agent rlm") if s is not root]
    root_id, child_id = (run.run_id for run in result.trajectory.runs())
    assert attrs(root)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(root)["gen_ai.request.model"] == "openai/root-model"
    assert attrs(root)["gen_ai.provider.name"] == attrs(root)["gen_ai.system"] == "openai"
    assert (attrs(root)["rlm.run_id"], attrs(root)["rlm.status"], attrs(root)["rlm.iterations"]) == (
        root_id,
        "completed",
        2,
    )
    assert "rlm.limit" not in attrs(root)
    assert (attrs(child)["rlm.depth"], attrs(child)["rlm.parent_run_id"]) == (1, root_id)
    assert attrs(child)["rlm.context.type"] == "list" and attrs(child)["rlm.context.items"] == 3
    (sub_call,) = named(spans, "rlm_query")
    assert attrs(sub_call)["rlm.child_run_id"] == child_id == attrs(child)["rlm.run_id"]
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)

    # model calls: root turns and sub-calls, with GenAI attributes
    chats = [s for s in spans if s.name.startswith("chat ")]
    roots = [s for s in chats if attrs(s)["rlm.role"] == "root"]
    subs = [s for s in chats if attrs(s)["rlm.role"] == "sub"]
    assert [s.name for s in roots] == ["chat openai/root-model"] * 3
    assert sorted((attrs(s)["rlm.depth"], attrs(s)["rlm.iteration"]) for s in roots) == [(0, 1), (0, 2), (1, 1)]
    assert [s.name for s in subs] == ["chat sub", "chat sub"]
    assert all(s.kind == SpanKind.CLIENT and attrs(s)["gen_ai.operation.name"] == "chat" for s in chats)
    assert all(attrs(s)["gen_ai.response.model"] == attrs(s)["gen_ai.request.model"] for s in chats)
    assert {attrs(s)["rlm.function"] for s in subs} == {"llm_query"}
    assert "gen_ai.provider.name" not in attrs(subs[0])  # "sub" names no provider
    assert all(attrs(s)["rlm.cost_usd"] == 0.5 for s in roots)

    # tokens: the model spans add up to the result's usage, per model and in total
    for model, usage in result.usage.by_model.items():
        mine = [s for s in chats if attrs(s)["gen_ai.request.model"] == model]
        assert sum(attrs(s)["gen_ai.usage.input_tokens"] for s in mine) == usage.prompt_tokens > 0
        assert sum(attrs(s)["gen_ai.usage.output_tokens"] for s in mine) == usage.completion_tokens > 0
    assert attrs(root)["gen_ai.usage.input_tokens"] == result.usage.total.prompt_tokens
    assert attrs(root)["gen_ai.usage.output_tokens"] == result.usage.total.completion_tokens
    assert attrs(root)["rlm.cost_usd"] == pytest.approx(result.usage.total.cost_usd)

    # cells
    cells = named(spans, "rlm.cell")
    assert len(cells) == 3
    assert all(attrs(s)["rlm.cell.duration_s"] > 0 and attrs(s)["rlm.cell.timed_out"] is False for s in cells)
    assert sorted(attrs(s)["rlm.cell.final"] for s in cells) == [False, True, True]
    assert not any(s.events for s in cells)

    # nothing of the content is recorded by default
    content = ("gen_ai.input.messages", "rlm.cell.code", "rlm.query")
    assert not any(key in attrs(s) for s in spans for key in content)

    # times are the events' own, and every span sits inside its parent
    starts = {e.run_id: e.at for e in result.trajectory.events if isinstance(e, RunStarted)}
    assert root.start_time == int(starts[root_id] * 1e9) and child.start_time == int(starts[child_id] * 1e9)
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        assert start(span) <= end(span)
        if span.parent is not None:
            parent = by_id[span.parent.span_id]
            assert start(parent) <= start(span) and end(span) <= end(parent)


async def test_a_failing_model_is_an_error_span_with_the_exception_recorded() -> None:
    traced = Traced()
    rlm, _, _ = make_rlm(ScriptedLM([ModelError("provider is down", model="m")], name="m"))
    result = await run(rlm, observers=[traced.observer])
    assert result.status == "error"
    assert traced.all_ended()
    (chat,) = named(traced.spans, "chat m")
    assert chat.status.status_code == StatusCode.ERROR
    assert attrs(chat)["error.type"] == "ModelError"
    (exception,) = [e for e in chat.events if e.name == "exception"]
    assert attrs(exception)["exception.type"] == "rlm_integrations.otel.ModelCallFailed"
    assert "provider is down" in attrs(exception)["exception.message"]
    (iteration,) = named(traced.spans, "rlm.iteration")  # the failure cut the turn short
    assert iteration.status.status_code == StatusCode.ERROR and attrs(iteration)["rlm.interrupted"] is True
    root = traced.root()
    assert root.status.status_code == StatusCode.ERROR
    assert attrs(root)["rlm.status"] == "error"
    assert traced.shape(root) == ("invoke_agent rlm", ("rlm.iteration", ("chat m",)))


@pytest.mark.slow  # a real worker times out and restarts
async def test_a_timed_out_cell_is_recorded_but_not_a_span_error() -> None:
    traced = Traced()
    rlm, _, _ = make_rlm([block("n = 0\nwhile True:\n    n += 1"), block("FINAL(1)")], cell_timeout_s=1.0, repl="local")
    result = await run(rlm, observers=[traced.observer])
    assert result.status == "completed"
    first, second = sorted(named(traced.spans, "rlm.cell"), key=start)
    assert attrs(first)["rlm.cell.timed_out"] is True
    assert attrs(first)["rlm.cell.restarted"] is True
    assert first.status.status_code == StatusCode.UNSET
    (error,) = first.events
    assert error.name == "rlm.cell.error" and attrs(error)["rlm.cell.timed_out"] is True
    assert attrs(error)["error.type"] == attrs(first)["rlm.cell.error_type"]
    assert "rlm.cell.error" not in attrs(error)  # the message is content: captured only on request
    assert attrs(second)["rlm.cell.timed_out"] is False and not second.events
    assert traced.all_ended()


async def test_cell_errors_as_span_errors_and_content_capture_when_asked() -> None:
    traced = Traced(cell_errors_as_span_errors=True, capture_content=True, max_content_chars=12)
    rlm, _, _ = make_rlm([block("print(undefined_name)"), block("FINAL('x' * 40)")])
    result = await run(rlm, "What is it? " + "q" * 30, observers=[traced.observer])
    assert result.status == "completed"
    failed, ok = sorted(named(traced.spans, "rlm.cell"), key=start)
    assert failed.status.status_code == StatusCode.ERROR
    assert attrs(failed)["rlm.cell.error_type"] == attrs(failed)["error.type"] == "NameError"
    assert {e.name for e in failed.events} == {"rlm.cell.error", "exception"}
    assert ok.status.status_code == StatusCode.UNSET
    assert attrs(ok)["rlm.cell.code"] == "FINAL('x' * ... [3 more characters]"
    root = traced.root()
    query = attrs(root)["rlm.query"]
    assert query.startswith("What is it? ") and query.endswith("more characters]")
    assert attrs(root)["rlm.answer"].startswith("x" * 12)
    first_chat = min((s for s in traced.spans if s.name.startswith("chat ")), key=start)
    messages = json.loads(attrs(first_chat)["gen_ai.input.messages"])
    assert messages[0]["parts"][0]["type"] == "text"
    assert all(len(m["parts"][0]["content"]) <= 12 + len("... [999999 more characters]") for m in messages)
    reply = json.loads(attrs(first_chat)["gen_ai.output.messages"])
    assert reply[0]["role"] == "assistant" and reply[0]["parts"][0]["content"].startswith("```repl")


async def test_a_cancelled_run_ends_every_span() -> None:
    traced = Traced()
    started = asyncio.Event()

    def on_cell(event: Event) -> None:
        if isinstance(event, CellStarted):
            started.set()

    rlm = RLM(
        ScriptedLM([block("n = 0\nwhile True:\n    n += 1")]),
        config=config(cell_timeout_s=60),
        observers=[traced.observer, on_cell],
    )
    task = asyncio.create_task(rlm.acompletion("q", "ctx"))
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(RunCancelled):
        await task
    assert traced.all_ended()
    assert sorted(traced.started.names) == ["chat scripted", "invoke_agent rlm", "rlm.cell", "rlm.iteration"]
    root = traced.root()
    assert root.status.status_code == StatusCode.ERROR and attrs(root)["rlm.status"] == "cancelled"
    (cell,) = named(traced.spans, "rlm.cell")
    assert cell.status.status_code == StatusCode.ERROR and attrs(cell)["rlm.interrupted"] is True


async def test_concurrent_runs_sharing_one_observer_make_separate_traces() -> None:
    traced = Traced()
    replies = router({"one?": [block("FINAL(llm_query('a'))")], "two?": [block("FINAL(llm_query('b'))")]})
    sub = ScriptedLM(lambda messages: "s", name="sub")
    rlm = RLM(ScriptedLM(replies, name="root"), sub, config=config(), observers=[traced.observer])
    results = await asyncio.gather(run(rlm, "one?"), run(rlm, "two?"))
    assert [r.status for r in results] == ["completed", "completed"]
    roots = named(traced.spans, "invoke_agent rlm")
    assert len(roots) == 2 and len({s.context.trace_id for s in roots}) == 2
    for root in roots:
        assert traced.shape(root) == (
            "invoke_agent rlm",
            ("rlm.iteration", ("chat root",), ("rlm.cell", ("chat sub",))),
        )
        trace_spans = [s for s in traced.spans if s.context.trace_id == root.context.trace_id]
        assert len(trace_spans) == 5
    assert traced.all_ended()


async def test_a_tool_call_is_an_execute_tool_span_not_a_model_call() -> None:
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return {"a": "apple"}.get(key, "?")

    def broken(key: str) -> str:
        """Always fails."""
        raise KeyError(key)

    traced = Traced(capture_content=True)
    code = "x = lookup('a')\ntry:\n    broken('b')\nexcept Exception as e:\n    print('failed', e)\nprint(x)"
    root = ScriptedLM([block(code), block("FINAL(x)")], name="root")
    rlm = RLM(root, tools={"lookup": lookup, "broken": broken}, config=config(), observers=[traced.observer])
    result = await run(rlm)
    assert (result.status, result.answer) == ("completed", "apple")
    assert traced.all_ended()
    assert not any(s.name == "chat tool" for s in traced.spans)
    (ok,) = named(traced.spans, "execute_tool lookup")
    (failed,) = named(traced.spans, "execute_tool broken")
    first_cell = min(named(traced.spans, "rlm.cell"), key=start)
    for span, name in ((ok, "lookup"), (failed, "broken")):
        assert span.kind == SpanKind.INTERNAL
        assert attrs(span)["gen_ai.operation.name"] == "execute_tool"
        assert attrs(span)["gen_ai.tool.name"] == name
        assert attrs(span)["gen_ai.tool.type"] == "function"
        assert not any(key in attrs(span) for key in ("gen_ai.request.model", "gen_ai.usage.input_tokens"))
        assert "rlm.cache_hit" not in attrs(span)
        assert span.parent is not None and span.parent.span_id == first_cell.context.span_id
    assert "'a'" in attrs(ok)["gen_ai.tool.call.arguments"]
    assert attrs(ok)["gen_ai.tool.call.result"] == "apple"
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    assert attrs(failed)["error.type"] == "SubCallFailed" and "gen_ai.tool.call.result" not in attrs(failed)
    (exception,) = [e for e in failed.events if e.name == "exception"]
    assert "KeyError" in attrs(exception)["exception.message"]


async def test_a_cache_hit_is_marked_on_its_model_span() -> None:
    code = block("a = llm_query('alpha')\nprint(a)")
    rlm, root, sub = make_rlm([code, block("FINAL(a)")], cache="memory")
    first_run, second_run = Traced(), Traced()
    first = await run(rlm, observers=[first_run.observer])
    second = await run(rlm, observers=[second_run.observer])
    assert first.answer == second.answer == "sub:alpha"
    assert (len(root.calls), len(sub.calls)) == (2, 1)  # the second run replayed everything
    for traced, hit in ((first_run, False), (second_run, True)):
        assert traced.all_ended()
        chats = sorted((s for s in traced.spans if s.name.startswith("chat ")), key=start)
        assert [s.name for s in chats] == ["chat root", "chat sub", "chat root"]
        assert [attrs(s)["rlm.cache_hit"] for s in chats] == [hit] * 3
        assert all(attrs(s)["gen_ai.operation.name"] == "chat" for s in chats)
        assert "rlm.cache_hit" not in attrs(traced.root())
    replayed = [s for s in second_run.spans if s.name.startswith("chat ")]
    assert all(attrs(s)["gen_ai.usage.input_tokens"] == 0 for s in replayed)


def test_every_engine_event_is_handled_and_unknown_ones_are_skipped() -> None:
    (union, *_) = typing.get_args(typing.get_type_hints(sys.modules[__name__], include_extras=True)["EVENT_TYPE"])
    assert set(typing.get_args(union)) == set(HANDLED_EVENTS)
    traced = Traced()

    class FutureEvent:
        kind = "future_kind"
        run_id = "run-x"

    traced.observer(FutureEvent())  # type: ignore[arg-type]
    assert traced.observer.unknown_kinds == {"future_kind"}
    assert traced.spans == []


EVENT_TYPE: Event  # read by the test above, so the union is taken from the engine's own declaration


def test_the_observer_survives_a_deep_copy() -> None:
    import copy

    observer = OpenTelemetryObserver(TracerProvider())
    assert copy.deepcopy(observer) is observer
    with pytest.raises(ValueError, match="max_content_chars"):
        OpenTelemetryObserver(max_content_chars=-1)


def test_missing_extra_names_the_install_command() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from rlm_integrations.errors import MissingExtraError\n"
        "try:\n"
        "    import rlm_integrations.otel\n"
        "except MissingExtraError as error:\n"
        "    print(error.extra, '|', error)\n"
        "import rlm_integrations.core.engine\n"
        "print('core ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("otel |")
    assert 'pip install "rlm-integrations[otel]"' in out
    assert out.rstrip().endswith("core ok")  # the core never needs OpenTelemetry


# -- the DSPy and LangChain faces --------------------------------------------------------------


def test_the_dspy_face_produces_the_same_tree() -> None:
    dspy = pytest.importorskip("dspy")
    from rlm_integrations.dspy import RLM as DSPyRLM
    from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

    turns = rlm_replies([FAN_OUT, "FINAL(answer=b)"], sub="sub reply")

    def reply(messages: list[dict[str, str]]) -> str:
        if messages[0]["role"] == "system" and "Question: dig deeper" in messages[-1]["content"]:
            return block("FINAL(str(sum(context)))")
        return turns(messages)

    traced = Traced()
    program = DSPyRLM("question -> answer", config=config(max_depth=1), observers=[traced.observer])
    with dspy.context(lm=ScriptedDSPyLM(reply, model="openai/dspy-model")):
        pred = program(question="q")
    assert pred.answer == "6"
    root = traced.root()
    assert traced.shape(root, generic_chat=True) == EXPECTED
    assert attrs(root)["gen_ai.usage.input_tokens"] == pred.usage.total.prompt_tokens
    assert traced.all_ended()


def test_the_langchain_face_produces_the_same_tree() -> None:
    pytest.importorskip("langchain_core")
    from rlm_integrations.langchain import RLMRunnable, ScriptedChatModel

    root_model = ScriptedChatModel(
        replies=[block(FAN_OUT), block("FINAL(sum(context))"), block("FINAL(b)")], model_name="root"
    )
    sub_model = ScriptedChatModel(replies=lambda messages: "sub reply", model_name="sub")
    traced = Traced()
    runnable = RLMRunnable(model=root_model, sub_model=sub_model, max_depth=1, observers=[traced.observer])
    out = runnable.invoke({"query": "q", "context": "some text"})
    assert out.answer == "6"
    root = traced.root()
    assert traced.shape(root, generic_chat=True) == EXPECTED
    assert attrs(root)["gen_ai.usage.output_tokens"] == out.usage.total.completion_tokens
    assert traced.all_ended()
