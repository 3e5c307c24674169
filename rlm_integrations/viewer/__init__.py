"""The trajectory viewer: one self-contained HTML file per run tree.

```python
from rlm_integrations.viewer import render_html, to_html, write_html

html = to_html(result)                        # a result's page, as a string
write_html(result.trajectory, "run.html")     # or: rlm view run.jsonl -o run.html
html = render_html("run.jsonl")               # a path, a Trajectory, an RLMResult or events
```

The page shows the run tree (child runs started by `rlm_query`, at every depth), each
iteration's model reply, the code with highlighting, its output and errors, every
sub-call, time, tokens and cost per node and in total, a timeline, the final answer and
status, and the citations behind the answer. It is searchable and keyboard-navigable, loads
nothing from the network, and builds its rows when they are opened, so runs of thousands of steps stay responsive.

Importing this module makes notebooks show an `RLMResult` as the viewer in a sandboxed
frame (it registers `notebook_html` with `rlm_integrations.core.result.register_html_display`;
core itself never imports the viewer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_integrations.core.events import Event
from rlm_integrations.core.result import register_html_display
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.viewer._load import read_events
from rlm_integrations.viewer._model import build_view
from rlm_integrations.viewer._render import iframe, page

if TYPE_CHECKING:
    from rlm_integrations.core.citations import Citation
    from rlm_integrations.core.result import RLMResult

__all__ = ["build_view", "notebook_html", "read_events", "render_html", "render_view", "to_html", "write_html"]


def _events(source: Any) -> tuple[list[Event], list[str]]:
    if isinstance(source, str | Path):
        return read_events(source)
    if isinstance(source, Trajectory):
        return list(source.events), []
    trajectory = getattr(source, "trajectory", None)
    if isinstance(trajectory, Trajectory):
        return list(trajectory.events), []
    if isinstance(source, Iterable):
        return list(source), []
    raise TypeError(
        f"expected a trajectory file path, a Trajectory, an RLMResult or events, got {type(source).__name__}"
    )


def render_html(
    source: str | Path | Trajectory | RLMResult | Iterable[Event],
    *,
    title: str | None = None,
    citations: Sequence[Citation] | None = None,
) -> str:
    """The viewer page for `source`, as one HTML document.

    Args:
        source: a JSON-lines trajectory file (as written by `RLMResult.save`, `rlm run
            --trajectory` or `JSONLWriter`), a `Trajectory`, an `RLMResult`, or events.
        title: the page title (default: the top-level run's query).
        citations: the citations to list in the "Citations" panel (default: an `RLMResult`'s
            own `citations`, else those the trajectory recorded).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file holds no trajectory events.
    """
    events, problems = _events(source)
    if citations is None:
        citations = getattr(source, "citations", None) or Trajectory(events=events).citations
    return page(build_view(events, title=title, problems=problems, citations=citations))


def render_view(view: dict[str, Any]) -> str:
    """The HTML page for viewer data made by `build_view` (for callers that also read the data)."""
    return page(view)


def to_html(result: RLMResult, *, title: str | None = None) -> str:
    """A result's trajectory and citations as one self-contained HTML page (see `render_html`)."""
    return render_html(result, title=title)


def write_html(
    source: str | Path | Trajectory | RLMResult | Iterable[Event], path: str | Path, *, title: str | None = None
) -> Path:
    """Write the viewer page for `source` to `path` and return the path (see `render_html`)."""
    target = Path(path)
    target.write_text(render_html(source, title=title), encoding="utf-8")
    return target


def notebook_html(source: str | Path | Trajectory | RLMResult | Iterable[Event], *, height: int = 640) -> str:
    """The viewer in a sandboxed iframe, for notebooks (what `RLMResult._repr_html_` shows once this is imported)."""
    return iframe(render_html(source), height=height)


register_html_display(notebook_html)
