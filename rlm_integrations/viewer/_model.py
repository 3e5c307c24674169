"""Turn a trajectory's events into the data the viewer page draws: a tree of runs with totals.

The page gets one JSON document (`build_view`). The tree and its usage roll-up come from
core's `RunTree`; this module lays them out as JSON and adds what only the page needs
(times relative to the first event, where time went, each distinct message stored once),
so the page only draws and the numbers can be tested without a browser. Totals count what
`RLMResult.usage` counts: a call the cache replayed is marked ``cached``, not counted.

Shape (times are seconds since the first event; usages are `{"p", "c", "cost", "calls",
"unknown"}` where `cost` is the known part in USD, None if no call had a price, and
`unknown` counts calls whose price is unknown):

```
{"format": 1, "title", "problems": [str], "prompts": [str],
 "summary": {"status", "limit", "answer", "duration", "runs", "maxDepth", "iterations",
             "cells", "cellErrors", "lmCalls", "subCalls", "usage", "models": {name: usage},
             "time": {"root", "sub", "repl", "wall"}},
 "citations": [{"start", "end", "text", "item", "source"}],
 "runs": [{"id", "parent", "parentCell", "parentCall", "depth", "query", "context", "model",
           "subModel", "status", "limit", "answer", "duration", "t0", "t1", "finished",
           "own", "total", "children": [run id], "iterations": [
             {"n", "t0", "t1", "duration", "own", "total",
              "calls": [{"id", "model", "purpose", "messages", "text", "usage", "duration",
                         "error", "t0", "t1"}],
              "cells": [{"id", "code", "stdout", "value", "error", "errorType", "duration",
                         "wall", "final", "timedOut", "restarted", "lost", "t0", "t1",
                         "subs": [{"id", "fn", "model", "prompt", "promptChars", "response",
                                   "usage", "duration", "error", "child", "t0", "t1"}]}],
              "subs": [sub-calls made outside any cell]}]}]}
```

Messages repeat (the system prompt and any worked example open every run), so each
distinct message text is stored once in `prompts` and a message refers to it as
`{"role": ..., "prompt": index}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlm_integrations.core.events import Event
from rlm_integrations.core.run_tree import (
    CellNode,
    IterationNode,
    ModelCallNode,
    RunNode,
    RunTree,
    SubCallNode,
    UsageTally,
)
from rlm_integrations.lm.protocol import TokenUsage

__all__ = ["FORMAT_VERSION", "build_view"]

FORMAT_VERSION = 1

Json = dict[str, Any]


def _usage_json(usage: TokenUsage | None) -> Json | None:
    """One call's reported usage, as the page shows it next to the call."""
    if usage is None:
        return None
    return {
        "p": usage.prompt_tokens,
        "c": usage.completion_tokens,
        "cost": usage.cost_usd,
        "calls": usage.calls or 1,
        "unknown": (usage.calls or 1) if usage.cost_usd is None else 0,
    }


def _tally_json(tally: UsageTally) -> Json:
    cost = tally.cost_usd
    return {
        "p": tally.prompt_tokens,
        "c": tally.completion_tokens,
        "cost": None if cost is None else round(cost, 10),
        "calls": tally.calls,
        "unknown": tally.unpriced_calls,
    }


