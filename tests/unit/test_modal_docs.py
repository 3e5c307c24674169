"""The examples of docs/guides/modal.md: the offline ones run as written, the Modal ones at least compile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "modal.md"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)
SKIP_MARK = "<!-- not executed"


def blocks() -> list[tuple[bool, str]]:
    text = "\n" + PAGE.read_text(encoding="utf-8")
    return [(not m["before"].startswith(SKIP_MARK), m["code"]) for m in BLOCK.finditer(text)]


def test_the_page_says_what_ran_against_real_modal() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert "What was and was not run against real Modal" in text
    assert "not run" in text and "test_modal_real.py" in text


def test_offline_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runnable = [code for run, code in blocks() if run]
    assert len(runnable) >= 2
    namespace: dict[str, object] = {"__name__": "docs_example_modal"}
    for number, code in enumerate(runnable, 1):
        exec(compile(code, f"guides/modal.md runnable example {number}", "exec"), namespace)


def test_modal_examples_compile() -> None:
    marked = [code for run, code in blocks() if not run]
    assert marked, "the page shows real-Modal usage"
    for number, code in enumerate(marked, 1):
        compile(code, f"guides/modal.md example {number} (needs Modal)", "exec")
