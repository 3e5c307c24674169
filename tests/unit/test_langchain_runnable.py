"""RLMRunnable: invoke, batch, streaming, config machinery, wrapped models, budgets. Real worker REPLs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import ConfigurableField, Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.retry import RunnableRetry

import rlm_integrations.langchain as lc
from rlm_integrations import RLMConfig
from rlm_integrations.core.events import CellFinished
from rlm_integrations.errors import BudgetExhaustedError, UsageError
from rlm_integrations.langchain import (
    RLMBudgetExhaustedError,
    RLMInput,
    RLMOutput,
    RLMProgress,
    RLMRunnable,
    ScriptedChatModel,
    should_retry,
)
from rlm_integrations.langchain.schema import RunnableInput


def message(text: str, prompt: int = 10, completion: int = 5, model: str = "fake-model") -> AIMessage:
    return AIMessage(
        content=text,
        usage_metadata={"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion},
        response_metadata={"model_name": model},
    )


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def fake(*replies: str, prompt: int = 10, completion: int = 5, model: str = "fake-model") -> FakeMessagesListChatModel:
    return FakeMessagesListChatModel(responses=[message(r, prompt, completion, model) for r in replies])


def counting_reply(messages: list[BaseMessage]) -> str:
    """Turn 1 measures the context; turn 2 submits the measurement. Depends only on the messages."""
    if messages[0].type == "human":  # a sub-call: no system prompt
        return "sub"
    if len(messages) <= 2:
        return block("n = len(context)\nprint(n)")
    return block("FINAL(n)")


# -- invoke ----------------------------------------------------------------------------------------
def test_invoke_answers_and_sums_usage_metadata():
    model = fake(block("x = llm_query('hi')\nprint(x)"), "sub answer", block("FINAL(len(context))"))
    out = RLMRunnable(model=model).invoke({"query": "How long is it?", "context": "abcdef"})
    assert isinstance(out, RLMOutput)
    assert (out.answer, out.status, out.iterations) == (6, "completed", 2)
    assert out.usage.total.prompt_tokens == 30
    assert out.usage.total.completion_tokens == 15
    assert out.usage.calls == 3
    assert out.usage.by_model["fake-model"].calls == 3
    assert out.usage.cost_usd is None  # LangChain reports no prices: unknown, never a made-up zero
    assert [run.depth for run in out.trajectory.runs()] == [0]


async def test_ainvoke_with_a_separate_sub_model():
    root = fake(block("print(llm_query('hi'))"), block("FINAL('done')"), model="root")
    sub = fake("from the sub-model", prompt=3, completion=2, model="sub")
    out = await RLMRunnable(model=root, sub_model=sub).ainvoke(RLMInput(query="q", context="c"))
    assert out.answer == "done"
    assert out.usage.by_model["sub"].prompt_tokens == 3
    assert out.usage.by_model["root"].calls == 2
    cell_outputs = [e.stdout for e in out.trajectory.iter_events("cell_end") if isinstance(e, CellFinished)]
    assert cell_outputs[0].strip() == "from the sub-model"


def test_input_forms():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=counting_reply))
    assert rlm.coerce_input("just a query") == RLMInput(query="just a query")
    assert rlm.coerce_input({"query": "q", "context": [1, 2]}).context == [1, 2]
    with pytest.raises(UsageError):
        rlm.coerce_input({"question": "wrong key"})
    with pytest.raises(UsageError):
        rlm.coerce_input(42)
    assert rlm.invoke("a query and no context").status in {"completed", "max_iterations"}


def test_schemas_are_the_pydantic_models():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=counting_reply))
    assert rlm.InputType is RLMInput and rlm.OutputType is RLMOutput
    properties = rlm.get_input_jsonschema()["properties"]
    assert {"query", "context", "max_iterations", "max_llm_calls"} <= set(properties)
    assert "answer" in rlm.get_output_jsonschema()["properties"]


def test_lcel_chain_invoke_and_stream():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=counting_reply))

    def request(text: str) -> RunnableInput:
        return {"query": "How long?", "context": text}

    def answer(out: RLMOutput) -> Any:
        return out.answer

    chain = RunnableLambda(request) | rlm | answer
    assert chain.invoke("hello") == 5
    assert list(chain.stream("hello!"))[-1] == 6


# -- wrapped models ---------------------------------------------------------------------------------
def test_models_wrapped_with_config_retry_and_bind():
    failures = {"left": 1}

    def flaky(messages: list[BaseMessage]) -> AIMessage:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("transient")
        return message(counting_reply(messages))

    model = RunnableLambda(flaky).with_retry(stop_after_attempt=2, wait_exponential_jitter=False)
    out = RLMRunnable(model=model.with_config(tags=["mine"])).invoke({"query": "q", "context": "abc"})
    assert (out.answer, failures["left"]) == (3, 0)


def test_configurable_model_receives_the_callers_configurable():
    model = FakeMessagesListChatModel(responses=[message(block("FINAL('default')"))]).configurable_fields(
        responses=ConfigurableField(id="replies")
    )
    rlm = RLMRunnable(model=model)
    assert rlm.invoke("q").answer == "default"
    configured: RunnableConfig = {"configurable": {"replies": [message(block("FINAL('configured')"))]}}
    assert rlm.invoke("q", configured).answer == "configured"


def test_model_failure_is_a_status_not_a_crash():
    def broken(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("provider down")

    out = RLMRunnable(model=RunnableLambda(broken), raise_on_error=False).invoke("q")
    assert out.status == "error"
    assert "provider down" in (out.error or "")


# -- budgets ---------------------------------------------------------------------------------------
def looping_model() -> ScriptedChatModel:
    return ScriptedChatModel(replies=lambda messages: block("print('still working')"))


def test_budget_fields_start_from_rlm_config_and_are_configurable():
    rlm = RLMRunnable(model=looping_model(), rlm_config=RLMConfig(max_iterations=3, cell_timeout_s=5))
    assert rlm.max_iterations == 3
    assert rlm.config_for().cell_timeout_s == 5
    assert rlm.invoke("q").iterations == 3
    configurable = rlm.configurable_fields(max_iterations=ConfigurableField(id="max_iterations"))
    out = configurable.invoke("q", {"configurable": {"max_iterations": 1}})
    assert (out.status, out.iterations) == ("max_iterations", 1)


def test_per_call_overrides_win():
    rlm = RLMRunnable(model=looping_model(), max_iterations=5)
    out = rlm.invoke({"query": "q", "max_iterations": 2})
    assert (out.status, out.iterations) == ("max_iterations", 2)
    out = rlm.invoke({"query": "q", "max_llm_calls": 1})
    assert (out.status, out.limit) == ("budget_exhausted", "max_llm_calls")


def test_exhausted_budget_raises_on_request_and_is_never_retried():
    model = looping_model()
    calls = {"n": 0}

    def counted(messages: list[BaseMessage]) -> BaseMessage:
        calls["n"] += 1
        return model.invoke(messages)

    rlm = RLMRunnable(model=RunnableLambda(counted), max_iterations=1, raise_on_limit=True)
    retried = rlm.with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    with pytest.raises(RLMBudgetExhaustedError) as caught:
        retried.invoke("q")
    assert isinstance(caught.value, BudgetExhaustedError)
    assert caught.value.limit == "max_iterations"
    assert caught.value.output.iterations == 1
    assert calls["n"] == 2  # one turn and the closing request: one run, not three
    # with_config keeps the rule (RunnableBinding.with_retry delegates to the RLM's)
    calls["n"] = 0
    with pytest.raises(RLMBudgetExhaustedError):
        rlm.with_config(tags=["x"]).with_retry(stop_after_attempt=3).invoke("q")
    assert calls["n"] == 2
    assert not should_retry(caught.value)
    assert not should_retry(UsageError("bad input"))
    assert should_retry(ConnectionError("flaky"))


def test_with_retry_still_retries_other_errors():
    # The core turns model and REPL failures into a status, so what reaches with_retry is
    # rare (a failing callback handler set to raise, an interrupted worker pool); the rule is
    # in the predicate the retry wrapper gets.
    rlm = RLMRunnable(model=ScriptedChatModel(replies=counting_reply))
    retry = retry_rule(rlm.with_retry(stop_after_attempt=2))
    assert retry(ConnectionError("flaky")) and retry(OSError("no worker"))
    assert not retry(RLMBudgetExhaustedError(RLMOutput(status="max_iterations", limit="max_iterations")))
    assert not retry(UsageError("bad input"))
    narrow = retry_rule(rlm.with_retry(retry_if_exception_type=(ConnectionError,)))
    assert narrow(ConnectionError("x")) and not narrow(OSError("y"))
    custom = retry_rule(rlm.with_retry(retry_if_exception_type=lambda e: "retry me" in str(e)))
    assert custom(RuntimeError("retry me")) and not custom(RuntimeError("no"))


def retry_rule(retried: Runnable[Any, Any]) -> Callable[[BaseException], bool]:
    """The predicate a `with_retry` wrapper decides by (RLMRunnable always hands it a predicate)."""
    assert isinstance(retried, RunnableRetry)
    rule = retried.retry_exception_types
    assert callable(rule)
    return rule


# -- batch -----------------------------------------------------------------------------------------
class InFlight:
    """A reply function that records how many model calls were in flight at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, messages: list[BaseMessage]) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.1)
        with self.lock:
            self.now -= 1
        return counting_reply(messages)


