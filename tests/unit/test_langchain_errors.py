"""RLMRunnable raises on failure (typed, partial output attached), visibly to callbacks, retries and fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from rlm_integrations.errors import RLMError, RunFailedError
from rlm_integrations.langchain import RLMOutput, RLMRunnable, ScriptedChatModel, should_retry


class Collector(BaseTracer):
    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


class FlakyModel:
    """A root model that is down for the first `down` calls, then answers."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    def __call__(self, messages: list[BaseMessage]) -> AIMessage:
        self.calls += 1
        if self.calls <= self.down:
            raise ConnectionError("provider down")
        return AIMessage(content=block("FINAL('recovered')"))


def broken_rlm(**options: object) -> RLMRunnable:
    return RLMRunnable(model=RunnableLambda(FlakyModel(down=10**6)), **options)


def test_a_failed_run_raises_a_typed_error_with_the_partial_output():
    with pytest.raises(RunFailedError) as caught:
        broken_rlm().invoke({"query": "q", "context": "abc"})
    error = caught.value
    assert isinstance(error, RLMError)
    assert isinstance(error.result, RLMOutput)
    assert (error.status, error.result.status) == ("error", "error")
    assert "provider down" in (error.error or "")
    assert "provider down" in str(error)
    assert error.result.trajectory.root is not None
    assert should_retry(error)


async def test_a_failed_async_run_raises_too():
    with pytest.raises(RunFailedError) as caught:
        await broken_rlm().ainvoke("q")
    assert caught.value.result.status == "error"


def test_a_failed_stream_raises_after_its_progress():
    chunks = []
    with pytest.raises(RunFailedError):
        for chunk in broken_rlm().stream("q"):
            chunks.append(chunk)
    assert chunks and all(not isinstance(chunk, RLMOutput) for chunk in chunks)


def test_raise_on_error_false_returns_the_failed_output():
    out = broken_rlm(raise_on_error=False).invoke("q")
    assert out.status == "error"
    assert "provider down" in (out.error or "")


def test_callbacks_see_the_failure_as_an_error():
    collector = Collector()
    with pytest.raises(RunFailedError):
        broken_rlm().invoke("q", {"callbacks": [collector]})
    (root,) = collector.roots
    assert (root.run_type, root.name) == ("chain", "RLM")
    assert root.error is not None and "RunFailedError" in root.error
    assert root.outputs is None or not root.outputs


def test_limits_are_not_errors():
    looping = ScriptedChatModel(replies=lambda messages: block("print('still working')"))
    out = RLMRunnable(model=looping, max_iterations=2).invoke("q")
    assert (out.status, out.limit) == ("max_iterations", "max_iterations")


def test_with_retry_retries_a_failed_run():
    # Find out how many model calls one failed run makes (the adapter's own retries included) ...
    probe = FlakyModel(down=10**6)
    with pytest.raises(RunFailedError):
        RLMRunnable(model=RunnableLambda(probe)).invoke("q")
    per_run = probe.calls
    # ... then let the provider be down for exactly one run: the retry gets the answer.
    flaky = FlakyModel(down=per_run)
    collector = Collector()
    rlm = RLMRunnable(model=RunnableLambda(flaky)).with_retry(stop_after_attempt=2, wait_exponential_jitter=False)
    out = rlm.invoke("q", {"callbacks": [collector]})
    assert out.answer == "recovered"
    attempts = [run for run in collector.roots[0].child_runs if run.name == "RLM"]
    assert [run.error is not None for run in attempts] == [True, False]


def test_with_retry_gives_up_with_the_typed_error():
    rlm = broken_rlm().with_retry(stop_after_attempt=2, wait_exponential_jitter=False)
    with pytest.raises(RunFailedError):
        rlm.invoke("q")


def test_with_fallbacks_falls_back_on_a_failed_run():
    backup = RLMRunnable(model=ScriptedChatModel(replies=lambda messages: block("FINAL('from backup')")))
    out = broken_rlm().with_fallbacks([backup]).invoke({"query": "q", "context": "abc"})
    assert out.answer == "from backup"


async def test_with_fallbacks_hands_the_error_to_the_fallback_when_asked():
    seen: list[object] = []

    def fallback(value: dict[str, object]) -> str:
        seen.append(value["error"])
        return "handled"

    # The fallback answers with a str, not an RLMResult: the chain's output is whatever runs last.
    handler: Runnable[Any, Any] = RunnableLambda(fallback)
    chain = broken_rlm().with_fallbacks([handler], exception_key="error")
    answer: object = await chain.ainvoke({"query": "q"})
    assert answer == "handled"
    (error,) = seen
    assert isinstance(error, RunFailedError) and error.result.status == "error"


def test_a_failed_run_fails_the_graph_node_and_its_retry_policy_applies():
    langgraph = pytest.importorskip("langgraph.graph")
    from langchain_core.messages import HumanMessage
    from langgraph.types import RetryPolicy

    probe = FlakyModel(down=10**6)
    with pytest.raises(RunFailedError):
        RLMRunnable(model=RunnableLambda(probe)).invoke("q")
    flaky = FlakyModel(down=probe.calls)  # down for exactly one run
    graph = langgraph.StateGraph(langgraph.MessagesState)
    retry = RetryPolicy(max_attempts=2, initial_interval=0.01, retry_on=RunFailedError)
    graph.add_node("rlm", RLMRunnable(model=RunnableLambda(flaky)), retry_policy=retry)
    graph.add_edge(langgraph.START, "rlm")
    app = graph.compile()
    state = app.invoke({"messages": [HumanMessage("q")]})
    assert state["messages"][-1].content == "recovered"
    with pytest.raises(RunFailedError):
        broken = langgraph.StateGraph(langgraph.MessagesState)
        broken.add_node("rlm", broken_rlm())
        broken.add_edge(langgraph.START, "rlm")
        broken.compile().invoke({"messages": [HumanMessage("q")]})


def test_rlm_tool_raises_a_failed_run_or_reports_it_when_asked():
    from rlm_integrations.langchain import RLMTool

    with pytest.raises(RunFailedError):
        RLMTool(rlm=broken_rlm()).invoke({"query": "q"})
    text = RLMTool(rlm=broken_rlm(raise_on_error=False)).invoke({"query": "q"})
    assert "stopped early: error" in text and "provider down" in text
