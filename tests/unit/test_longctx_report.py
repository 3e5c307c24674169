"""benchmarks/longctx_report.py: the table's numbers and the SVG bar chart, from small synthetic result files."""

import importlib
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
report = importlib.import_module("longctx_report")

SVG = "{http://www.w3.org/2000/svg}"


def _result(row: str, family: str, size: str, index: int, score: float, wall: float, tokens: int, **extra: Any):
    return {
        "row": row,
        "task_id": f"{family}/{size}/heldout/{index}",
        "family": family,
        "size": size,
        "split": "heldout",
        "index": index,
        "score": score,
        "wall_s": wall,
        "tokens": tokens,
        "status": "completed",
        **extra,
    }


def _write(path: Path, results: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"split": "heldout", "model": "local", "results": results}))
    return path


@pytest.fixture
def files(tmp_path):
    first = _write(
        tmp_path / "a.json",
        [
            _result("rlm-local", "single_needle", "128K", 0, 1.0, 10.0, 1000),
            _result("rlm-local", "single_needle", "128K", 1, 0.0, 30.0, 3000),  # replaced in b.json
            _result("rlm-local", "count_records", "128K", 0, 0.5, 20.0, 2000),
            _result("direct-local", "single_needle", "128K", 0, 0.0, 4.0, 900),
            _result("direct-local", "count_records", "128K", 0, 0.25, 6.0, 700, status="error"),
        ],
    )
    second = _write(
        tmp_path / "b.json",
        [
            _result("rlm-local", "single_needle", "128K", 1, 1.0, 50.0, 5000),  # the rerun wins
            _result("rlm-local", "count_records", "8K", 0, 1.0, 2.0, 400),
            _result("direct-local", "count_records", "8K", 0, 0.75, 1.0, 300),
            {**_result("rlm-local", "count_records", "8K", 7, 0.0, 99.0, 9999), "split": "train"},
        ],
    )
    return first, second


def _table_rows(markdown: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    head = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(head, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        rows[cells["row"], cells["size"]] = cells
    return rows


def test_the_table_has_means_medians_and_counts_per_row_and_size(files, tmp_path):
    out, chart = tmp_path / "out.md", tmp_path / "assets" / "longctx.svg"
    argv = [str(p) for p in files] + ["--markdown", str(out), "--svg", str(chart), "--split", "heldout"]
    assert report.main(argv) == 0
    text = out.read_text()
    head = [cell.strip() for cell in text.splitlines()[0].strip("|").split("|")]
    assert head == [
        "row",
        "size",
        "single_needle",
        "count_records",
        "all",
        "median time / task",
        "median tokens / task",
    ]
    rows = _table_rows(text)
    assert list(rows) == [("direct-local", "8K"), ("direct-local", "128K"), ("rlm-local", "8K"), ("rlm-local", "128K")]

    rlm = rows["rlm-local", "128K"]  # single_needle: 1.0 and the rerun's 1.0; count_records: 0.5
    assert rlm["single_needle"] == "1.00 (2)" and rlm["count_records"] == "0.50 (1)"
    assert rlm["all"] == "**0.83** (3)"  # mean of 1.0, 1.0, 0.5
    assert rlm["median time / task"] == "20.0 s"  # median of 10, 50, 20
    assert rlm["median tokens / task"] == "2,000"  # median of 1000, 5000, 2000

    direct = rows["direct-local", "128K"]
    assert direct["single_needle"] == "0.00 (1)" and direct["count_records"] == "0.25 (1)"
    assert direct["all"] == "**0.12** (2, 1 not completed)"
    assert direct["median time / task"] == "5.0 s" and direct["median tokens / task"] == "800"

    small = rows["rlm-local", "8K"]  # the train-split task is left out by --split heldout
    assert small["single_needle"] == "not run" and small["count_records"] == "1.00 (1)"
    assert small["median tokens / task"] == "400"


def test_without_a_split_every_result_counts(files):
    lines = report.summarise(report.load(list(files)))
    small = next(line for line in lines if (line.row, line.size) == ("rlm-local", "8K"))
    assert small.tasks == 2 and small.mean_score == 0.5 and small.median_tokens == (400 + 9999) / 2


def test_the_svg_parses_with_one_bar_per_family_and_series_in_score_order(files, tmp_path):
    chart = tmp_path / "longctx.svg"
    assert report.main([str(p) for p in files] + ["--svg", str(chart), "--split", "heldout"]) == 0
    root = ET.parse(chart).getroot()
    assert root.tag == f"{SVG}svg" and root.get("width") == "800" and root.get("height") == "420"
    bars = [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == "bar"]
    heights = {(bar.get("data-family"), bar.get("data-series")): float(bar.get("height", "nan")) for bar in bars}
    assert len(bars) == len(heights)  # one bar per (family, series), none twice
    assert set(heights) == {
        ("single_needle", "direct-local@128K"),
        ("single_needle", "rlm-local@128K"),
        ("count_records", "direct-local@8K"),
        ("count_records", "direct-local@128K"),
        ("count_records", "rlm-local@8K"),
        ("count_records", "rlm-local@128K"),
    }
    counts = [heights["count_records", s] for s in ("rlm-local@8K", "direct-local@8K", "rlm-local@128K")]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[1] > counts[2]
    full = heights["single_needle", "rlm-local@128K"]
    assert heights["single_needle", "direct-local@128K"] == 0.0
    assert heights["count_records", "rlm-local@128K"] == pytest.approx(full / 2, abs=0.1)
    assert heights["count_records", "direct-local@8K"] == pytest.approx(full * 0.75, abs=0.1)
    legend = [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == "legend"]
    assert len(legend) == 4 and len({rect.get("fill") for rect in legend}) == 4
    texts = {"".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert {"rlm-local@128K (all 0.83)", "single needle", "0.75"} <= texts


def test_a_file_that_is_not_a_result_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    assert report.main([str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
