"""`RLMResult`: what a run returns, and the hook that shows one as HTML in a notebook.

Core draws no HTML. A notebook shows a result as rich HTML through `_repr_html_`, which
asks a registered renderer: the viewer face registers its own when imported
(`register_html_display`), and a renderer may also be declared as a package entry point
in the ``rlm_integrations.display`` group, named ``text/html``, so it is found without an
import. With neither, a notebook shows the result as plain text.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.core.citations import Citation
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.core.usage import Usage

__all__ = ["HTMLDisplay", "RLMResult", "Status", "register_html_display"]

logger = logging.getLogger("rlm_integrations")

Status = Literal["completed", "max_iterations", "budget_exhausted", "timeout", "error", "cancelled"]


class RLMResult(BaseModel):
    """The outcome of `RLM.completion` / `RLM.acompletion`.

    Attributes:
        answer: the final answer: the Python value passed to `FINAL(...)` (plain data
            arrives exactly; other objects as their repr), or text.
        status: ``"completed"``, or why the run stopped early: ``"max_iterations"``,
            ``"budget_exhausted"`` (see `limit`), ``"timeout"``, ``"error"``, or ``"cancelled"``
            (only on the partial result a `RunCancelled` / `RunInterrupted` carries).
        limit: the config field that ended the run early, e.g. ``"max_llm_calls"``.
        error: what went wrong when `status` is ``"error"``.
        usage: tokens, calls and cost in total and per model, children included.
        iterations: root-model turns taken by the top-level run.
        duration: wall-clock seconds.
        trajectory: every event of the run tree.
        citations: verified spans of the context that support the answer (see `Citation`).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    answer: Any = None
    status: Status
    limit: str | None = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    iterations: int = 0
    duration: float = 0.0
    trajectory: Trajectory = Field(default_factory=Trajectory)
    citations: list[Citation] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if the run completed with an answer."""
        return self.status == "completed"

    def save(self, path: str | Path) -> None:
        """Write the trajectory as JSON lines (see `Trajectory.save`)."""
        self.trajectory.save(path)

    def _repr_html_(self) -> str | None:
        """Notebook display: the registered HTML renderer's view (the viewer's), or None for plain text."""
        display = _html_display()
        return display(self) if display is not None else None

    def __str__(self) -> str:
        return str(self.answer)


HTMLDisplay = Callable[[RLMResult], str]
"""A function that shows a result as an HTML fragment for a notebook."""

DISPLAY_GROUP = "rlm_integrations.display"
"""The entry-point group where a package may declare its `HTMLDisplay` (name: ``text/html``)."""

_display: dict[str, HTMLDisplay | None] = {}


def register_html_display(display: HTMLDisplay | None) -> None:
    """Make `display` the way notebooks show an `RLMResult` (None: back to the entry point, or plain text)."""
    _display.clear()
    if display is not None:
        _display["registered"] = display


def _html_display() -> HTMLDisplay | None:
    if "registered" in _display:
        return _display["registered"]
    if "found" not in _display:
        _display["found"] = _declared_display()
    return _display["found"]


def _declared_display() -> HTMLDisplay | None:
    """The renderer a package declares in the `DISPLAY_GROUP` entry points, if any loads."""
    for entry in importlib.metadata.entry_points(group=DISPLAY_GROUP, name="text/html"):
        try:
            loaded = entry.load()
        except Exception:
            logger.warning("could not load the HTML display %r declared by %s", entry.value, entry.dist)
            continue
        if callable(loaded):
            return loaded  # type: ignore[no-any-return]
    return None
