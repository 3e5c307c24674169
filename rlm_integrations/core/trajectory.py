"""The trajectory: every event of a run tree, and the tree of runs built from them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.core.events import Event, EventAdapter, RunFinished, RunStarted

__all__ = ["RunView", "Trajectory"]


class RunView(BaseModel):
    """One run of the tree: its start and end events and the steps between them."""

    model_config = ConfigDict(frozen=True)

    start: RunStarted
    end: RunFinished | None
    steps: list[Event]

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.start.run_id

    @property
    def depth(self) -> int:
        """0 for the top-level run, 1 for its children, and so on."""
        return self.start.depth


class Trajectory(BaseModel):
    """Everything a run tree did, in the order it happened.

    Stored as events, one JSON object per line: size grows linearly with the number of
    steps, and the context appears once per run as its size, hash and preview.
    """

    model_config = ConfigDict(frozen=True)

    events: list[Event] = Field(default_factory=list)

    def runs(self) -> list[RunView]:
        """Every run, in start order."""
        starts: dict[str, RunStarted] = {}
        ends: dict[str, RunFinished] = {}
        steps: dict[str, list[Event]] = {}
        for event in self.events:
            if isinstance(event, RunStarted):
                starts[event.run_id] = event
                steps[event.run_id] = []
            elif isinstance(event, RunFinished):
                ends[event.run_id] = event
            else:
                steps.setdefault(event.run_id, []).append(event)
        return [RunView(start=start, end=ends.get(rid), steps=steps.get(rid, [])) for rid, start in starts.items()]

    @property
    def root(self) -> RunView | None:
        """The top-level run."""
        return next((run for run in self.runs() if run.start.parent_id is None), None)

    def children(self, run_id: str) -> list[RunView]:
        """Runs started by `rlm_query` from run `run_id`."""
        return [run for run in self.runs() if run.start.parent_id == run_id]

    def iter_events(self, kind: str | None = None) -> Iterator[Event]:
        """Events, optionally only those of one `kind`."""
        return (e for e in self.events if kind is None or e.kind == kind)

    def to_jsonl(self) -> str:
        """The JSON-lines text (one event per line)."""
        return "".join(json.dumps(e.model_dump(mode="json"), ensure_ascii=False) + "\n" for e in self.events)

    def save(self, path: str | Path) -> None:
        """Write the trajectory as JSON lines (written to a temporary file, then renamed)."""
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(self.to_jsonl(), encoding="utf-8")
        partial.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by `save` or by `JSONLWriter`."""
        events: list[Any] = []
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if line.strip():
                    try:
                        events.append(EventAdapter.validate_json(line))
                    except ValueError as error:
                        raise ValueError(f"{path}:{number}: not a trajectory event: {error}") from error
        return cls(events=events)
