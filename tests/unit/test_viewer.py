"""The trajectory viewer without a browser: the data it draws, the page it writes, `rlm view`."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import subprocess
import sys
import time
from importlib import resources
from typing import Any, cast

import pytest

from rlm_integrations.cli import main
from rlm_integrations.core.events import EventAdapter
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.viewer import build_view, notebook_html, read_events, render_html, to_html, write_html
from rlm_integrations.viewer._render import embed_json
from rlm_integrations.viewer._sample import QUESTION, depth2_result, synthetic_events


def _search(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    """`re.search` for a match the test relies on (None fails the test at `.group`, as before)."""
    return cast(re.Match[str], re.search(pattern, text, flags))


@pytest.fixture(scope="module")
def result():
    return depth2_result()


@pytest.fixture(scope="module")
def view(result):
    return build_view(result.trajectory.events)


def embedded_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script id="rlm-data" type="application/json">(.*?)</script>', page, re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


# -- the data the page draws -----------------------------------------------------------------------


def test_the_run_tree_has_every_run_with_its_parent(view):
    runs = {run["id"]: run for run in view["runs"]}
    assert len(runs) == 5
    root = next(run for run in runs.values() if run["parent"] is None)
    assert root["query"] == QUESTION and root["depth"] == 0
    children = [runs[i] for i in root["children"]]
    assert [child["depth"] for child in children] == [1, 1]
    grandchildren = [runs[i] for child in children for i in child["children"]]
    assert [g["depth"] for g in grandchildren] == [2, 2]
    for child in children + grandchildren:
        parent = runs[child["parent"]]
        cell_ids = {cell["id"] for it in parent["iterations"] for cell in it["cells"]}
        assert child["parentCell"] in cell_ids
        call = next(sub for it in parent["iterations"] for cell in it["cells"] for sub in cell["subs"] if sub["child"])
        assert call["fn"] == "rlm_query"
        assert child["parentCall"] is not None
    assert view["summary"]["maxDepth"] == 2


def test_totals_match_the_result_usage(result, view):
    summary = view["summary"]
    usage = summary["usage"]
    total = result.usage.total
    assert (usage["p"], usage["c"], usage["calls"]) == (total.prompt_tokens, total.completion_tokens, total.calls)
    assert usage["cost"] == pytest.approx(total.cost_usd)
    assert usage["unknown"] == 0
    for name, per_model in result.usage.by_model.items():
        assert summary["models"][name]["calls"] == per_model.calls
        assert summary["models"][name]["p"] == per_model.prompt_tokens
    root = next(run for run in view["runs"] if run["parent"] is None)
    assert root["total"] == usage  # the root's subtree is the whole tree
    assert summary["status"] == "completed" and summary["answer"] == "Chapter 2"


def test_each_node_adds_up(view):
    runs = {run["id"]: run for run in view["runs"]}
    for run in runs.values():
        own = sum(it["own"]["calls"] for it in run["iterations"])
        total = sum(it["total"]["calls"] for it in run["iterations"])
        assert run["own"]["calls"] == own
        assert run["total"]["calls"] == total == own + sum(runs[c]["total"]["calls"] for c in run["children"])
        for it in run["iterations"]:
            direct = sum(call["usage"]["calls"] for call in it["calls"] if call["usage"])
            subs = sum(s["usage"]["calls"] for cell in it["cells"] for s in cell["subs"] if s["usage"])
            assert it["own"]["calls"] == direct + subs


def test_cells_keep_code_output_errors_and_timings(view):
    cells = [cell for run in view["runs"] for it in run["iterations"] for cell in it["cells"]]
    failed = [cell for cell in cells if cell["error"]]
    assert len(failed) == 2  # each grandchild calls a function that does not exist
    assert all(cell["errorType"] == "NameError" and "count_dragons" in cell["error"] for cell in failed)
    assert any("re.findall" in cell["code"] for cell in cells)
    assert any(cell["stdout"] == "231 3\n" for cell in cells)
    assert all(cell["duration"] is not None and cell["wall"] >= 0 and cell["t1"] >= cell["t0"] for cell in cells)
    finals = [cell for cell in cells if cell["final"]]
    assert len(finals) == 5  # every run ends with FINAL
    subs = [s for cell in cells for s in cell["subs"] if s["fn"] == "llm_query"]
    assert len(subs) == 2 and all(s["response"] == "Yes, it mentions a dragon." and s["usage"] for s in subs)


def test_repeated_messages_are_stored_once(result, view):
    firsts = [run["iterations"][0]["calls"][0]["messages"][0] for run in view["runs"]]
    assert firsts == [{"role": "system", "prompt": 0}] * 5  # one system prompt for every run
    sent = [m["content"] for e in result.trajectory.iter_events("lm_call_start") for m in e.new_messages]
    assert sorted(view["prompts"]) == sorted(set(sent))


def test_time_is_accounted(view):
    time_ = view["summary"]["time"]
    assert time_["wall"] > 0 and time_["repl"] > 0 and time_["root"] >= 0
    for run in view["runs"]:
        assert run["t1"] >= run["t0"] >= 0


def test_unknown_prices_are_counted_not_guessed():
    result = depth2_result(cost_per_call=None)
    usage = build_view(result.trajectory.events)["summary"]["usage"]
    assert usage["unknown"] == 11  # the root model's calls; the sub-model's two are priced
    assert usage["cost"] == pytest.approx(0.00006)


def test_an_unfinished_trajectory_still_draws(result):
    events = result.trajectory.events
    cut = events[: len(events) // 2]
    view = build_view(cut)
    assert view["summary"]["status"] == "unfinished"
    assert any(not run["finished"] for run in view["runs"])
    assert "data-ready" in render_html(cut)


def test_orphan_events_are_reported_not_fatal(result):
    events = [e for e in result.trajectory.events if e.kind != "run_start" or e.depth == 0]
    view = build_view(events)
    assert any("without its run_start" in problem for problem in view["problems"])


def test_empty_trajectory():
    view = build_view([])
    assert view["runs"] == [] and view["summary"]["status"] == "empty"
    assert "<html" in render_html([])


# -- the page ----------------------------------------------------------------------------------------


def test_page_is_self_contained(result):
    page = to_html(result)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count("<script") == 2  # the data block and the viewer
    data = embedded_data(page)
    assert data["summary"]["runs"] == 5


def test_csp_allows_exactly_the_inline_script_and_style(result):
    page = to_html(result)
    csp = _search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "connect-src" not in csp
    script = _search(r"<script>(.*)</script>", page, re.S).group(1)
    style = _search(r"<style>(.*)</style>", page, re.S).group(1)
    for text in (script, style):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp


def _css_variables(style: str) -> list[dict[str, str]]:
    """The custom properties of each `:root` block (the light scheme, then the dark one)."""
    blocks = re.findall(r":root\s*\{([^}]*)\}", style)
    return [dict(re.findall(r"(--[\w-]+):\s*([^;]+);", block)) for block in blocks]


def test_a_cancelled_run_has_its_own_badge(result):
    events = [
        e.model_copy(update={"status": "cancelled", "answer": None})
        if e.kind == "run_end" and e.run_id == result.trajectory.events[0].run_id
        else e
        for e in result.trajectory.events
    ]
    page = render_html(events)
    assert embedded_data(page)["summary"]["status"] == "cancelled"
    style = _search(r"<style>(.*)</style>", page, re.S).group(1)
    script = _search(r"<script>(.*)</script>", page, re.S).group(1)
    rule = re.search(r"\.status\.cancelled\s*\{([^}]*)\}", style)
    assert rule is not None and "color: var(--cancel)" in rule.group(1)
    for scheme in _css_variables(style):  # a colour of its own in both schemes
        others = {scheme[name] for name in ("--ok", "--warn", "--bad", "--muted", "--fg")}
        assert scheme["--cancel"] not in others
    assert '"cancelled" ? " cancel"' in script and ".answer.cancel" in style


def test_cached_calls_are_marked(tmp_path):
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm import ScriptedLM

    code = "```repl\na = llm_query('alpha')\nprint(a)\n```"
    root = ScriptedLM([code, "```repl\nFINAL(a)\n```"], name="root")
    sub = ScriptedLM(lambda messages: "sub:" + messages[-1]["content"], name="sub")
    rlm = RLM(root, sub, config=RLMConfig(cache="memory", cell_timeout_s=20))
    first, second = rlm.completion("What is it?", "ctx"), rlm.completion("What is it?", "ctx")
    assert first.answer == second.answer == "sub:alpha" and len(sub.calls) == 1
    for run_result, hit in ((first, False), (second, True)):
        page = to_html(run_result)
        (run,) = embedded_data(page)["runs"]
        calls = [call for it in run["iterations"] for call in it["calls"]]
        subs = [sub for it in run["iterations"] for cell in it["cells"] for sub in cell["subs"]]
        assert len(calls) == 2 and len(subs) == 1
        assert [c["cached"] for c in calls + subs] == [hit] * 3
        totals = embedded_data(page)["summary"]["usage"]  # a replayed call is marked, not counted
        assert totals["calls"] == run_result.usage.total.calls == (0 if hit else 3)
    style = _search(r"<style>(.*)</style>", page, re.S).group(1)
    script = _search(r"<script>(.*)</script>", page, re.S).group(1)
    assert re.search(r"\.tag\.cached\s*\{[^}]*var\(--cached\)", style)
    assert all("--cached" in scheme for scheme in _css_variables(style))
    assert script.count("cachedTag()") == 3  # defined once, used on model calls and on sub-calls
    assert "call.cached ? cachedTag()" in script and "sub.cached ? cachedTag()" in script


def test_hostile_text_cannot_leave_the_data_block(result):
    nasty = "</script><script>alert(1)</script><!-- __DATA__ __SCRIPT__ &amp; \u2028"
    events = [e.model_copy(update={"query": nasty}) if e.kind == "run_start" else e for e in result.trajectory.events]
    page = render_html(events, title=nasty)
    assert page.count("<script") == 2
    assert "alert(1)</script>" not in page
    assert f"<title>{html.escape(nasty)}</title>" in page
    assert embedded_data(page)["runs"][0]["query"] == nasty


def test_embed_json_round_trips():
    data = {"a": "</script>&<>\u2028\u2029", "b": [1, 2.5, None, True]}
    text = embed_json(data)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == data


def test_assets_are_package_data():
    names = {entry.name for entry in resources.files("rlm_integrations.viewer").joinpath("assets").iterdir()}
    assert {"viewer.html", "viewer.js", "viewer.css"} <= names


def test_notebook_display_is_a_sandboxed_frame(result):
    shown = result._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in shown
    assert "<script" not in shown  # all of it is inside the escaped srcdoc attribute
    srcdoc = html.unescape(_search(r'srcdoc="([^"]*)"', shown).group(1))
    assert srcdoc == to_html(result)
    assert notebook_html(result, height=300).count("height: 300px") == 1


def test_importing_core_does_not_load_the_viewer():
    code = "import sys, rlm_integrations.core.result; print('rlm_integrations.viewer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_render_accepts_paths_trajectories_results_and_events(result, tmp_path):
    path = tmp_path / "run.jsonl"
    result.save(path)
    pages = [render_html(x) for x in (path, str(path), Trajectory.load(path), result, result.trajectory.events)]
    datas = [embedded_data(p)["summary"]["usage"] for p in pages]
    assert all(d == datas[0] for d in datas)
    with pytest.raises(TypeError, match="expected a trajectory"):
        render_html(42)  # type: ignore[arg-type]
    assert write_html(result, tmp_path / "x.html").read_text().startswith("<!DOCTYPE html>")


# -- reading files -------------------------------------------------------------------------------------


def test_read_events_skips_what_it_cannot_read(result, tmp_path):
    lines = result.trajectory.to_jsonl().splitlines()
    future = json.dumps({"kind": "tool_call", "run_id": "run-1", "at": 1.0})
    bad = json.dumps({"kind": "cell_end", "run_id": "run-1"})
    path = tmp_path / "live.jsonl"
    path.write_text("\n".join([*lines, future, bad, "not json", lines[0][: len(lines[0]) // 2]]))
    events, problems = read_events(path)
    assert len(events) == len(lines)
    assert len(problems) == 4
    assert "unknown event kind 'tool_call'" in problems[0]
    assert "'cell_end' event that does not validate" in problems[1]
    assert "not valid JSON" in problems[2] and "not valid JSON" in problems[3]
    assert problems[0].startswith(f"line {len(lines) + 1}:")


def test_read_events_refuses_a_file_with_no_events(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="no line is a trajectory event"):
        read_events(path)


# -- rlm view ----------------------------------------------------------------------------------------


def test_rlm_view_writes_the_page(result, tmp_path, capfd):
    path = tmp_path / "run.jsonl"
    result.save(path)
    assert main(["view", str(path)]) == 0
    out = capfd.readouterr().out
    page = tmp_path / "run.html"
    assert f"Wrote {page}" in out and "5 runs" in out and "status completed" in out
    assert embedded_data(page.read_text())["summary"]["runs"] == 5
    target = tmp_path / "elsewhere.html"
    assert main(["view", str(path), "-o", str(target), "--title", "My run"]) == 0
    assert "<title>My run</title>" in target.read_text()


def test_rlm_view_open_uses_the_browser(result, tmp_path, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    path = tmp_path / "run.jsonl"
    result.save(path)
    assert main(["view", str(path), "--open"]) == 0
    assert opened == [(tmp_path / "run.html").resolve().as_uri()]


def test_rlm_view_errors_are_one_line(tmp_path, capfd):
    assert main(["view", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such trajectory file" in capfd.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text("hello\n")
    assert main(["view", str(other)]) == 2
    assert "no line is a trajectory event" in capfd.readouterr().err


def test_rlm_view_warns_about_skipped_lines(result, tmp_path, capfd):
    path = tmp_path / "run.jsonl"
    path.write_text(result.trajectory.to_jsonl() + '{"kind": "run_st')
    assert main(["view", str(path)]) == 0
    assert "warning:" in capfd.readouterr().err
    assert "not valid JSON" in embedded_data((tmp_path / "run.html").read_text())["problems"][0]


def test_rlm_view_help(capfd):
    assert main(["view", "--help"]) == 0
    assert "--open" in capfd.readouterr().out


# -- size and speed on a long run ---------------------------------------------------------------------------


@pytest.mark.slow  # renders two large trajectories
def test_five_thousand_steps_render_quickly_and_linearly():
    small = synthetic_events(500, child_every=100)
    large = synthetic_events(5_000, child_every=500)
    started = time.perf_counter()
    page = render_html(large)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"rendering 5,000 steps took {elapsed:.1f} s"
    data = embedded_data(page)
    assert data["summary"]["iterations"] == 5_000 + 9 * 3  # nine child runs of three turns
    ratio = len(page) / len(render_html(small))
    assert ratio < 11, f"page size grew {ratio:.1f}x for 10x the steps"
    assert EventAdapter.validate_python(large[0].model_dump()).kind == "run_start"
