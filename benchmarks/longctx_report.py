"""The long-context suite's results as a markdown table and an SVG bar chart (standard library only).

Reads one or more ``--json`` files written by ``benchmarks/longctx.py`` and writes:

- a markdown table: one line per row and size (``rlm-local`` at 128K, ...), one column per task
  family with the mean score and the number of tasks, an ``all`` column, and the median wall
  time and median tokens per task over that line's tasks;
- an SVG grouped bar chart (800x420): one group per family, one bar per row@size, the bar's
  height the mean score (0 to 1), its value written on it.

A task run twice by the same row (same ``task_id``, e.g. in two files) counts once: the later
result wins, in the order the files are given.

    python benchmarks/longctx_report.py results1.json results2.json --markdown out.md --svg docs/assets/longctx.svg
    python benchmarks/longctx_report.py /tmp/lc/*.json --split heldout             # the table on stdout
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from longctx import ROWS  # noqa: E402
from longctx_suite import FAMILIES, parse_size  # noqa: E402

WIDTH, HEIGHT = 800, 420
# Okabe-Ito's colour-blind-safe palette (its pale yellow last), then Tol's darker tones for more bars.
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#E6C700"]
COLOURS += ["#332288", "#117733", "#882255", "#999933", "#44AA99", "#AA4499"]
MAX_BAR_W = 48.0
_COMPLETED = ("ok", "completed")


@dataclass(frozen=True)
class Line:
    """The summary of one row at one size: mean score per family and over all its tasks."""

    row: str
    size: str
    family_scores: dict[str, tuple[float, int]]  # family -> (mean score, tasks)
    mean_score: float
    tasks: int
    median_wall_s: float
    median_tokens: float
    not_completed: int

    @property
    def label(self) -> str:
        return f"{self.row}@{self.size}"


def load(paths: list[Path], split: str | None = None) -> list[dict[str, Any]]:
    """Every result of the files (the later of two for the same row and task), optionally of one split."""
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ValueError(f"{path}: not a longctx.py result file (no 'results' list); pass its --json output")
        for result in doc["results"]:
            if split is None or result.get("split", doc.get("split")) == split:
                kept[result["row"], result.get("task_id") or f"{result['family']}/{result['size']}"] = result
    return list(kept.values())


def _size_key(size: str) -> int:
    try:
        return parse_size(size)
    except ValueError:
        return sys.maxsize


def families_of(results: list[dict[str, Any]]) -> list[str]:
    """The families present, in the suite's order (unknown names last, as first seen)."""
    present = dict.fromkeys(r["family"] for r in results)
    return [f for f in FAMILIES if f in present] + [f for f in present if f not in FAMILIES]


def summarise(results: list[dict[str, Any]]) -> list[Line]:
    """One `Line` per (row, size), rows in longctx.py's order, sizes from small to large."""
    order = {name: i for i, name in enumerate(ROWS)}
    keys = sorted(
        dict.fromkeys((r["row"], r["size"]) for r in results),
        key=lambda k: (order.get(k[0], len(order)), k[0], _size_key(k[1])),
    )
    lines = []
    for row, size in keys:
        mine = [r for r in results if r["row"] == row and r["size"] == size]
        per_family: dict[str, tuple[float, int]] = {}
        for family in families_of(mine):
            scores = [float(r["score"]) for r in mine if r["family"] == family]
            per_family[family] = (statistics.mean(scores), len(scores))
        lines.append(
            Line(
                row=row,
                size=size,
                family_scores=per_family,
                mean_score=statistics.mean(float(r["score"]) for r in mine),
                tasks=len(mine),
                median_wall_s=statistics.median(float(r["wall_s"]) for r in mine),
                median_tokens=statistics.median(float(r["tokens"]) for r in mine),
                not_completed=sum(r.get("status") not in _COMPLETED for r in mine),
            )
        )
    return lines


def _num(score: float) -> str:
    return f"{score:.2f}"


