"""The trajectory: every event of a run tree, and the tree of runs built from them."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.core.citations import Citation
from rlm_integrations.core.events import CitationsFound, Event, EventAdapter, RunFinished, RunStarted
from rlm_integrations.core.run_tree import RunTree
from rlm_integrations.errors import TrajectoryError, TruncatedTrajectoryWarning

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

    def run_tree(self) -> RunTree:
        """The tree of runs, turns, calls and cells, with usage rolled up (see `RunTree`)."""
        return RunTree.from_events(self.events)

    def children(self, run_id: str) -> list[RunView]:
        """Runs started by `rlm_query` from run `run_id`."""
        return [run for run in self.runs() if run.start.parent_id == run_id]

    @property
    def citations(self) -> list[Citation]:
        """The top-level run's verified citations, as recorded (the last `citations` event; none if absent)."""
        found: list[Citation] = []
        for event in self.events:
            if isinstance(event, CitationsFound):
                found = list(event.citations)
        return found

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
        """Read a trajectory written by `save` or by `JSONLWriter`.

        A torn last line, the normal state of a file whose writer crashed mid-line, is
        skipped with a `TruncatedTrajectoryWarning`; the events before it are kept.

        Raises:
            OSError: the file cannot be read.
            TrajectoryError: a line before the last is not a complete event (bad UTF-8 or
                not JSON), or any line is JSON but not an event (e.g. an unknown kind);
                the message names the line.
        """
        events: list[Any] = []
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
        last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
        for index, raw in enumerate(lines[: last + 1]):
            if not raw.strip():
                continue
            try:
                events.append(_parse_line(raw))
            except _BadLine as error:
                number = index + 1
                if index == last and error.torn:
                    warnings.warn(
                        f"{path}:{number}: the last line is incomplete ({error}); it was skipped and the "
                        f"{len(events)} events before it were kept",
                        TruncatedTrajectoryWarning,
                        stacklevel=2,
                    )
                    break
                why = (
                    "A newer version may have written it, or the file was edited."
                    if not error.torn
                    else "The file is corrupt before its last line (only a torn last line is skipped)."
                )
                raise TrajectoryError(
                    f"{path}:{number}: {error}. {why}",
                    path=str(path),
                    line=number,
                ) from error.__cause__
        return cls(events=events)


class _BadLine(Exception):
    """A line that is not a trajectory event (the message says why); `torn` if it is cut short."""

    def __init__(self, message: str, *, torn: bool) -> None:
        super().__init__(message)
        self.torn = torn


def _parse_line(raw: bytes) -> Event:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _BadLine(f"invalid UTF-8 at byte {error.start} (a character cut in two?)", torn=True) from error
    try:
        return EventAdapter.validate_json(text)
    except ValueError as error:
        try:
            json.loads(text)
        except ValueError:
            raise _BadLine("not valid JSON (cut short?)", torn=True) from error
        reason = " ".join(str(error).splitlines()[:3])
        raise _BadLine(f"not a trajectory event ({reason})", torn=False) from error
