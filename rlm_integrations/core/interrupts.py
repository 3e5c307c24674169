"""Close the steps a cut-short run leaves open, so every start event in a trajectory has its end.

A time limit or a cancellation interrupts a turn, a model call, a cell or a sub-call in
the middle: the code that would emit its end event never runs. `OpenSteps` watches the
event stream, remembers every start without its end, and on request emits the missing
ends (innermost first), marked `interrupted=True` with the reason as `error`.
"""

from __future__ import annotations

import time
from typing import assert_never

from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    CitationsFound,
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

__all__ = ["OpenSteps"]

_Start = IterationStarted | LMCallStarted | CellStarted | SubCallStarted


class OpenSteps:
    """An observer that tracks open steps per run and can close them."""

    def __init__(self) -> None:
        self._open: dict[str, dict[str, _Start]] = {}

    def __call__(self, event: Event) -> None:
        """Note a start, or forget the start an end matches."""
        key = _key(event)
        if key is None:
            return
        if isinstance(event, IterationStarted | LMCallStarted | CellStarted | SubCallStarted):
            self._open.setdefault(event.run_id, {})[key] = event
        else:
            self._open.get(event.run_id, {}).pop(key, None)

    def open_in(self, run_id: str) -> list[str]:
        """Keys of the steps of `run_id` still open (for tests and debugging)."""
        return list(self._open.get(run_id, {}))

    def close(self, bus: EventBus, run_id: str, reason: str) -> None:
        """Emit an interrupted end for every open step of `run_id`, innermost first."""
        opened = self._open.pop(run_id, {})
        now = time.time()
        for start in reversed(list(opened.values())):
            bus.emit(_end_for(start, reason, max(now - start.at, 0.0)))


def _key(event: Event) -> str | None:
    """The step a start or end event belongs to; None for a run's own start and end."""
    match event:
        case IterationStarted() | IterationFinished():
            return f"iteration:{event.iteration}"
        case LMCallStarted() | LMCallFinished():
            return f"lm:{event.call_id}"
        case CellStarted() | CellFinished():
            return f"cell:{event.cell_id}"
        case SubCallStarted() | SubCallFinished():
            return f"sub:{event.call_id}"
        case RunStarted() | RunFinished() | CitationsFound():
            return None
        case _:
            assert_never(event)


def _end_for(start: _Start, reason: str, duration: float) -> Event:
    match start:
        case IterationStarted():
            return IterationFinished(
                run_id=start.run_id, iteration=start.iteration, duration=duration, interrupted=True
            )
        case LMCallStarted():
            return LMCallFinished(
                run_id=start.run_id,
                call_id=start.call_id,
                iteration=start.iteration,
                model=start.model,
                duration=duration,
                error=reason,
                interrupted=True,
            )
        case CellStarted():
            return CellFinished(
                run_id=start.run_id,
                cell_id=start.cell_id,
                iteration=start.iteration,
                duration=duration,
                error=reason,
                interrupted=True,
            )
        case SubCallStarted():
            return SubCallFinished(
                run_id=start.run_id,
                call_id=start.call_id,
                cell_id=start.cell_id,
                function=start.function,
                model=start.model,
                duration=duration,
                error=reason,
                interrupted=True,
            )
        case _:
            assert_never(start)
