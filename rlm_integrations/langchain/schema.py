"""What `RLMRunnable` takes and gives: its input, its output and its progress chunks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    Event,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.core.result import RLMResult, Status
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.core.usage import Usage

__all__ = ["BUDGET_FIELDS", "FAILURE_STATUSES", "LIMIT_STATUSES", "RLMInput", "RLMOutput", "RLMProgress"]

BUDGET_FIELDS = ("max_iterations", "max_depth", "max_llm_calls", "max_tokens", "max_cost_usd", "timeout_s")
"""The `RLMConfig` fields that `RLMRunnable` exposes as its own (configurable) fields and per-call overrides."""

LIMIT_STATUSES = frozenset({"max_iterations", "budget_exhausted", "timeout"})
"""Result statuses that mean a limit ended the run early."""

FAILURE_STATUSES = frozenset({"error", "cancelled"})
"""Result statuses that mean the run failed (raised as `RunFailedError` by default)."""


class RLMInput(BaseModel):
    """One request to an RLM.

    A plain string is accepted too and taken as `query` (no context); a dict is
    validated into this model.
    """

    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="The question the RLM should answer.")
    context: Any = Field(
        default=None,
        description="The data to work on: a str, bytes, or JSON-compatible lists and dicts. "
        "It is loaded into the REPL as `context`; the model never sees it whole.",
    )
    max_iterations: int | None = Field(default=None, ge=1, description="Root-model turns for this call.")
    max_depth: int | None = Field(default=None, ge=0, description="How deep `rlm_query` may recurse for this call.")
    max_llm_calls: int | None = Field(default=None, ge=1, description="Model calls for this call's whole tree.")
    max_tokens: int | None = Field(default=None, ge=1, description="Tokens for this call's whole tree.")
    max_cost_usd: float | None = Field(default=None, gt=0, description="Spend in USD for this call's whole tree.")
    timeout_s: float | None = Field(default=None, gt=0, description="Wall-clock limit for this call.")

    def overrides(self) -> dict[str, Any]:
        """The per-call budget overrides that were given (None means: use the runnable's)."""
        return {name: getattr(self, name) for name in BUDGET_FIELDS if getattr(self, name) is not None}


class RLMOutput(BaseModel):
    """What an RLM run produced.

    Attributes:
        answer: the final answer: the value passed to `FINAL(...)` or text.
        status: ``"completed"`` or why the run stopped early (see `RLMResult.status`).
        limit: the config field that ended the run early, if any.
        error: what went wrong when `status` is ``"error"``.
        usage: tokens and calls in total and per model, summed from the chat models'
            `usage_metadata` (children included). LangChain reports no prices, so
            `usage.cost_usd` is None unless the model adapter supplies one.
        iterations: root-model turns taken by the top-level run.
        duration: wall-clock seconds.
        trajectory: every event of the run tree.
    """

    model_config = ConfigDict(frozen=True)

    answer: Any = None
    status: Status
    limit: str | None = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    iterations: int = 0
    duration: float = 0.0
    trajectory: Trajectory = Field(default_factory=Trajectory)

    @property
    def ok(self) -> bool:
        """True if the run completed with an answer."""
        return self.status == "completed"

    @classmethod
    def from_result(cls, result: RLMResult) -> RLMOutput:
        """The output for a core `RLMResult`."""
        return cls(
            answer=result.answer,
            status=result.status,
            limit=result.limit,
            error=result.error,
            usage=result.usage,
            iterations=result.iterations,
            duration=result.duration,
            trajectory=result.trajectory,
        )

    def __str__(self) -> str:
        return str(self.answer)


class RLMProgress(BaseModel):
    """One progress chunk from `RLMRunnable.stream` / `astream`: a core event, summarised.

    `stream` yields these while the run goes, then the `RLMOutput`. Adding a chunk to a
    later one gives the later one (`progress + output == output`), so LangChain's
    chunk accumulation ends on the output.

    Attributes:
        kind: the event kind (``"iteration_start"``, ``"cell_end"``, ``"sub_call_start"``, ...).
        run_id: the core run the event belongs to (child runs have their own).
        depth: that run's depth (0 for the top-level run).
        iteration: the run's turn, where the event has one.
        message: a one-line human summary.
        event: the core event itself.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    run_id: str
    depth: int = 0
    iteration: int | None = None
    message: str = ""
    event: Event

    def __add__(self, other: Any) -> Any:
        return other

    @classmethod
    def from_event(cls, event: Event, depth: int) -> RLMProgress:
        """The chunk for one core event of a run at `depth`."""
        return cls(
            kind=event.kind,
            run_id=event.run_id,
            depth=depth,
            iteration=getattr(event, "iteration", None),
            message=summarize(event),
            event=event,
        )


def summarize(event: Event) -> str:
    """A one-line description of a core event."""
    match event:
        case RunStarted():
            return f"run started at depth {event.depth}: {_line(event.query)}"
        case RunFinished():
            return f"run ended: {event.status} after {event.iterations} turn(s)"
        case IterationStarted():
            return f"turn {event.iteration} started"
        case IterationFinished():
            return f"turn {event.iteration} ended ({event.duration:.2f} s)"
        case LMCallStarted():
            return f"root model {event.model} called"
        case LMCallFinished():
            return (
                f"root model failed: {_line(event.error)}"
                if event.error
                else f"root model replied ({len(event.text)} characters)"
            )
        case CellStarted():
            return f"cell: {_line(event.code)}"
        case CellFinished():
            if event.error:
                return f"cell failed: {_line(event.error)}"
            return f"cell ran ({event.duration:.2f} s): {_line(event.stdout) or '(no output)'}"
        case SubCallStarted():
            return f"{event.function}: {_line(event.prompt)}"
        case SubCallFinished():
            if event.error:
                return f"{event.function} failed: {_line(event.error)}"
            return f"{event.function} returned {len(event.response)} characters"
    return str(event.kind)


def _line(text: str, limit: int = 80) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
