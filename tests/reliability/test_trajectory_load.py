"""`Trajectory.load` keeps what a crashed writer left, and names real corruption with a typed error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_integrations.core.events import IterationStarted, RunFinished, RunStarted
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.errors import RLMError, TrajectoryError, TruncatedTrajectoryWarning


def _events() -> list[str]:
    events = [
        RunStarted(run_id="r1", depth=0, query="Où est la réponse ? ✓", model="m", sub_model="m"),
        IterationStarted(run_id="r1", iteration=1),
        RunFinished(run_id="r1", status="completed", answer="réponse", duration=0.5, iterations=1),
    ]
    return [json.dumps(e.model_dump(mode="json"), ensure_ascii=False) for e in events]


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "run.jsonl"
    path.write_bytes(data)
    return path


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_rest_kept(tmp_path: Path) -> None:
    lines = _events()
    whole = "\n".join(lines[:2]).encode() + b"\n"
    path = _write(tmp_path, whole + lines[2].encode()[:25])  # the writer died mid-line
    with pytest.warns(TruncatedTrajectoryWarning, match=r"run\.jsonl:3.*2 events before it were kept"):
        trajectory = Trajectory.load(path)
    assert [e.kind for e in trajectory.events] == ["run_start", "iteration_start"]
    assert trajectory.root is not None and trajectory.root.end is None


def test_a_last_line_cut_inside_a_character_is_a_torn_line_too(tmp_path: Path) -> None:
    lines = _events()
    last = lines[2].encode()
    cut = last.index("é".encode()) + 1  # inside the two bytes of "é"
    path = _write(tmp_path, ("\n".join(lines[:2]) + "\n").encode() + last[:cut])
    with pytest.warns(TruncatedTrajectoryWarning, match="incomplete"):
        trajectory = Trajectory.load(path)
    assert len(trajectory.events) == 2


def test_a_cut_character_in_the_middle_is_a_typed_error_naming_the_line(tmp_path: Path) -> None:
    lines = [line.encode() for line in _events()]
    broken = lines[0].replace("é".encode(), "é".encode()[:1], 1)  # a lone lead byte: invalid UTF-8
    path = _write(tmp_path, b"\n".join([broken, lines[1], lines[2]]) + b"\n")
    with pytest.raises(TrajectoryError, match=r"run\.jsonl:1: invalid UTF-8") as caught:
        Trajectory.load(path)
    assert caught.value.line == 1 and caught.value.path == str(path)
    assert isinstance(caught.value, RLMError) and isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, UnicodeDecodeError)


def test_a_broken_line_before_the_last_is_corruption_not_a_torn_write(tmp_path: Path) -> None:
    lines = _events()
    path = _write(tmp_path, (lines[0] + "\n" + lines[1][:10] + "\n" + lines[2] + "\n").encode())
    with pytest.raises(TrajectoryError, match=r"run\.jsonl:2: not valid JSON") as caught:
        Trajectory.load(path)
    assert caught.value.line == 2


def test_the_viewer_shows_a_line_with_a_cut_character_and_says_so(tmp_path: Path) -> None:
    from rlm_integrations.viewer import read_events

    lines = [line.encode() for line in _events()]
    broken = lines[0].replace("é".encode(), "é".encode()[:1], 1)
    path = _write(tmp_path, b"\n".join([broken, lines[1], lines[2][:20]]))
    events, problems = read_events(path)
    assert [e.kind for e in events] == ["run_start", "iteration_start"]
    assert problems[0].startswith("line 1: invalid UTF-8")
    assert problems[1].startswith("line 3: not valid JSON")
