"""Core behaviour the suite stopped reaching after the #14 restructuring (found by comparing coverage).

- a cell's feedback that the token budget cannot hold is cut (middle out) to fit the closing request;
- `OpenSteps` closes the steps a cut-short run left open, innermost first;
- a display entry point that fails to load is skipped with a warning, not raised in a notebook;
- `RLM("prefix/name")` builds its root and sub models through the LM provider registry.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from typing import Any

import pytest

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    Event,
    EventBus,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.core.interrupts import OpenSteps
from rlm_integrations.core.result import register_html_display
from rlm_integrations.lm import Message, ScriptedLM, register_provider
from rlm_integrations.testing import FakeREPL

_CLOSING_MARKER = "Do not write code"  # in the engine's final-answer request after a limit
_PRINTED = 40_400  # characters the cell below prints: 200 H, 40,000 x, 200 T


def _print_a_lot_then_close(messages: list[Message]) -> str:
    if _CLOSING_MARKER in messages[-1]["content"]:
        return "FINAL('closed')"
    return "```repl\nprint('H' * 200 + 'x' * 40_000 + 'T' * 200)\n```"


def _run_printing_a_lot(max_tokens: int | None) -> tuple[RLMResult, ScriptedLM]:
    root = ScriptedLM(_print_a_lot_then_close, name="root")
    config = RLMConfig(
        max_tokens=max_tokens,
        max_iterations=2,
        # nothing but the token budget may shorten the cell's output on its way to the model
        max_output_chars=100_000,
        feedback_chars=100_000,
        history_feedback_chars=100_000,
        cell_timeout_s=20,
    )
    rlm = RLM(root, ScriptedLM(lambda m: "unused", name="sub"), config=config, repl=FakeREPL.from_config)
    result = asyncio.run(asyncio.wait_for(rlm.acompletion("What is it?", "hello world"), timeout=60))
    return result, root


def test_feedback_the_token_budget_cannot_hold_is_cut_to_fit_the_closing_request() -> None:
    result, root = _run_printing_a_lot(max_tokens=6_000)

    assert result.status == "budget_exhausted" and result.limit == "max_tokens"
    assert result.answer == "closed"
    assert result.usage.total_tokens <= 6_000
    closing = root.calls[-1][-1]["content"]
    assert _CLOSING_MARKER in closing
    assert len(closing) < _PRINTED // 2  # cut, not sent whole
    assert "HHHH" in closing and "TTTT" in closing  # the middle is what goes


def test_feedback_is_sent_whole_when_no_token_budget_limits_it() -> None:
    _, root = _run_printing_a_lot(max_tokens=None)

    second_turn = root.calls[1][-1]["content"]
    assert second_turn.count("x") >= 40_000


def _steps(run_id: str) -> list[Event]:
    return [
        IterationStarted(run_id=run_id, iteration=1),
        LMCallStarted(run_id=run_id, call_id="lm-1", iteration=1, model="root"),
        LMCallFinished(run_id=run_id, call_id="lm-1", iteration=1, model="root", duration=0.1),
        CellStarted(run_id=run_id, cell_id="cell-1", iteration=1, code="llm_query('x')"),
        SubCallStarted(
            run_id=run_id,
            call_id="sub-1",
            cell_id="cell-1",
            function="llm_query",
            model="sub",
            prompt="x",
            prompt_chars=1,
        ),
    ]


def test_open_steps_closes_what_a_cut_short_run_left_open_innermost_first() -> None:
    steps = OpenSteps()
    steps(RunStarted(run_id="r", query="q", model="root", sub_model="sub"))  # a run's own start is not a step
    for event in [*_steps("r"), *_steps("other")]:
        steps(event)
    assert steps.open_in("r") == ["iteration:1", "cell:cell-1", "sub:sub-1"]  # the finished model call is gone

    emitted: list[Event] = []
    steps.close(EventBus([emitted.append]), "r", "the run was cancelled")

    assert [type(e) for e in emitted] == [SubCallFinished, CellFinished, IterationFinished]
    assert all(getattr(e, "interrupted", False) for e in emitted)
    assert [getattr(e, "error", None) for e in emitted] == ["the run was cancelled"] * 2 + [None]
    assert steps.open_in("r") == []
    assert steps.open_in("other") == ["iteration:1", "cell:cell-1", "sub:sub-1"]  # another run is untouched
    steps(RunFinished(run_id="other", status="completed", duration=1.0, iterations=1))
    assert len(steps.open_in("other")) == 3  # a run's own end closes nothing


def test_a_display_entry_point_that_fails_to_load_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import rlm_integrations.viewer as viewer

    class Broken:
        value = "no_such_package:show"
        dist = "broken-plugin"

        def load(self) -> Any:
            raise ImportError("no module named no_such_package")

    class Working:
        value = "plugin:show"
        dist = "working-plugin"

        def load(self) -> Any:
            return lambda shown: f"<p>{shown.answer}</p>"

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [Broken(), Working()])
    try:
        register_html_display(None)
        with caplog.at_level(logging.WARNING, logger="rlm_integrations"):
            shown = RLMResult(status="completed", answer=42)._repr_html_()
        assert shown == "<p>42</p>"  # the next declared display is used
        assert "no_such_package:show" in caplog.text and "broken-plugin" in caplog.text
    finally:
        register_html_display(viewer.notebook_html)


def test_model_strings_given_to_rlm_resolve_through_the_provider_registry() -> None:
    built: list[tuple[str, dict[str, Any]]] = []

    def canned(model: str, **options: Any) -> ScriptedLM:
        built.append((model, options))
        return ScriptedLM(["```repl\nFINAL(context.upper())\n```"], name=model)

    register_provider("canned/", canned)  # the suite's conftest restores the registry afterwards

    rlm = RLM("canned/root", "canned/helper", repl=FakeREPL.from_config)

    assert built == [("root", {}), ("helper", {})]
    assert (rlm.model.name, rlm.sub_model.name) == ("root", "helper")
    assert rlm.completion("Shout it.", "hello").answer == "HELLO"