async def test_abatch_honours_max_concurrency_and_keeps_runs_apart():
    meter = InFlight()
    rlm = RLMRunnable(model=RunnableLambda(lambda messages: message(meter(messages))))
    inputs: list[RunnableInput] = [{"query": "How long?", "context": "x" * n} for n in range(6)]
    outs = await rlm.abatch(inputs, {"max_concurrency": 2})
    assert [o.answer for o in outs] == list(range(6))
    assert meter.peak == 2
    meter.peak = 0
    outs = await rlm.abatch(inputs, {"max_concurrency": 6})
    assert [o.answer for o in outs] == list(range(6))
    assert meter.peak > 2


def test_batch_in_threads():
    meter = InFlight()
    rlm = RLMRunnable(model=RunnableLambda(lambda messages: message(meter(messages))))
    inputs: list[RunnableInput] = [{"query": "q", "context": "y" * n} for n in range(4)]
    outs = rlm.batch(inputs, {"max_concurrency": 2})
    assert [o.answer for o in outs] == [0, 1, 2, 3]
    assert meter.peak <= 2


# -- streaming -------------------------------------------------------------------------------------
def subcalling_reply(messages: list[BaseMessage]) -> str:
    if messages[0].type == "human":
        return "sub"
    if len(messages) <= 2:
        return block("n = len(context)\nprint(llm_query('hello'))")
    return block("FINAL(n)")


