"""The one run entry point (`core.run.Run`): its checks, its result, and every face going through it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.core import run as run_module
from rlm_integrations.core.run import Run, check_context, resolve_repl
from rlm_integrations.errors import RunCancelled, UnsupportedContextError, UsageError
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.repl import UnknownBackendError
from rlm_integrations.testing import FakeREPL


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def fake_repl(config: RLMConfig) -> FakeREPL:
    return FakeREPL(max_output_chars=config.max_output_chars, cell_timeout_s=config.cell_timeout_s)


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Run]]:
    """Every `Run` executed while the test runs (whichever face started it)."""
    seen: list[Run] = []
    original = Run.execute

    async def recording(self: Run, *args: Any, **kwargs: Any) -> RLMResult:
        seen.append(self)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Run, "execute", recording)
    yield seen


# -- the entry point itself -------------------------------------------------------------------------
async def test_a_run_answers_and_returns_the_one_result_type() -> None:
    lm = ScriptedLM([block("x = len(context) * 2\nprint(x)"), block("FINAL(x + 1)")])
    run = Run(model=lm, repl=fake_repl, config=RLMConfig(citations=False))
    result = await run.execute("How long, doubled, plus one?", "abcd")
    assert type(result) is RLMResult
    assert (result.answer, result.status, result.iterations) == (9, "completed", 2)
    assert result.usage.calls == len(lm.calls) == 2
    assert run.budget.usage() == result.usage  # the live budget is the one the result reports
    kinds = [event.kind for event in result.trajectory.events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert run.events == list(result.trajectory.events)


async def test_overrides_are_validated_when_the_run_is_built() -> None:
    lm = ScriptedLM([block("FINAL(1)")])
    with pytest.raises(pydantic.ValidationError, match="max_iterations"):
        Run(model=lm, repl=fake_repl, overrides={"max_iterations": 0})
    with pytest.raises(pydantic.ValidationError, match="no_such_field"):
        Run(model=lm, repl=fake_repl, overrides={"no_such_field": 1})
    run = Run(model=lm, repl=fake_repl, config=RLMConfig(max_iterations=7), overrides={"max_depth": 0})
    assert (run.config.max_iterations, run.config.max_depth) == (7, 0)
    assert lm.calls == []


async def test_bad_requests_are_refused_before_any_model_call() -> None:
    lm = ScriptedLM([block("FINAL(1)")])
    with pytest.raises(UsageError, match="non-empty string"):
        await Run(model=lm, repl=fake_repl).execute("   ", "data")
    with pytest.raises(UnsupportedContextError, match="object"):
        await Run(model=lm, repl=fake_repl).execute("q", {"k": object()})
    with pytest.raises(UnsupportedContextError, match="keys must be str"):
        check_context([{1: "a"}])
    with pytest.raises(UnknownBackendError, match="no-such-backend"):
        Run(model=lm, repl="no-such-backend")
    assert lm.calls == []


async def test_a_run_executes_once() -> None:
    run = Run(model=ScriptedLM([block("FINAL(1)")] * 2), repl=fake_repl)
    assert (await run.execute("q")).answer == 1
    with pytest.raises(UsageError, match="executed already"):
        await run.execute("q")


async def test_cancelling_gives_the_partial_result() -> None:
    waiting, never = asyncio.Event(), asyncio.Event()

    async def reply(messages: Any) -> str:
        if any(m["role"] == "assistant" and "working" in m["content"] for m in messages):
            waiting.set()
            await never.wait()  # the second turn never comes back
        return block("print('working')")

    run = Run(model=ScriptedLM(reply), repl=fake_repl)
    task = asyncio.create_task(run.execute("q", "ctx"))
    await asyncio.wait_for(waiting.wait(), timeout=30)
    assert any(event.kind == "cell_end" for event in run.events)
    task.cancel()
    with pytest.raises(RunCancelled) as caught:
        await task
    partial = caught.value.result
    assert isinstance(partial, RLMResult) and partial.status == "cancelled"
    assert partial.iterations >= 1 and partial.trajectory.events[-1].kind == "run_end"


async def test_citations_can_be_left_out_for_one_run() -> None:
    script = [block("FINAL('the quick red fox jumped')")]
    context = "Once upon a time the quick red fox jumped over the dog."
    cited = await Run(model=ScriptedLM(script), repl=fake_repl).execute("which animal?", context)
    plain = await Run(model=ScriptedLM(script), repl=fake_repl).execute("which animal?", context, citations=False)
    assert [citation.text for citation in cited.citations] == ["the quick red fox jumped"]
    assert plain.citations == []


def test_names_resolve_through_the_backend_registry_and_callables_stay() -> None:
    assert resolve_repl(fake_repl) is fake_repl
    from rlm_integrations.repl import resolve_backend

    assert resolve_repl("local") is resolve_backend("local")


# -- one mapping, one set of defaults ----------------------------------------------------------------
def test_the_config_to_repl_mapping() -> None:
    config = RLMConfig(cell_timeout_s=5, memory_limit_mb=64, max_output_chars=500)
    assert config.repl_options() == {"cell_timeout_s": 5.0, "memory_limit_mb": 64, "max_output_chars": 500}
    assert RLMConfig(cell_timeout_s=None).repl_options()["cell_timeout_s"] is None


def test_the_dspy_local_repl_gets_the_mapped_options() -> None:
    pytest.importorskip("dspy")
    from rlm_integrations.dspy._support import repl_factory

    repl: Any = repl_factory("local")(RLMConfig(cell_timeout_s=7, max_output_chars=600))
    assert (repl.cell_timeout_s, repl.max_output_chars) == (7.0, 600)


def test_the_runnable_budget_fields_are_the_configs() -> None:
    pytest.importorskip("langchain_core")
    from rlm_integrations.langchain import RLMRunnable, ScriptedChatModel

    defaults = RLMConfig()
    runnable = RLMRunnable(model=ScriptedChatModel(replies=["x"]))
    for name in ("max_iterations", "max_depth", "max_llm_calls", "max_tokens", "max_cost_usd", "timeout_s"):
        assert getattr(runnable, name) == getattr(defaults, name), name
    with pytest.raises(pydantic.ValidationError, match="max_depth"):
        RLMRunnable(model=ScriptedChatModel(replies=["x"]), max_depth=-1)
    with pytest.raises(pydantic.ValidationError, match="max_cost_usd"):
        RLMRunnable(model=ScriptedChatModel(replies=["x"]), max_cost_usd=float("inf"))
    config = RLMConfig(max_depth=3, cell_timeout_s=4)
    built = RLMRunnable(model=ScriptedChatModel(replies=["x"]), rlm_config=config).config_for()
    assert (built.max_depth, built.cell_timeout_s) == (3, 4.0)


def test_the_cli_starts_from_the_config_defaults() -> None:
    pytest.importorskip("typer")
    from rlm_integrations.cli.app import config_from_options
    from rlm_integrations.errors import ConfigError

    assert config_from_options(max_depth=None, cell_timeout_s=None) == RLMConfig()
    assert config_from_options(max_depth=2).max_depth == 2
    with pytest.raises(ConfigError, match="--max-depth"):
        config_from_options(max_depth=-1)


# -- every face goes through it ---------------------------------------------------------------------
def test_the_core_rlm_and_its_sessions_run_through_it(executions: list[Run]) -> None:
    rlm = RLM(ScriptedLM([block("FINAL(len(context))")] * 3), repl=fake_repl)
    assert rlm.completion("how long?", "abc", max_iterations=3).answer == 3
    assert executions[-1].config.max_iterations == 3
    with rlm.session("abcd") as session:
        assert session.ask("how long?", max_depth=0).answer == 4
    assert executions[-1].config.max_depth == 0
    assert len(executions) == 2
    with pytest.raises(pydantic.ValidationError):
        rlm.completion("q", "abc", max_iterations=-1)
    assert len(executions) == 2


def test_the_langchain_faces_run_through_it_and_return_the_result(executions: list[Run]) -> None:
    pytest.importorskip("langchain_core")
    from rlm_integrations.langchain import RLMOutput, RLMRunnable, RLMTool, ScriptedChatModel

    assert RLMOutput is RLMResult
    runnable = RLMRunnable(model=ScriptedChatModel(replies=[block("FINAL(len(context))")] * 2), repl=fake_repl)
    output = runnable.invoke({"query": "how long?", "context": "abcde", "max_iterations": 2})
    assert type(output) is RLMResult and output.ok and str(output) == "5"
    assert executions[-1].config.max_iterations == 2
    content, artifact = RLMTool(rlm=runnable, context="abc")._run("how long?")
    assert content == "3" and type(artifact) is RLMResult
    assert len(executions) == 2


def test_the_dspy_module_runs_through_it(executions: list[Run]) -> None:
    dspy = pytest.importorskip("dspy")
    from rlm_integrations.dspy import RLM as DSPyRLM
    from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=str(len(context)))"]))
    program = DSPyRLM("context, question -> answer", max_depth=0, repl=fake_repl)
    with dspy.context(lm=lm):
        prediction = program(context="abcdef", question="how long?")
    assert prediction.answer == "6"
    assert type(prediction.rlm_result) is RLMResult and prediction.rlm_result.answer == {"answer": "6"}
    assert len(executions) == 1 and executions[0].config.max_depth == 0


def test_only_the_entry_point_builds_an_engine() -> None:
    import pathlib

    package = pathlib.Path(run_module.__file__).parents[1]
    builders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "Engine(\n" in path.read_text(encoding="utf-8") or "Engine(root_model" in path.read_text(encoding="utf-8")
    )
    assert builders == ["core/run.py"]
