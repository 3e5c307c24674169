"""What one run of the engine carries while it runs, and how it ended."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlm_integrations.core.events import EventBus, SubCallFinished
from rlm_integrations.core.limits import RunMeter
from rlm_integrations.core.policy import Policy
from rlm_integrations.core.question_shape import Shape
from rlm_integrations.core.repl_helpers import HelperNotes
from rlm_integrations.lm.protocol import TokenUsage
from rlm_integrations.repl.protocol import FinalAnswer
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = [
    "PREVIEW_EVENT_CHARS",
    "AnswerCheck",
    "RunOutcome",
    "RunState",
    "SubCallRecord",
    "as_text",
    "jsonable",
    "new_id",
    "status_for",
]

PREVIEW_EVENT_CHARS = 2_000
"""Bound on a prompt or reply as an event records it."""

AnswerCheck = Callable[[FinalAnswer], Any]
"""Checks a submitted answer and returns the value to keep; a ValueError rejects it (the message is the feedback)."""

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A fresh id for a run, call or cell (unique in this process)."""
    return f"{prefix}{next(_ids)}"


@dataclass
class RunOutcome:
    """How one run ended."""

    answer: Any = None
    status: str = "completed"
    limit: str | None = None
    error: str | None = None
    iterations: int = 0
    run_id: str = ""


@dataclass
class RunState:
    """One run's state: its place in the tree, its turn, and its closing reserve (`meter`)."""

    run_id: str
    depth: int
    cell_id: str | None = None
    iteration: int = 0
    answers: list[Any] = field(default_factory=list)
    variables: Mapping[str, Any] | None = None
    policy: Policy | None = None
    check_answer: AnswerCheck | None = None
    query: str = ""
    code_seen: set[str] = field(default_factory=set)
    prelude_done: bool = False
    meter: RunMeter | None = None
    helpers: HelperNotes = field(default_factory=HelperNotes)
    shape: Shape = "lookup"
    """The question's shape (`core.question_shape`): which answers are suspicious when given without code."""
    seen_output: bool = False
    """Whether the model has seen what a typed-in answer could rest on: a cell's output this run, the whole
    context in the first message (or no context at all), or a session's earlier answers."""
    first_step: str | None = None
    """A first cell for the question's shape (`question_shape.first_step`), offered when an answer comes first."""
    example_answer: str | None = None
    """The answer of the worked example the model was shown (`WorkedExample.answer`), None when it saw none."""
    doubted_copy: bool = False
    """Whether an answer that repeats the worked example's was already sent back (once per run)."""
    doubted_unchecked: bool = False
    """Whether a typed-in answer given before any output was seen was already questioned (once per run)."""


@dataclass
class SubCallRecord:
    """A started sub-call (`llm_query` or `rlm_query`): emits its end event once it finishes."""

    bus: EventBus
    run_id: str
    call_id: str
    cell_id: str | None
    function: str
    model: str
    began: float = field(default_factory=time.monotonic)

    def finish(
        self,
        *,
        response: str = "",
        usage: TokenUsage | None = None,
        error: str | None = None,
        child_run_id: str | None = None,
        cached: bool = False,
    ) -> None:
        """Emit the sub-call's end event."""
        self.bus.emit(
            SubCallFinished(
                run_id=self.run_id,
                call_id=self.call_id,
                cell_id=self.cell_id,
                function=self.function,
                model=self.model,
                response=truncate_middle(response, PREVIEW_EVENT_CHARS),
                usage=usage,
                duration=time.monotonic() - self.began,
                error=error,
                child_run_id=child_run_id,
                cached=cached,
            )
        )


def status_for(limit: str) -> str:
    """The result status for the limit that stopped a run."""
    if limit == "max_iterations":
        return "max_iterations"
    if limit == "timeout_s":
        return "timeout"
    return "budget_exhausted"


def as_text(value: Any) -> str:
    """A child's answer as the text its parent's cell receives."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def jsonable(value: Any) -> Any:
    """`value` if it serialises as JSON, else its repr (for events)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
