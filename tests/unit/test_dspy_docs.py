"""The DSPy guide's code examples (docs/guides/dspy.md) run as written, offline, with scripted LMs."""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest

dspy = pytest.importorskip("dspy")

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "guides" / "dspy.md"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)


def examples() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    return [m["code"] for m in BLOCK.finditer(text) if not m["before"].startswith("<!-- not executed")]


def test_the_guide_has_examples_and_skips_only_marked_ones():
    text = GUIDE.read_text(encoding="utf-8")
    assert len(examples()) >= 8
    assert text.count("```python") == len(examples()) + text.count("<!-- not executed")


@pytest.mark.slow  # runs every example of the DSPy guide
def test_guide_examples_run(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("dspy_guide_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        for number, code in enumerate(examples(), 1):
            try:
                exec(compile(code, f"{GUIDE.name}[example {number}]", "exec"), module.__dict__)
            except Exception as error:
                raise AssertionError(f"example {number} failed:\n{code}") from error
    finally:
        dspy.configure(lm=None)
    printed = capsys.readouterr().out
    for expected in [
        "Paris, 2000 times\ncompleted\n",
        "city='Paris' mentions=2000",
        "FINAL was not accepted: - `finding`: expected a dict matching the JSON schema of Finding",
        "max_iterations extracted max_iterations",
        "['WHICH CITY?', 'WHICH WEATHER?', 'HOW MANY LINES?']",
        "100.0",
        "RLM turn 2: outputs submitted.",
        "\n2\n",
        "Delta",
    ]:
        assert expected in printed, expected
    assert (tmp_path / "run.jsonl").exists()
