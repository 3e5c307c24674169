"""`rlm view RUN.jsonl [-o run.html] [--open]`: write a trajectory as one self-contained HTML page."""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "view"]


def view(
    trajectory: Annotated[
        Path, typer.Argument(help="A trajectory file (JSON lines), e.g. from `rlm run --trajectory`.")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the page (default: next to the file, .html).")
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default web browser.")] = False,
    title: Annotated[str | None, typer.Option(help="Page title (default: the top-level query).")] = None,
) -> int:
    """Write TRAJECTORY as one HTML file: run tree, code, output, sub-calls, timings, tokens and cost."""
    from rlm_integrations.viewer import build_view, read_events, render_view

    if not trajectory.is_file():
        print(f"Error: no such trajectory file: {trajectory}", file=sys.stderr)
        return 2
    target = output if output is not None else trajectory.with_suffix(".html")
    try:
        events, problems = read_events(trajectory)
        data = build_view(events, title=title, problems=problems)
        target.write_text(render_view(data), encoding="utf-8")
    except (OSError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: {trajectory}: {problem}", file=sys.stderr)
    summary = data["summary"]
    print(
        f"Wrote {target} ({summary['runs']} runs, {summary['iterations']} iterations, "
        f"status {summary['status']}, {target.stat().st_size / 1024:,.0f} KiB)"
    )
    if open_browser:
        webbrowser.open(target.resolve().as_uri())
    return 0


def register(app: typer.Typer) -> None:
    """Add the `view` command to the `rlm` app."""
    app.command("view")(view)
