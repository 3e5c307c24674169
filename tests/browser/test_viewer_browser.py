"""The viewer page in a real browser: Debian's headless Chromium, driven by Playwright.

Needs the `playwright` package (the `[dev]` extra) and `/usr/bin/chromium` (`apt-get install
chromium`; another binary through `RLM_CHROMIUM`). Playwright's own browser downloads
are never used. Without either, the tests skip and say why.

`RLM_UPDATE_SCREENSHOT=1 pytest tests/browser` also rewrites the screenshot the docs show
(`docs/assets/viewer-depth2.png`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_integrations.viewer import write_html
from rlm_integrations.viewer._sample import depth2_result, synthetic_events

CHROMIUM = os.environ.get("RLM_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "assets" / "viewer-depth2.png"
READY_BOUND_MS = float(os.environ.get("RLM_VIEWER_READY_MS", "5000"))
"""The 5,000-step page must be interactive within this many ms after navigation starts (measured in the page)."""

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)

if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):  # pragma: no cover
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium) or set RLM_CHROMIUM",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield instance
        instance.close()


class Watched:
    """A page plus what it did that it should not: network requests, errors, dialogs."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path) -> Page:
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("html[data-ready=true]", timeout=30_000)
        return self.page

    def assert_clean(self) -> None:
        assert self.errors == []
        assert self.dialogs == []
        assert [url for url in self.requests if not url.startswith(("file:", "data:"))] == []


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    yield Watched(context.new_page())
    context.close()


@pytest.fixture(scope="module")
def depth2_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_html(depth2_result(), tmp_path_factory.mktemp("viewer") / "depth2.html")


def test_depth2_tree_expand_search_and_screenshot(watched: Watched, depth2_page: Path, tmp_path: Path) -> None:
    page = watched.open(depth2_page)

    # The summary: status, answer and totals.
    assert page.locator("#sum-runs .v").inner_text() == "5"
    assert page.locator("#sum-answer pre").inner_text() == "Chapter 2"
    assert page.locator("#sum-calls .v").inner_text() == "13"
    assert page.locator("#sum-cost .v").inner_text().startswith("$0.00")
    assert "max depth 2" in page.locator("#sum-runs").inner_text()

    # The root run is open with its three iterations; the two child runs are closed.
    root = page.locator(".node.run.root")
    assert root.get_attribute("aria-expanded") == "true"
    assert root.locator(":scope > .bd > .iters > .node.iter").count() == 3
    children = root.locator(".node.run[data-depth='1']")
    assert children.count() == 2
    assert [children.nth(i).get_attribute("aria-expanded") for i in range(2)] == ["false", "false"]
    assert root.locator(".t-rlm", has_text="rlm_query").count() >= 1  # highlighted code

    # Expand the first child run, then its own child (depth 2), by clicking.
    child = children.nth(0)
    child.locator(":scope > .hd").click()
    assert child.get_attribute("aria-expanded") == "true"
    assert child.locator(":scope > .bd .node.iter").first.is_visible()
    assert "depth 1" in child.locator(":scope > .hd").inner_text()
    grandchild = child.locator(".node.run[data-depth='2']").first
    assert "depth 2" in grandchild.locator(":scope > .hd").inner_text()
    grandchild.locator(":scope > .hd").click()
    assert grandchild.get_attribute("aria-expanded") == "true"
    error = grandchild.locator(".out.err pre").first
    assert error.is_visible() and "count_dragons" in error.inner_text()
    sub_call = child.locator(".node.subcall").first
    assert "llm_query" in sub_call.locator(":scope > .hd").inner_text()

    # Search: every match is counted, the first is opened, outlined and highlighted.
    page.keyboard.press("Escape")
    page.locator("body").press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type("count_dragons")
    page.keyboard.press("Enter")
    count = page.locator("#search-count").inner_text()
    match = re.fullmatch(r"1 of (\d+)", count)
    # In each grandchild: its code, its error, and the error as fed back to the model.
    assert match and int(match.group(1)) == 6, count
    current = page.locator(".hit-current")
    assert current.count() == 1 and current.is_visible()
    assert "count_dragons" in current.inner_text()
    assert page.evaluate("CSS.highlights.get('rlm-hit').size") >= 2
    # Walking the matches opens the second child run, which was never opened by hand.
    second = children.nth(1)
    assert second.get_attribute("aria-expanded") == "false"
    for _ in range(3):
        page.keyboard.press("Enter")
    assert page.locator("#search-count").inner_text() == "4 of 6"
    assert second.get_attribute("aria-expanded") == "true"
    assert second.locator(".hit-current").count() == 1

    # Keyboard: leave the search, collapse everything, walk and open rows.
    page.keyboard.press("Escape")
    assert page.locator("#search-count").inner_text() == ""
    page.keyboard.press("c")
    assert children.nth(0).get_attribute("aria-expanded") == "false"
    page.keyboard.press("g")
    page.keyboard.press("j")
    focused = page.evaluate("document.activeElement.parentElement.dataset.key")
    assert focused.startswith("i\u241f")  # the root's first iteration
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.parentElement.getAttribute('aria-expanded')") == "true"
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.parentElement.getAttribute('aria-expanded')") == "false"
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()

    # The timeline: one row per run, a tooltip on hover, and clicking a bar opens its node.
    canvas = page.locator("#tl-canvas")
    box = canvas.bounding_box()
    assert box and box["width"] > 600 and box["height"] >= 20 + 5 * 18
    page.mouse.move(box["x"] + box["width"] - 20, box["y"] + 20 + 9)
    assert page.locator("#tl-tip").is_visible()
    assert page.locator("#tl-tip").inner_text()
    page.keyboard.press("t")
    assert not page.locator("#timeline").is_visible()
    page.keyboard.press("t")

    # The screenshot the docs show: the root run and the first child open down to depth 2.
    page = watched.open(depth2_page)
    first_child = page.locator(".node.run[data-depth='1']").first
    first_child.locator(":scope > .hd").click()
    first_child.locator(".node.run[data-depth='2'] > .hd").first.click()
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    shot = tmp_path / "viewer-depth2.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("RLM_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    watched.assert_clean()