def markdown(lines: list[Line], families: list[str]) -> str:
    """The table: a line per row and size, a column per family, then all, median time and tokens."""
    head = ["row", "size", *families, "all", "median time / task", "median tokens / task"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for line in lines:
        cells = [line.row, line.size]
        for family in families:
            score = line.family_scores.get(family)
            cells.append(f"{_num(score[0])} ({score[1]})" if score else "not run")
        note = f", {line.not_completed} not completed" if line.not_completed else ""
        cells += [f"**{_num(line.mean_score)}** ({line.tasks}{note})", f"{line.median_wall_s:.1f} s"]
        cells.append(f"{line.median_tokens:,.0f}")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Each family cell: mean score (tasks). Scores from 0 to 1: exact / all-of / numeric partial credit."]
    return "\n".join(out) + "\n"


def _text(x: float, y: float, body: str, size: int = 12, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{escape(body)}</text>'


def _legend(lines: list[Line], per_row: int) -> list[str]:
    parts = []
    for i, line in enumerate(lines):  # a few entries a line, under the title
        lx, ly = 70 + (i % per_row) * 240, 36 + (i // per_row) * 18
        parts.append(f'<rect class="legend" x="{lx}" y="{ly}" width="12" height="12" fill="{_colour(i)}"/>')
        parts.append(_text(lx + 17, ly + 10.5, f"{line.label} (all {_num(line.mean_score)})", anchor="start"))
    return parts


def _axes(left: int, right: int, top: float, bottom: float) -> list[str]:
    parts = []
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):  # grid lines and tick labels
        ty = bottom - tick * (bottom - top)
        grid = "#444444" if tick == 0 else "#dddddd"
        parts.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{right}" y2="{ty:.1f}" stroke="{grid}" stroke-width="1"/>')
        parts.append(_text(left - 6, ty + 4, f"{tick:.2f}", size=11, anchor="end"))
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444444" stroke-width="1"/>')
    middle = (top + bottom) / 2
    parts.append(_text(16, middle, "mean score (0 to 1)", size=13, extra=f' transform="rotate(-90 16 {middle:.1f})"'))
    parts.append(_text((left + right) / 2, HEIGHT - 10, "task family", size=13))
    return parts


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def svg(lines: list[Line], families: list[str], title: str) -> str:
    """A grouped bar chart: a group per family, a bar per row@size (mean score, 0 to 1), a legend."""
    per_row = 3
    left, right, bottom = 60, WIDTH - 15, HEIGHT - 48.0
    top = 36 + ((len(lines) + per_row - 1) // per_row) * 18 + 30.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect class="background" x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        _text(WIDTH / 2, 22, title, size=15, extra=' font-weight="bold"'),
        *_legend(lines, per_row),
        *_axes(left, right, top, bottom),
    ]
    group_w = (right - left) / max(len(families), 1)
    bar_w = min(group_w * 0.8 / max(len(lines), 1), MAX_BAR_W)
    for g, family in enumerate(families):
        x0 = left + (g + 0.5) * group_w - bar_w * len(lines) / 2
        parts.append(_text(left + (g + 0.5) * group_w, bottom + 17, family.replace("_", " ")))
        for i, line in enumerate(lines):
            score = line.family_scores.get(family)
            if score is None:
                continue
            x, h = x0 + i * bar_w, min(max(score[0], 0.0), 1.0) * (bottom - top)
            label = f"{line.label} {family}: {score[0]:.2f} ({score[1]} tasks)"
            parts.append(
                f'<rect class="bar" data-family={quoteattr(family)} data-series={quoteattr(line.label)} '
                f'x="{x:.1f}" y="{bottom - h:.1f}" width="{bar_w * 0.92:.1f}" height="{h:.1f}" '
                f'fill="{_colour(i)}"><title>{escape(label)}</title></rect>'
            )
            cx, ty, value = x + bar_w * 0.46, bottom - h - 3, _num(score[0])
            if bar_w >= 28:  # room for the value across the bar, just above its top
                parts.append(_text(cx, ty, value, size=10))
            else:  # narrow bars: the value turned upright, just above the bar
                turn = f' transform="rotate(-90 {cx + 3.5:.1f} {ty:.1f})"'
                parts.append(_text(cx + 3.5, ty, value, size=10, anchor="start", extra=turn))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="result files written by longctx.py --json")
    p.add_argument("--markdown", type=Path, help="write the table here (default: print it)")
    p.add_argument("--svg", type=Path, help="write the bar chart here, e.g. docs/assets/longctx.svg")
    p.add_argument("--split", choices=("train", "heldout"), help="only the results of this split")
    p.add_argument("--title", default="Long-context suite: mean score by task family")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = load(args.results, args.split)
    except (OSError, ValueError, KeyError) as error:
        print(f"cannot read the results: {error}", file=sys.stderr)
        return 2
    if not results:
        where = f" of split {args.split!r}" if args.split else ""
        print(f"no results{where} in {', '.join(map(str, args.results))}", file=sys.stderr)
        return 1
    lines, families = summarise(results), families_of(results)
    table = markdown(lines, families)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    else:
        print(table, end="")
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        title = f"{args.title} ({args.split})" if args.split else args.title
        args.svg.write_text(svg(lines, families, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