def test_stream_yields_progress_then_the_output():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=subcalling_reply))
    *chunks, output = rlm.stream({"query": "q", "context": "abcd"})
    progress = [c for c in chunks if isinstance(c, RLMProgress)]
    assert progress == chunks
    assert isinstance(output, RLMOutput) and output.answer == 4
    kinds = [c.kind for c in progress]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    for kind in ("iteration_start", "cell_start", "sub_call_start", "sub_call_end", "cell_end", "iteration_end"):
        assert kind in kinds
    assert progress[0] + output is output  # accumulation ends on the output


async def test_astream_and_early_close():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=subcalling_reply))
    chunks = [c async for c in rlm.astream({"query": "q", "context": "abc"})]
    output = chunks[-1]
    assert isinstance(output, RLMOutput) and output.answer == 3
    assert sum(isinstance(c, RLMProgress) for c in chunks) >= 10
    stream = rlm.astream({"query": "q", "context": "abc"})
    first = await anext(stream)
    assert isinstance(first, RLMProgress) and first.kind == "run_start"
    await stream.aclose()  # cancels the run and closes its REPL


def test_sync_stream_early_close_does_not_hang():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=subcalling_reply, latency_s=0.05))
    stream = rlm.stream({"query": "q", "context": "abc"})
    first = next(stream)
    assert isinstance(first, RLMProgress) and first.kind == "run_start"
    began = time.monotonic()
    stream.close()
    assert time.monotonic() - began < 5


