"""Which run, turn and cell a model call belongs to, readable from inside the call.

The engine sets `current_model_call` around every model call it makes: the root
model's turns and the sub-model calls made by code in a cell (`llm_query`, and
`rlm_query` at `max_depth`). A `LanguageModel` adapter that traces its calls (the
LangChain adapter nests each call under the right iteration or cell run) reads it at
the start of `acomplete`; other models ignore it. The variable is a `ContextVar`, set in
the task that awaits the model call, so concurrent calls (`llm_query_batched`) each
see their own value.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

__all__ = ["ModelCall", "current_model_call"]


@dataclass(frozen=True)
class ModelCall:
    """The place of one model call in the run tree.

    Attributes:
        run_id: the run that makes the call (a child run for calls inside `rlm_query`).
        call_id: the call's id, as in its `LMCallStarted` / `SubCallStarted` event.
        depth: the run's depth (0 for the top-level run).
        iteration: the run's current turn (1-based; 0 before the first turn).
        role: ``"root"`` for the root model's turns, ``"sub"`` for calls made from a cell.
        purpose: ``"step"`` or ``"final_answer"`` for root calls; the REPL function
            (``"llm_query"``, ``"rlm_query"``) for sub-calls.
        cell_id: the cell whose code made a sub-call (None for root calls).
    """

    run_id: str
    call_id: str
    depth: int
    iteration: int
    role: Literal["root", "sub"]
    purpose: str
    cell_id: str | None = None


current_model_call: ContextVar[ModelCall | None] = ContextVar("rlm_current_model_call", default=None)
"""The model call being made in this task, or None outside the engine's model calls."""
