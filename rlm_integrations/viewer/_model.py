"""Turn a trajectory's events into the data the viewer page draws: a tree of runs with totals.

The page gets one JSON document (`build_view`). Everything the browser would otherwise have
to add up (tokens, cost and time per node and in total, where time went) is computed here,
once, so the page only lays it out and the numbers can be tested without a browser.

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    Event,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.lm.protocol import TokenUsage

__all__ = ["FORMAT_VERSION", "build_view"]

FORMAT_VERSION = 1

Json = dict[str, Any]


def _usage_json(usage: TokenUsage | None) -> Json | None:
    if usage is None:
        return None
    return {
        "p": usage.prompt_tokens,
        "c": usage.completion_tokens,
        "cost": usage.cost_usd,
        "calls": usage.calls or 1,
        "unknown": (usage.calls or 1) if usage.cost_usd is None else 0,
    }


@dataclass
class _Tally:
    """Tokens, calls and cost added up over several calls; an unknown price is counted, not guessed."""

    prompt: int = 0
    completion: int = 0
    cost: float = 0.0
    priced: int = 0
    calls: int = 0
    unknown: int = 0

    def add_usage(self, usage: Json | None) -> None:
        if usage is None:
            return
        self.prompt += usage["p"]
        self.completion += usage["c"]
        self.calls += usage["calls"]
        if usage["cost"] is None:
            self.unknown += usage["calls"]
        else:
            self.cost += usage["cost"]
            self.priced += usage["calls"]

    def add(self, other: _Tally) -> None:
        self.prompt += other.prompt
        self.completion += other.completion
        self.cost += other.cost
        self.priced += other.priced
        self.calls += other.calls
        self.unknown += other.unknown

    def json(self) -> Json:
        cost = round(self.cost, 10) if self.priced or not self.unknown else None
        return {"p": self.prompt, "c": self.completion, "cost": cost, "calls": self.calls, "unknown": self.unknown}


@dataclass
class _Run:
    start: RunStarted | None
    run_id: str
    end: RunFinished | None = None
    iterations: dict[int, Json] = field(default_factory=dict)
    cells: dict[str, Json] = field(default_factory=dict)
    calls: dict[str, Json] = field(default_factory=dict)
    subs: dict[str, Json] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    child_of_call: dict[str, str] = field(default_factory=dict)


class _Builder:
    def __init__(self, events: Sequence[Event]) -> None:
        self.t0 = min((event.at for event in events), default=0.0)
        self.runs: dict[str, _Run] = {}
        self.prompts: list[str] = []
        self._prompt_index: dict[str, int] = {}
        self.problems: list[str] = []

    def rel(self, at: float) -> float:
        return round(at - self.t0, 6)

    def run(self, run_id: str) -> _Run:
        found = self.runs.get(run_id)
        if found is None:
            found = self.runs[run_id] = _Run(start=None, run_id=run_id)
            self.problems.append(f"events for run {run_id} arrived without its run_start event")
        return found

    def iteration(self, run: _Run, number: int, at: float) -> Json:
        found = run.iterations.get(number)
        if found is None:
            found = run.iterations[number] = {
                "n": number,
                "t0": self.rel(at),
                "t1": None,
                "duration": None,
                "calls": [],
                "cells": [],
                "subs": [],
            }
        return found

    def message(self, message: dict[str, str]) -> Json:
        role = message.get("role", "user")
        content = message.get("content", "")
        index = self._prompt_index.get(content)
        if index is None:
            index = self._prompt_index[content] = len(self.prompts)
            self.prompts.append(content)
        return {"role": role, "prompt": index}

    def feed(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.runs[event.run_id] = _Run(start=event, run_id=event.run_id)
            if event.parent_id is not None:
                parent = self.runs.get(event.parent_id)
                if parent is not None:
                    parent.children.append(event.run_id)
            return
        run = self.run(event.run_id)
        if isinstance(event, RunFinished):
            run.end = event
        elif isinstance(event, IterationStarted):
            self.iteration(run, event.iteration, event.at)
        elif isinstance(event, IterationFinished):
            item = self.iteration(run, event.iteration, event.at)
            item["t1"] = self.rel(event.at)
            item["duration"] = event.duration
        elif isinstance(event, LMCallStarted):
            call: Json = {
                "id": event.call_id,
                "model": event.model,
                "purpose": event.purpose,
                "messages": [self.message(m) for m in event.new_messages],
                "text": "",
                "usage": None,
                "duration": None,
                "error": None,
                "t0": self.rel(event.at),
                "t1": None,
            }
            run.calls[event.call_id] = call
            self.iteration(run, event.iteration, event.at)["calls"].append(call)
        elif isinstance(event, LMCallFinished):
            found = run.calls.get(event.call_id)
            finished = found if found is not None else self._orphan_call(run, event)
            finished.update(
                text=event.text,
                usage=_usage_json(event.usage),
                duration=event.duration,
                error=event.error,
                cached=event.cached,
                t1=self.rel(event.at),
            )
        elif isinstance(event, CellStarted):
            self._cell_started(run, event)
        elif isinstance(event, CellFinished):
            self._cell_finished(run, event)
        elif isinstance(event, SubCallStarted):
            self._sub_started(run, event)
        elif isinstance(event, SubCallFinished):
            self._sub_finished(run, event)

    def _orphan_call(self, run: _Run, event: LMCallFinished) -> Json:
        call: Json = {
            "id": event.call_id,
            "model": event.model,
            "purpose": "step",
            "messages": [],
            "t0": self.rel(event.at - event.duration),
        }
        run.calls[event.call_id] = call
        self.iteration(run, event.iteration, event.at)["calls"].append(call)
        return call

    def _cell_started(self, run: _Run, event: CellStarted) -> None:
        cell: Json = {
            "id": event.cell_id,
            "code": event.code,
            "stdout": "",
            "value": None,
            "error": None,
            "errorType": None,
            "duration": None,
            "wall": None,
            "final": False,
            "timedOut": False,
            "restarted": False,
            "lost": [],
            "t0": self.rel(event.at),
            "t1": None,
            "subs": [],
        }
        run.cells[event.cell_id] = cell
        self.iteration(run, event.iteration, event.at)["cells"].append(cell)

    def _cell_finished(self, run: _Run, event: CellFinished) -> None:
        cell = run.cells.get(event.cell_id)
        if cell is None:
            self._cell_started(
                run, CellStarted(run_id=event.run_id, cell_id=event.cell_id, iteration=event.iteration, code="")
            )
            cell = run.cells[event.cell_id]
            cell["t0"] = self.rel(event.at - event.duration)
        t1 = self.rel(event.at)
        cell.update(
            stdout=event.stdout,
            value=event.value,
            error=event.error,
            errorType=event.error_type,
            duration=event.duration,
            wall=round(t1 - cell["t0"], 6),
            final=event.final,
            timedOut=event.timed_out,
            restarted=event.restarted,
            lost=list(event.lost_variables),
            t1=t1,
        )

    def _sub_started(self, run: _Run, event: SubCallStarted) -> None:
        sub: Json = {
            "id": event.call_id,
            "fn": event.function,
            "model": event.model,
            "prompt": event.prompt,
            "promptChars": event.prompt_chars,
            "response": "",
            "usage": None,
            "duration": None,
            "error": None,
            "child": None,
            "t0": self.rel(event.at),
            "t1": None,
        }
        run.subs[event.call_id] = sub
        cell = run.cells.get(event.cell_id) if event.cell_id is not None else None
        if cell is not None:
            cell["subs"].append(sub)
        else:
            last = max(run.iterations) if run.iterations else 0
            self.iteration(run, last, event.at)["subs"].append(sub)

    def _sub_finished(self, run: _Run, event: SubCallFinished) -> None:
        sub = run.subs.get(event.call_id)
        if sub is None:
            self._sub_started(
                run,
                SubCallStarted(
                    run_id=event.run_id,
                    at=event.at - event.duration,
                    call_id=event.call_id,
                    cell_id=event.cell_id,
                    function=event.function,
                    model=event.model,
                    prompt="",
                    prompt_chars=0,
                ),
            )
            sub = run.subs[event.call_id]
        sub.update(
            response=event.response,
            usage=_usage_json(event.usage),
            duration=event.duration,
            error=event.error,
            cached=event.cached,
            child=event.child_run_id,
            t1=self.rel(event.at),
        )
        if event.child_run_id is not None:
            run.child_of_call[event.child_run_id] = event.call_id


def _finish_run(builder: _Builder, run: _Run, done: dict[str, Json]) -> Json:
    """The run's JSON with its own and subtree totals (children first, so totals add up)."""
    if run.run_id in done:
        return done[run.run_id]
    done[run.run_id] = {}  # a cycle guard: a malformed file cannot recurse forever
    child_totals: dict[str, Json] = {}
    for child_id in run.children:
        child = builder.runs.get(child_id)
        if child is not None:
            child_totals[child_id] = _finish_run(builder, child, done)["total"]
    own = _Tally()
    total = _Tally()
    iterations = [run.iterations[n] for n in sorted(run.iterations)]
    for item in iterations:
        item_own = _Tally()
        item_total = _Tally()
        for call in item["calls"]:
            item_own.add_usage(call.get("usage"))
        for sub in _subs_of(item):
            item_own.add_usage(sub.get("usage"))
            if sub.get("child") in child_totals:
                item_total.add_usage(child_totals[sub["child"]])
        item_total.add(item_own)
        item["own"] = item_own.json()
        item["total"] = item_total.json()
        own.add(item_own)
        total.add(item_total)
    start = run.start
    end = run.end
    times = [item["t0"] for item in iterations]
    t0 = builder.rel(start.at) if start is not None else (min(times) if times else 0.0)
    t1 = builder.rel(end.at) if end is not None else None
    parent_call = None
    if start is not None and start.parent_id is not None:
        parent = builder.runs.get(start.parent_id)
        parent_call = parent.child_of_call.get(run.run_id) if parent is not None else None
    result = {
        "id": run.run_id,
        "parent": start.parent_id if start is not None else None,
        "parentCell": start.parent_cell_id if start is not None else None,
        "parentCall": parent_call,
        "depth": start.depth if start is not None else 0,
        "query": start.query if start is not None else "",
        "context": start.context.model_dump(mode="json") if start is not None and start.context is not None else None,
        "model": start.model if start is not None else "",
        "subModel": start.sub_model if start is not None else "",
        "status": end.status if end is not None else "unfinished",
        "limit": end.limit if end is not None else None,
        "answer": end.answer if end is not None else None,
        "duration": end.duration if end is not None else None,
        "t0": t0,
        "t1": t1,
        "finished": end is not None,
        "own": own.json(),
        "total": total.json(),
        "children": list(run.children),
        "iterations": iterations,
    }
    done[run.run_id] = result
    return result


