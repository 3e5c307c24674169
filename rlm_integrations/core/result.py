"""`RLMResult`: what a run returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.core.citations import Citation
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.core.usage import Usage

__all__ = ["RLMResult", "Status"]

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

    def to_html(self, *, title: str | None = None) -> str:
        """The trajectory as one self-contained HTML page (see `rlm_integrations.viewer`)."""
        from rlm_integrations.viewer import render_html

        return render_html(self, title=title)

    def _repr_html_(self) -> str:
        """Notebook display: the viewer in a sandboxed frame."""
        from rlm_integrations.viewer import notebook_html

        return notebook_html(self)

    def __str__(self) -> str:
        return str(self.answer)