def test_hostile_text_is_shown_not_run(watched: Watched, tmp_path: Path) -> None:
    result = depth2_result()
    hostile = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'
    events = [
        event.model_copy(update={"query": hostile})
        if event.kind == "run_start"
        else event.model_copy(update={"stdout": hostile + event.stdout})
        if event.kind == "cell_end"
        else event
        for event in result.trajectory.events
    ]
    page = watched.open(write_html(events, tmp_path / "hostile.html"))
    page.keyboard.press("e")  # open every run, so every cell is drawn
    assert page.locator(".out pre", has_text="onerror").count() >= 5
    assert page.locator("img").count() == 0
    assert page.locator("#summary h1").inner_text() == hostile
    watched.assert_clean()


def test_five_thousand_steps_become_interactive_quickly(watched: Watched, tmp_path: Path) -> None:
    path = write_html(synthetic_events(5_000), tmp_path / "big.html")
    page = watched.open(path)
    ready_ms = page.evaluate("window.rlmViewer.readyMs")
    assert ready_ms < READY_BOUND_MS, f"interactive after {ready_ms:.0f} ms (bound {READY_BOUND_MS:.0f} ms)"
    # Lazy: only the first page of iterations exists in the DOM.
    assert page.locator(".node.iter").count() == 100
    assert page.evaluate("window.rlmViewer.nodeCount()") < 300

    # A search over all 5,000 steps, then a jump to the last one (which draws every page before it).
    took = page.evaluate(
        "() => { const t = performance.now(); const n = window.rlmViewer.search('fonud'); "
        "return [n, performance.now() - t]; }"
    )
    assert took[0] == 51 and took[1] < 2_000, took
    took = page.evaluate(
        "() => { const t = performance.now(); window.rlmViewer.search('# turn 5000'); return performance.now() - t; }"
    )
    assert took < 3_000, took
    assert page.locator(".hit-current").is_visible()
    assert "turn 5000" in page.locator(".hit-current").inner_text()

    # Keys still answer at once with 5,000 rows drawn.
    took = page.evaluate(
        "() => { const t = performance.now(); "
        "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'G', bubbles: true})); "
        "return performance.now() - t; }"
    )
    assert took < 1_000, took
    watched.assert_clean()


def test_lazy_pages_load_on_scroll(watched: Watched, tmp_path: Path) -> None:
    page = watched.open(write_html(synthetic_events(1_000, child_every=1_000), tmp_path / "scroll.html"))
    assert page.locator(".node.iter").count() == 100
    page.locator("button.more").scroll_into_view_if_needed()
    page.locator(".node.iter").nth(199).wait_for(state="attached")  # the next page, added by scrolling
    page.locator("button.more").click()
    assert page.locator(".node.iter").count() >= 300
    watched.assert_clean()