def _subs_of(iteration: Json) -> Iterable[Json]:
    for cell in iteration["cells"]:
        yield from cell["subs"]
    yield from iteration["subs"]


def _summary(runs: list[Json]) -> Json:
    roots = [run for run in runs if run["parent"] is None] or runs[:1]
    models: dict[str, _Tally] = {}
    total = _Tally()
    time = {"root": 0.0, "sub": 0.0, "repl": 0.0, "wall": 0.0}
    counts = {"iterations": 0, "cells": 0, "cellErrors": 0, "lmCalls": 0, "subCalls": 0}
    for run in runs:
        counts["iterations"] += len(run["iterations"])
        for item in run["iterations"]:
            for call in item["calls"]:
                counts["lmCalls"] += 1
                time["root"] += call.get("duration") or 0.0
                _by_model(models, call.get("model", "?"), call.get("usage"))
            for cell in item["cells"]:
                counts["cells"] += 1
                counts["cellErrors"] += cell["error"] is not None
                time["repl"] += cell.get("duration") or 0.0
            for sub in _subs_of(item):
                counts["subCalls"] += 1
                if sub.get("child") is None:
                    time["sub"] += sub.get("duration") or 0.0
                    _by_model(models, sub.get("model", "?"), sub.get("usage"))
    for tally in models.values():
        total.add(tally)
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
        "usage": total.json(),
        "models": {name: tally.json() for name, tally in sorted(models.items())},
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


def _by_model(models: dict[str, _Tally], name: str, usage: Json | None) -> None:
    if usage is not None:
        models.setdefault(name, _Tally()).add_usage(usage)


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
    builder = _Builder(events)
    for event in events:
        builder.feed(event)
    done: dict[str, Json] = {}
    for run in builder.runs.values():
        _finish_run(builder, run, done)
    runs = [done[run_id] for run_id in builder.runs]
    summary = _summary(runs)
    root = next((run for run in runs if run["parent"] is None), None)
    return {
        "format": FORMAT_VERSION,
        "title": title or (root["query"] if root else "RLM trajectory"),
        "problems": [*problems, *builder.problems],
        "prompts": builder.prompts,
        "summary": summary,
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
