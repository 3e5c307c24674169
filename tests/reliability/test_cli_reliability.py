"""The `rlm` CLI refuses bad options in one line (exit 2) and never drops or mangles context silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm_integrations.cli import main
from rlm_integrations.cli._context import read_context


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--max-iterations", "-3", "greater than or equal to 1"),
        ("--max-cost", "-1", "greater than 0"),
        ("--timeout", "0", "greater than 0"),
        ("--max-llm-calls", "0", "greater than or equal to 1"),
        ("--cell-timeout", "-2.5", "greater than 0"),
        ("--route", "sometimes", "'rlm', 'direct' or 'auto'"),
    ],
)
def test_a_bad_budget_is_one_line_naming_the_option_and_exit_2(
    option: str, value: str, words: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "-q", "x", option, value, "--model", "scripted-demo"])
    line = _one_error_line(capfd.readouterr().err)
    assert code == 2
    assert option in line and value in line and words in line


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-q", "x", "--max-iterations", "many"],
        ["run", "--max-iterations", "3"],
        ["run", "-q", "x", "--no-such-option"],
    ],
    ids=["not-a-number", "missing-query", "unknown-option"],
)
def test_a_malformed_option_is_one_line_and_exit_2(argv: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    code = main(argv)
    line = _one_error_line(capfd.readouterr().err)
    assert code == 2 and "rlm run --help" in line


def test_run_with_the_scripted_demo_model_answers(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("Some notes. " * 200 + "The secret code is 246810. " + "More notes. " * 200)
    code = main(["run", "-q", "What is the secret code?", "-c", str(text), "--model", "scripted-demo", "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["answer"] == "246810"


def test_run_with_the_scripted_demo_model_over_a_folder_completes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("alpha " * 50)
    (tmp_path / "b.txt").write_text("The secret code is 13579. " + "beta " * 50)
    code = main(["run", "-q", "What is the secret code?", "-c", str(tmp_path), "--model", "scripted-demo", "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["answer"] == "13579"


def test_files_with_the_same_name_in_different_folders_are_kept_apart(tmp_path: Path) -> None:
    for folder, word in (("2023", "old"), ("2024", "new")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_text(f"{word} notes")
    first, second = str(tmp_path / "2023" / "notes.txt"), str(tmp_path / "2024" / "notes.txt")
    context = read_context([first, second])
    assert context == {first: "old notes", second: "new notes"}
    folders = read_context([str(tmp_path / "2023"), str(tmp_path / "2024")])
    assert sorted(folders.values()) == ["new notes", "old notes"]
    assert all(key.endswith("/notes.txt") for key in folders)


def test_binary_files_in_a_folder_are_skipped_with_a_notice(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    notices: list[str] = []
    context = read_context([str(tmp_path)], notice=notices.append)
    assert context == {"readme.txt": "hello"}
    assert len(notices) == 1 and "skipped binary file" in notices[0] and "image.png" in notices[0]


def test_the_notice_reaches_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "readme.txt").write_text("The secret code is 1. ")
    (tmp_path / "data.bin").write_bytes(b"\0\1\2\3")
    main(["run", "-q", "What is the secret code?", "-c", str(tmp_path), "--model", "scripted-demo"])
    assert "skipped binary file" in capfd.readouterr().err


def test_a_binary_file_named_directly_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"\0" * 64)
    code = main(["run", "-q", "x", "-c", str(path), "--model", "scripted-demo"])
    line = _one_error_line(capfd.readouterr().err)
    assert code == 2 and "binary" in line


def test_an_empty_context_is_warned_about(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    main(["run", "-q", "What is the secret code?", "-c", str(empty), "--model", "scripted-demo"])
    assert "warning: the context is empty" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("where", "words"),
    [("missing/run.jsonl", "does not exist"), (".", "is a folder")],
    ids=["no-such-folder", "a-folder"],
)
def test_an_unwritable_trajectory_path_is_one_line_before_anything_runs(
    where: str, words: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / where
    code = main(["run", "-q", "x", "--trajectory", str(target), "--model", "scripted-demo"])
    line = _one_error_line(capfd.readouterr().err)
    assert code == 2 and "--trajectory" in line and words in line


def test_a_demo_size_too_small_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--size", "-5", "--model", "scripted-demo"])
    line = _one_error_line(capfd.readouterr().err)
    assert code == 2 and "--size" in line


def test_the_progress_line_counts_from_the_run_tree() -> None:
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.cli._shared import Progress
    from rlm_integrations.lm import ScriptedLM
    from rlm_integrations.testing import FakeREPL

    progress = Progress()
    root = ScriptedLM(["```repl\nprint(llm_query('hi'))\n```", "```repl\nFINAL(1)\n```"], name="root")
    rlm = RLM(root, ScriptedLM(lambda m: "ok", name="sub"), repl=FakeREPL.from_config, config=RLMConfig())
    rlm.completion("q?", "text", observers=[progress])
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(progress.render())
    line = console.export_text()
    assert "iteration 2" in line and "LM calls 3" in line and "cells 2" in line and "run end" in line
