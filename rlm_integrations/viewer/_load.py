"""Read a trajectory file for viewing, forgiving what a live or newer file may contain.

`Trajectory.load` refuses a file with a bad line, which is right for a program reading
its own output. A viewer should rather show what it can: a file still being written
(`rlm run --trajectory` flushes a line per event, and a copy may end mid-line), or a
file from a newer version with event kinds this one does not know. Such lines are
skipped and reported on the page.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from rlm_integrations.core.events import Event, EventAdapter

__all__ = ["read_events"]

_MAX_REPORTED = 20


def read_events(path: str | Path) -> tuple[list[Event], list[str]]:
    """Events of a JSON-lines trajectory file, and a note for each line that was skipped.

    Raises:
        OSError: the file cannot be read.
        ValueError: not one line of the file is a trajectory event.
    """
    events: list[Event] = []
    problems: list[str] = []
    skipped = 0
    raw_lines = Path(path).read_bytes().split(b"\n")
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        problem = None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:  # a character cut in two: show the rest of the line
            line = raw.decode("utf-8", errors="replace")
            if len(problems) < _MAX_REPORTED:
                problems.append(f"line {number}: invalid UTF-8 at byte {error.start}, shown as \ufffd")
        try:
            events.append(EventAdapter.validate_json(line))
        except ValidationError as error:
            problem = _describe(line, error)
        if problem is not None:
            skipped += 1
            if skipped <= _MAX_REPORTED:
                problems.append(f"line {number}: {problem}")
    if skipped > _MAX_REPORTED:
        problems.append(f"... and {skipped - _MAX_REPORTED} more lines skipped")
    if not events and skipped:
        raise ValueError(f"{path}: no line is a trajectory event ({problems[0]})")
    return events, problems


def _describe(line: str, error: ValidationError) -> str:
    try:
        data = json.loads(line)
    except ValueError:
        return "not valid JSON (a partly written last line?), skipped"
    if isinstance(data, dict) and "kind" in data:
        first = error.errors()[0]
        if first.get("type") == "union_tag_invalid":
            return f"unknown event kind {data['kind']!r} (written by a newer version?), skipped"
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"a {data['kind']!r} event that does not validate ({where}: {first.get('msg')}), skipped"
    return "not a trajectory event, skipped"
