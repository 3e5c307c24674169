"""What `RLMRunnable` takes and gives: its input, its output (the core `RLMResult`) and its progress chunks."""

from __future__ import annotations

from typing import Any, TypeAlias

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
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
from rlm_integrations.core.result import RLMResult
from rlm_integrations.errors import UsageError

__all__ = [
    "BUDGET_FIELDS",
    "FAILURE_STATUSES",
    "LIMIT_STATUSES",
    "RLMInput",
    "RLMOutput",
    "RLMProgress",
    "RunnableInput",
    "input_from",
    "summarize",
    "trace_view",
]

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


RunnableInput: TypeAlias = RLMInput | str | dict[str, Any] | PromptValue | BaseMessage
"""What `RLMRunnable` accepts: a `RLMInput`, a dict of its fields or a ``{"messages": [...]}`` state,
a query string, a prompt value or a message (read by `input_from` / `RLMRunnable.coerce_input`)."""


RLMOutput = RLMResult
"""What an RLM run produced: the core `RLMResult` itself, under the name LangChain code has used.

`RLMRunnable` returns the same result type as `RLM.completion`, the DSPy module's
`rlm_result` and the CLI: `answer`, `status`, `limit`, `error`, `usage`, `iterations`,
`duration`, `trajectory` and `citations`; `str(output)` is the answer and `output.ok`
says whether the run completed. LangChain chat models report no prices, so
`usage.cost_usd` is None unless `RLMConfig.prices` (or the model adapter) gives one.
"""


class RLMProgress(BaseModel):
    """One progress chunk from `RLMRunnable.stream` / `astream`: a core event, summarised.

    `stream` yields these while the run goes, then the `RLMResult`. Adding a chunk to a
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


def input_from(input: Any) -> RLMInput:
    """Read an input: a `RLMInput`, a dict of its fields, a query string, a prompt value or a message.

    Raises:
        UsageError: anything else, or a dict that is not a valid `RLMInput`.
    """
    if isinstance(input, RLMInput):
        return input
    if isinstance(input, str):
        return RLMInput(query=input)
    if isinstance(input, PromptValue):
        return RLMInput(query=input.to_string())
    if isinstance(input, BaseMessage):
        return RLMInput(query=str(input.text))
    if isinstance(input, dict):
        try:
            return RLMInput.model_validate(input)
        except ValueError as error:
            raise UsageError(f"not a valid RLM input: {error}") from error
    raise UsageError(
        f"RLMRunnable takes a dict with 'query' (and optionally 'context'), a RLMInput or a str, "
        f"got {type(input).__name__}"
    )


def trace_view(context: Any, limit: int) -> Any:
    """The context as traced: itself when small, else its type, size and a preview (at most `limit` characters)."""
    if context is None or isinstance(context, int | float | bool):
        return context
    if isinstance(context, str | bytes):
        if len(context) <= limit:
            return context if isinstance(context, str) else context.decode("utf-8", "replace")
        preview = context[: min(limit, 400)]
        preview_text = preview if isinstance(preview, str) else preview.decode("utf-8", "replace")
        return {"type": type(context).__name__, "chars": len(context), "preview": preview_text}
    if isinstance(context, list | tuple | dict):
        head = list(context.items())[:3] if isinstance(context, dict) else list(context[:3])
        preview = repr(head)
        if len(context) <= 3 and len(preview) <= limit:
            return context
        return {"type": type(context).__name__, "items": len(context), "preview": preview[: min(limit, 400)]}
    return repr(context)[: min(limit, 400)]


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
