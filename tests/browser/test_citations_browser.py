"""The viewer's Citations panel in a real browser (Debian's headless Chromium, driven by Playwright).

Skips, saying why, without the `playwright` package or `/usr/bin/chromium` (or `RLM_CHROMIUM`).
`RLM_UPDATE_SCREENSHOT=1 pytest tests/browser` also rewrites `docs/assets/viewer-citations.png`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.viewer import write_html

CHROMIUM = os.environ.get("RLM_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "assets" / "viewer-citations.png"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)

if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):  # pragma: no cover
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium) or set RLM_CHROMIUM",
        allow_module_level=True,
    )

FENCE = "`" * 3
FILLER = (
    "Quarterly operations continued as planned across all regional offices. "
    "Staffing levels were stable and no major incidents were reported. "
) * 3_000
REPORT = (
    FILLER + "Incident 2291: on 14 March the cooling pump at the Tromso data hall failed and was replaced "
    "within 6 hours by the on-site team. " + FILLER + "Incident 2307: on 2 May a power feed at the Tromso "
    "data hall tripped; service moved to the backup feed in 40 seconds. " + FILLER
)
QUESTION = "Which equipment failed at the Tromso data hall in March, and how fast was it fixed?"
ANSWER = "The cooling pump at the Tromso data hall failed on 14 March (incident 2291); it was replaced within 6 hours."


def cited_run() -> RLMResult:
    look = (
        "hits = [m.start() for m in re.finditer(r'Incident \\d+', context)]\nprint(len(context), hits)\n"
        "for h in hits:\n    print(context[h:h + 150])"
    )
    answer = f"i = context.find('cooling pump')\ncite(context[i - 40:i + 60])\nFINAL({ANSWER!r})"
    script = [
        f"I will find every incident and print a window around each.\n{FENCE}repl\n{look}\n{FENCE}",
        f"The cooling incident is 2291; I cite the sentence and answer.\n{FENCE}repl\n{answer}\n{FENCE}",
    ]
    rlm = RLM(ScriptedLM(script, name="scripted-root"), config=RLMConfig(cell_timeout_s=20))
    return rlm.completion(QUESTION, REPORT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"],
        )
        yield instance
        instance.close()


def test_the_citations_panel_lists_each_verified_quote(browser: Any, tmp_path: Path) -> None:
    result = cited_run()
    assert result.citations and all(REPORT[c.start : c.end] == c.text for c in result.citations)
    assert not any("2307" in c.text for c in result.citations)  # the May incident only shares a place name
    path = write_html(result, tmp_path / "citations.html")
    context = browser.new_context(viewport={"width": 1100, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_selector("html[data-ready=true]", timeout=30_000)
    panel = page.locator("#sum-citations")
    assert panel.is_visible()
    assert panel.locator("li").count() == len(result.citations)
    assert panel.locator("mark.quote").all_inner_texts() == [c.text for c in result.citations]
    first = result.citations[0]
    assert f"chars {first.start:,}\u2013{first.end:,}" in panel.locator("li").first.inner_text()
    shot = tmp_path / "viewer-citations.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    if os.environ.get("RLM_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)
    context.close()
    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
