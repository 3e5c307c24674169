"""Every Python example in the docs and the README runs, offline, as written.

The ```python blocks of a page run in order in one namespace (later blocks use names from
earlier ones), in a scratch directory. Two kinds of block are treated differently:

- Code shown with the error the sandbox answers, every line ending in a comment that
  starts with the error's name (`math.pi = 3   # TypeError: ...`), is cell code: each
  line runs as a cell in a `LocalREPL` and must fail with that error.
- A block that cannot run offline (it needs a provider key or a cloud account) is marked
  on the line just before its fence with `<!-- not executed: why -->`.

README.md is run the same way; its first code block must stay the two commands a new
user types first (`make demo`, `make test`), each a real Makefile target.

A page whose examples a dedicated test runs (it names the page's file, as
`test_langchain_docs.py` names `langchain.md`) is left to that test. Every page with
examples must be run by one or the other.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)
SKIP_MARK = "<!-- not executed"
FENCE = re.compile(r"^```python$", re.MULTILINE)
EXPECTED_ERROR = re.compile(r"\s#\s*(?P<error>[A-Z]\w*Error)\b[^\n]*$")
OWNER_GAPS: dict[tuple[str, int], str] = {}
"""Blocks (page relative to the repository root, example number) that cannot run as written yet, and why."""


def pages_with_examples() -> list[Path]:
    pages = [README, *sorted(DOCS.rglob("*.md"))]
    return [path for path in pages if FENCE.search(path.read_text(encoding="utf-8"))]


def label(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def covering_test(page: Path) -> Path | None:
    for test in (ROOT / "tests").rglob("test_*.py"):
        if test.name != Path(__file__).name and f'{page.name}"' in test.read_text(encoding="utf-8"):
            return test
    return None


def examples(page: Path) -> list[str]:
    text = "\n" + page.read_text(encoding="utf-8")
    return [m["code"] for m in BLOCK.finditer(text) if not m["before"].startswith(SKIP_MARK)]


PAGES = [page for page in pages_with_examples() if covering_test(page) is None]


def test_every_page_with_examples_is_run_somewhere():
    assert pages_with_examples(), "no docs examples found"
    for page in pages_with_examples():
        text = "\n" + page.read_text(encoding="utf-8")
        marked = text.count("\n" + SKIP_MARK)
        assert len(FENCE.findall(text)) == len(examples(page)) + marked, f"{page}: a skip mark not right above a block"
        assert examples(page) or marked, page
    assert {label(p) for p in PAGES} >= {"README.md", "docs/index.md", "docs/guides/core.md", "docs/guides/viewer.md"}


def test_readme_starts_with_make_demo_and_make_test() -> None:
    text = README.read_text(encoding="utf-8")
    first = re.search(r"```(?P<lang>\w*)\n(?P<code>.*?)\n```", text, re.DOTALL)
    assert first is not None and first["lang"] == "bash", "README's first code block is not the bash quick start"
    commands = [line.split("#")[0].strip() for line in first["code"].splitlines() if line.split("#")[0].strip()]
    assert commands[:2] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"the Makefile has no {target!r} target"


@pytest.mark.parametrize("page", PAGES, ids=[label(p) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "RLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    # A real module, so that classes defined in an example resolve their type hints.
    module = types.ModuleType(f"docs_example_{page.stem.replace('-', '_').lower()}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    gaps = []
    for number, code in enumerate(examples(page), 1):
        where = f"{label(page)} example {number}"
        gap = OWNER_GAPS.get((label(page), number))
        if gap is not None:
            gaps.append(f"{where}: {gap}")
            continue
        if is_cell_code(code):
            run_in_sandbox(code, where)
            continue
        try:
            exec(compile(code, where, "exec"), module.__dict__)
        except Exception as error:
            raise AssertionError(f"{where} failed:\n{code}") from error
    if gaps:
        pytest.skip("; ".join(gaps))


def is_cell_code(code: str) -> bool:
    lines = [line for line in code.splitlines() if line.strip()]
    return bool(lines) and all(EXPECTED_ERROR.search(line) for line in lines)


def run_in_sandbox(code: str, where: str) -> None:
    from rlm_integrations.repl import LocalREPL

    repl = LocalREPL(cell_timeout_s=20)
    repl.start_sync()
    try:
        for line in filter(str.strip, code.splitlines()):
            expected = EXPECTED_ERROR.search(line)["error"]  # type: ignore[index]
            cell = repl.execute_sync(line)
            assert cell.error_type == expected, f"{where}: {line!r} gave {cell.error_type}, not {expected}"
    finally:
        repl.close_sync()