class _Layout:
    """Lays a `RunTree` out as the page's JSON: times relative to the first event, messages interned."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.t0 = min((event.at for event in events), default=0.0)
        self.prompts: list[str] = []
        self._prompt_index: dict[str, int] = {}

    def rel(self, at: float) -> float:
        return round(at - self.t0, 6)

    def message(self, message: dict[str, str]) -> Json:
        content = message.get("content", "")
        index = self._prompt_index.get(content)
        if index is None:
            index = self._prompt_index[content] = len(self.prompts)
            self.prompts.append(content)
        return {"role": message.get("role", "user"), "prompt": index}

    def run(self, run: RunNode) -> Json:
        start, end = run.start, run.end
        iterations = [self.iteration(turn) for turn in run.turns()]
        times = [item["t0"] for item in iterations]
        context = start.context if start is not None else None
        return {
            "id": run.run_id,
            "parent": start.parent_id if start is not None else None,
            "parentCell": start.parent_cell_id if start is not None else None,
            "parentCall": run.parent_call.call_id if run.parent_call is not None else None,
            "depth": run.depth,
            "query": run.query,
            "context": context.model_dump(mode="json") if context is not None else None,
            "model": start.model if start is not None else "",
            "subModel": start.sub_model if start is not None else "",
            "status": run.status,
            "limit": end.limit if end is not None else None,
            "answer": end.answer if end is not None else None,
            "duration": end.duration if end is not None else None,
            "t0": self.rel(start.at) if start is not None else (min(times) if times else 0.0),
            "t1": self.rel(end.at) if end is not None else None,
            "finished": end is not None,
            "own": _tally_json(run.own_usage),
            "total": _tally_json(run.usage),
            "children": [child.run_id for child in run.children],
            "iterations": iterations,
        }

    def iteration(self, turn: IterationNode) -> Json:
        end = turn.end
        ends = [cell.end.at for cell in turn.cells if cell.end is not None]
        last = end.at if end is not None else max(ends, default=None)  # the first step (0) has no end event
        return {
            "n": turn.number,
            "t0": self.rel(turn.started_at),
            "t1": self.rel(last) if last is not None else None,
            "duration": end.duration if end is not None else (last - turn.started_at if last is not None else None),
            "calls": [self.call(call) for call in turn.calls],
            "cells": [self.cell(cell) for cell in turn.cells],
            "subs": [self.sub(sub) for sub in turn.subs],
            "own": _tally_json(turn.own_usage),
            "total": _tally_json(turn.usage),
        }

    def call(self, call: ModelCallNode) -> Json:
        start, end = call.start, call.end
        return {
            "id": call.call_id,
            "model": call.model,
            "purpose": start.purpose if start is not None else "step",
            "messages": [self.message(m) for m in start.new_messages] if start is not None else [],
            "text": end.text if end is not None else "",
            "usage": _usage_json(end.usage) if end is not None else None,
            "duration": end.duration if end is not None else None,
            "error": end.error if end is not None else None,
            "cached": end.cached if end is not None else False,
            "t0": self.rel(call.started_at),
            "t1": self.rel(end.at) if end is not None else None,
        }

    def cell(self, cell: CellNode) -> Json:
        end = cell.end
        t0 = self.rel(cell.started_at)
        t1 = self.rel(end.at) if end is not None else None
        return {
            "id": cell.cell_id,
            "code": cell.start.code if cell.start is not None else "",
            "stdout": end.stdout if end is not None else "",
            "value": end.value if end is not None else None,
            "error": end.error if end is not None else None,
            "errorType": end.error_type if end is not None else None,
            "duration": end.duration if end is not None else None,
            "wall": round(t1 - t0, 6) if t1 is not None else None,
            "final": end.final if end is not None else False,
            "timedOut": end.timed_out if end is not None else False,
            "restarted": end.restarted if end is not None else False,
            "lost": list(end.lost_variables) if end is not None else [],
            "t0": t0,
            "t1": t1,
            "subs": [self.sub(sub) for sub in cell.subs],
        }

    def sub(self, sub: SubCallNode) -> Json:
        start, end = sub.start, sub.end
        return {
            "id": sub.call_id,
            "fn": sub.function,
            "model": sub.model,
            "prompt": start.prompt if start is not None else "",
            "promptChars": start.prompt_chars if start is not None else 0,
            "response": end.response if end is not None else "",
            "usage": _usage_json(end.usage) if end is not None else None,
            "duration": end.duration if end is not None else None,
            "error": end.error if end is not None else None,
            "cached": end.cached if end is not None else False,
            "child": end.child_run_id if end is not None else None,
            "t0": self.rel(sub.started_at),
            "t1": self.rel(end.at) if end is not None else None,
        }


def _summary(tree: RunTree, runs: list[Json]) -> Json:
    roots = [run for run in runs if run["parent"] is None] or runs[:1]
    time = {"root": 0.0, "sub": 0.0, "repl": 0.0, "wall": 0.0}
    counts = {"iterations": 0, "cells": 0, "cellErrors": 0, "lmCalls": 0, "subCalls": 0}
    for node in tree.runs.values():
        counts["iterations"] += sum(1 for number in node.iterations if number > 0)  # 0: a small model's first step
        for turn in node.iterations.values():
            counts["lmCalls"] += len(turn.calls)
            time["root"] += sum(call.end.duration for call in turn.calls if call.end is not None)
            for cell in turn.cells:
                counts["cells"] += 1
                counts["cellErrors"] += cell.end is not None and cell.end.error is not None
                time["repl"] += cell.end.duration if cell.end is not None else 0.0
            for sub in turn.all_subs():
                counts["subCalls"] += 1
                if sub.end is not None and sub.end.child_run_id is None:
                    time["sub"] += sub.end.duration
    root = roots[0] if roots else None
    if root is not None:
        time["wall"] = root["duration"] if root["duration"] is not None else _latest(runs) - root["t0"]
    return {
        "status": root["status"] if root else "empty",
        "limit": root["limit"] if root else None,
        "answer": root["answer"] if root else None,
        "duration": time["wall"],
        "runs": len(runs),
        "roots": [run["id"] for run in roots],
        "maxDepth": max((run["depth"] for run in runs), default=0),
        **counts,
        "usage": _tally_json(tree.usage),
        "models": {name: _tally_json(tally) for name, tally in tree.by_model().items()},
        "time": {name: round(value, 6) for name, value in time.items()},
    }


def _latest(runs: list[Json]) -> float:
    latest = 0.0
    for run in runs:
        for value in (
            run["t1"],
            *(item["t1"] for item in run["iterations"]),
            *(item["t0"] for item in run["iterations"]),
        ):
            if value is not None:
                latest = max(latest, value)
    return latest


def build_view(
    events: Sequence[Event],
    *,
    title: str | None = None,
    problems: Sequence[str] = (),
    citations: Sequence[Any] = (),
) -> Json:
    """The viewer's data for a trajectory's events (see the module docstring for its shape).

    Args:
        events: the events of one run tree, in the order they were emitted.
        title: the page title (default: the top-level run's query).
        problems: notes to show on the page, e.g. lines of the file that were skipped.
        citations: the result's `Citation`s, shown in the "Citations" panel.
    """
    tree = RunTree.from_events(events)
    layout = _Layout(events)
    runs = [layout.run(run) for run in tree.runs.values()]
    root = next((run for run in runs if run["parent"] is None), None)
    return {
        "format": FORMAT_VERSION,
        "title": title or (root["query"] if root else "RLM trajectory"),
        "problems": [*problems, *tree.problems],
        "prompts": layout.prompts,
        "summary": _summary(tree, runs),
        "runs": runs,
        "citations": [_citation_json(c) for c in citations],
    }


def _citation_json(citation: Any) -> Json:
    return {
        "start": citation.start,
        "end": citation.end,
        "text": citation.text,
        "item": citation.item,
        "source": getattr(citation, "source", None),
    }
