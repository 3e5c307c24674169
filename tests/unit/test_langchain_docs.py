"""The LangChain guide's code examples run as written (offline, with the scripted chat model)."""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "guides" / "langchain.md"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)


def examples() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    return [m["code"] for m in BLOCK.finditer(text) if not m["before"].startswith("<!-- not executed")]


def test_the_guide_has_examples_and_skips_only_marked_ones():
    text = GUIDE.read_text(encoding="utf-8")
    assert len(examples()) >= 10
    assert text.count("```python") == len(examples()) + text.count("<!-- not executed")


def test_guide_examples_run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    # A real module, so that type hints of classes defined in the examples resolve (LangGraph reads them).
    module = types.ModuleType("langchain_guide_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, code in enumerate(examples(), 1):
        try:
            exec(compile(code, f"{GUIDE.name}[example {number}]", "exec"), module.__dict__)
        except Exception as error:
            raise AssertionError(f"example {number} failed:\n{code}") from error
    printed = capsys.readouterr().out
    assert "answer: 2" in printed
    assert "running: labels = llm_query_batched" in printed
