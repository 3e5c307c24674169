"""Typed events the loop emits, and the observers that listen to them.

Every event is a pydantic model with a `kind` tag; `EventAdapter` reads and writes the
union, so a JSON-lines log of events is also the trajectory's file format. The loop
never calls a framework: integrations (progress display, LangChain callbacks, DSPy
streaming) are observers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rlm_integrations.core.citations import Citation
from rlm_integrations.lm.protocol import TokenUsage

__all__ = [
    "EVENT_TYPES",
    "CellFinished",
    "CellStarted",
    "CitationsFound",
    "ContextInfo",
    "Event",
    "EventAdapter",
    "IterationFinished",
    "IterationStarted",
    "JSONLWriter",
    "LMCallFinished",
    "LMCallStarted",
    "Observer",
    "RunFinished",
    "RunStarted",
    "SubCallFinished",
    "SubCallStarted",
]

logger = logging.getLogger("rlm_integrations")


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    at: float = Field(default_factory=time.time)


class ContextInfo(BaseModel):
    """The context as recorded once per run: never the context itself."""

    model_config = ConfigDict(frozen=True)

    type: str
    chars: int
    items: int | None = None
    sha256: str | None = None
    preview: str = ""


class RunStarted(_Event):
    """A run began: the top-level run, or a child started by `rlm_query`."""

    kind: Literal["run_start"] = "run_start"
    parent_id: str | None = None
    parent_cell_id: str | None = None
    parent_call_id: str | None = None
    """For a child run: the `call_id` of the `rlm_query` sub-call that started it."""
    depth: int = 0
    query: str
    context: ContextInfo | None = None
    model: str
    sub_model: str


class RunFinished(_Event):
    """A run ended, with its status and answer."""

    kind: Literal["run_end"] = "run_end"
    status: str
    limit: str | None = None
    answer: Any = None
    duration: float
    iterations: int
    usage: TokenUsage | None = None


class IterationStarted(_Event):
    """The root model is about to take turn `iteration` (1-based)."""

    kind: Literal["iteration_start"] = "iteration_start"
    iteration: int


class IterationFinished(_Event):
    """Turn `iteration` is done (its reply and cells were handled)."""

    kind: Literal["iteration_end"] = "iteration_end"
    iteration: int
    duration: float
    interrupted: bool = False
    """True when the turn was cut short (a time limit, a cancelled run) rather than finished."""


class LMCallStarted(_Event):
    """A root-model call: `new_messages` holds only what was added since the previous call."""

    kind: Literal["lm_call_start"] = "lm_call_start"
    call_id: str
    iteration: int
    model: str
    purpose: Literal["step", "final_answer"] = "step"
    new_messages: list[dict[str, str]] = Field(default_factory=list)


class LMCallFinished(_Event):
    """A root-model call returned (or failed)."""

    kind: Literal["lm_call_end"] = "lm_call_end"
    call_id: str
    iteration: int
    model: str
    text: str = ""
    usage: TokenUsage | None = None
    duration: float
    error: str | None = None
    interrupted: bool = False
    """True when the call was cut short (a time limit, a cancelled run); `error` says why."""
    cached: bool = False
    """True when the call cache replayed the reply (no model call, nothing spent)."""


class CellStarted(_Event):
    """A code block from the root model's reply is about to run."""

    kind: Literal["cell_start"] = "cell_start"
    cell_id: str
    iteration: int
    code: str


class CellFinished(_Event):
    """A code block ran; output is the cell's bounded stdout."""

    kind: Literal["cell_end"] = "cell_end"
    cell_id: str
    iteration: int
    stdout: str = ""
    value: str | None = None
    error: str | None = None
    error_type: str | None = None
    duration: float
    final: bool = False
    timed_out: bool = False
    restarted: bool = False
    lost_variables: list[str] = Field(default_factory=list)
    interrupted: bool = False
    """True when the cell was cut short (a time limit, a cancelled run); `error` says why."""


class SubCallStarted(_Event):
    """Code in a cell called a sub-model (`llm_query`) or started a child run (`rlm_query`)."""

    kind: Literal["sub_call_start"] = "sub_call_start"
    call_id: str
    cell_id: str | None
    function: str
    model: str
    prompt: str
    prompt_chars: int


class SubCallFinished(_Event):
    """A sub-call returned (or failed); `child_run_id` is set for `rlm_query`."""

    kind: Literal["sub_call_end"] = "sub_call_end"
    call_id: str
    cell_id: str | None
    function: str
    model: str
    response: str = ""
    usage: TokenUsage | None = None
    duration: float
    error: str | None = None
    child_run_id: str | None = None
    interrupted: bool = False
    """True when the sub-call was cut short (a time limit, a cancelled run); `error` says why."""
    cached: bool = False
    """True when the call cache replayed the response (no model call, nothing spent)."""


class CitationsFound(_Event):
    """The verified citations of a top-level run's answer, found after its `run_end` (see `core.citations`).

    Written to the trajectory so that a saved run keeps them: `Trajectory.citations`
    reads them back. A run with no citations (or `RLMConfig(citations=False)`) emits none.
    """

    kind: Literal["citations"] = "citations"
    citations: list[Citation]


Event = Annotated[
    RunStarted
    | RunFinished
    | IterationStarted
    | IterationFinished
    | LMCallStarted
    | LMCallFinished
    | CellStarted
    | CellFinished
    | SubCallStarted
    | SubCallFinished
    | CitationsFound,
    Field(discriminator="kind"),
]
"""The closed union of every event, tagged by `kind`.

Consumers dispatch with ``match event: case RunStarted(): ... case _: assert_never(event)``,
so adding a class here makes the type checker name every consumer that does not handle it.
"""
EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: tuple[type[BaseModel], ...] = get_args(get_args(Event)[0])
"""Every event class, in the union's order: the one table of event kinds (each class's `kind` names it)."""

Observer = Callable[[Event], None]
"""Anything that takes an event; called synchronously, in order, on the loop's thread."""


class EventBus:
    """Delivers events to observers; an observer that raises is logged and skipped, never fatal."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers: list[Observer] = list(observers or [])

    def emit(self, event: Event) -> None:
        """Deliver `event` to every observer, in order."""
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                logger.exception("event observer %r failed on %s", observer, event.kind)


class JSONLWriter:
    """An observer that writes every event as one JSON line (the trajectory file format).

    Args:
        target: a path (opened for writing, truncated) or an open text file.
    """

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, str | Path):
            self._file: IO[str] = open(target, "w", encoding="utf-8")
            self._owned = True
        else:
            self._file = target
            self._owned = False

    def __call__(self, event: Event) -> None:
        """Write `event` as one line and flush."""
        self._file.write(json.dumps(event.model_dump(mode="json"), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file if this writer opened it."""
        if self._owned:
            self._file.close()