async def test_astream_events_v2_carries_custom_events():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=subcalling_reply))
    events = [e async for e in rlm.astream_events({"query": "q", "context": "abcd"}, version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    names = [e["name"] for e in custom]
    for name in (
        "rlm_run_start",
        "rlm_iteration_start",
        "rlm_cell_start",
        "rlm_sub_call_start",
        "rlm_sub_call_end",
        "rlm_cell_end",
        "rlm_iteration_end",
        "rlm_run_end",
    ):
        assert name in names
    # a custom event's data is the payload it was dispatched with (not LangChain's run EventData)
    cell: Mapping[str, Any] = next(e for e in custom if e["name"] == "rlm_cell_start")["data"]
    assert "llm_query" in cell["code"] and cell["depth"] == 0
    kinds = {e["event"] for e in events}
    assert {"on_chat_model_start", "on_tool_start", "on_tool_end", "on_chain_stream"} <= kinds
    assert events[-1]["event"] == "on_chain_end" and events[-1]["data"]["output"].answer == 4


# -- the package -----------------------------------------------------------------------------------
def test_exports_are_frozen():
    assert sorted(lc.__all__) == [
        "CellError",
        "RLMBudgetExhaustedError",
        "RLMChatModel",
        "RLMInput",
        "RLMOutput",
        "RLMProgress",
        "RLMRunnable",
        "RLMSessionRunnable",
        "RLMTool",
        "RLMToolInput",
        "RunFailedError",
        "RunTreeTracer",
        "RunnableLM",
        "ScriptedChatModel",
        "rlm_node",
        "should_retry",
    ]


def test_missing_langchain_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "from rlm_integrations.errors import MissingExtraError\n"
        "try:\n"
        "    import rlm_integrations.langchain\n"
        "except MissingExtraError as error:\n"
        "    print(error.extra, '|', error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("langchain |")
    assert 'pip install "rlm-integrations[langchain]"' in out


def test_large_context_is_traced_as_a_summary():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=counting_reply), trace_context_chars=100)
    traced = rlm._traced_input(RLMInput(query="q", context="z" * 10_000))
    assert traced["context"]["chars"] == 10_000
    assert len(traced["context"]["preview"]) == 100
    assert rlm._traced_input(RLMInput(query="q", context="small"))["context"] == "small"


async def test_concurrent_ainvoke_on_one_instance():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=counting_reply, latency_s=0.01))
    outs = await asyncio.gather(*(rlm.ainvoke({"query": "q", "context": "w" * n}) for n in range(5)))
    assert [o.answer for o in outs] == [0, 1, 2, 3, 4]


# -- the chat-model adapter on its own -------------------------------------------------------------
def test_runnable_lm_is_a_language_model_for_the_core():
    from rlm_integrations import RLM
    from rlm_integrations.langchain import RunnableLM
    from rlm_integrations.lm import LanguageModel

    chat = ScriptedChatModel(replies=counting_reply, model_name="scripted-7b")
    chat.profile = {"max_input_tokens": 32_000}
    lm = RunnableLM(chat.with_retry().with_config(tags=["x"]))
    assert isinstance(lm, LanguageModel)
    assert (lm.name, lm.context_window) == ("scripted-7b", 32_000)
    completion = lm.complete([{"role": "user", "content": "hi"}])
    assert completion.text == "sub" and completion.model == "scripted-7b"
    assert completion.usage.calls == 1 and completion.usage.completion_tokens == 1
    assert completion.usage.cost_usd is None
    result = RLM(lm).completion("How long?", context="abcd")
    assert result.answer == 4


def test_runnable_lm_estimates_usage_when_the_model_reports_none():
    from rlm_integrations.langchain import RunnableLM

    lm = RunnableLM(RunnableLambda(lambda messages: "a plain string reply"), name="plain")
    completion = lm.complete([{"role": "system", "content": "s"}, {"role": "user", "content": "hello there"}])
    assert completion.text == "a plain string reply"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens == 5
