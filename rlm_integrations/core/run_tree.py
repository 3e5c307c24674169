"""The run tree: every run, turn, model call, cell and sub-call of a call, with usage rolled up.

One tree, built in one place, for everything that shows or reports a run: the viewer, the
CLI progress line, the OpenTelemetry observer, the LangChain tracer and the DSPy bridge.
Build it live (a `RunTree` is an observer: pass it in ``observers=[...]`` and read it
while the run goes) or afterwards: `RunTree.from_events(events)`, `Trajectory.run_tree()`.

```
RunTree
└── RunNode                  a run: the top-level run, or a child started by rlm_query
    ├── IterationNode        one root-model turn
    │   ├── ModelCallNode    the turn's root-model call(s), the closing call too
    │   ├── CellNode         a code cell
    │   │   └── SubCallNode  llm_query / rlm_query / a tool, called by the cell
    │   │       └── RunNode  the child run an rlm_query started
    │   └── SubCallNode      a sub-call made outside any cell
    └── children             every child run, in start order
```

Every node has `own_usage` (its own model calls) and `usage` (those plus every child run
below it), as a `UsageTally`. The tree forgives what a torn or edited trajectory holds:
an end without its start still makes a node, events of a run whose start never came
make a start-less run (and a note in `problems`), and a loop of parents is refused.
Nodes are built by the tree; read them, do not change them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import assert_never

from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    CitationsFound,
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

__all__ = [
    "CellNode",
    "IterationNode",
    "ModelCallNode",
    "RunNode",
    "RunTree",
    "SubCallNode",
    "UsageTally",
]


@dataclass(frozen=True)
class UsageTally:
    """Tokens, calls and cost added up over model calls; an unknown price is counted, never guessed.

    Counts what `RLMResult.usage` counts: a call the cache replayed is in `cached_calls`
    only, not in `calls`.

    Attributes:
        prompt_tokens: tokens sent.
        completion_tokens: tokens generated.
        calls: model calls made.
        known_cost_usd: the summed cost of the calls whose price is known.
        priced_calls: calls whose price is known.
        unpriced_calls: calls whose price is unknown.
        cached_calls: calls the call cache replayed (nothing spent).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    known_cost_usd: float = 0.0
    priced_calls: int = 0
    unpriced_calls: int = 0
    cached_calls: int = 0

    @classmethod
    def of(cls, usage: TokenUsage | None, *, cached: bool = False) -> UsageTally:
        """The tally of one call's usage (a reported usage stands for at least one call)."""
        if cached:
            return cls(cached_calls=1)
        if usage is None:
            return cls()
        calls = usage.calls or 1
        priced = usage.cost_usd is not None
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            calls=calls,
            known_cost_usd=usage.cost_usd or 0.0,
            priced_calls=calls if priced else 0,
            unpriced_calls=0 if priced else calls,
        )

    def __add__(self, other: UsageTally) -> UsageTally:
        return _total((self, other))

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float | None:
        """The known cost in USD; None when calls were made and none had a known price."""
        if self.unpriced_calls and not self.priced_calls:
            return None
        return self.known_cost_usd

    def token_usage(self) -> TokenUsage:
        """The tally as a `TokenUsage` (its cost is `cost_usd`: a lower bound if some prices were unknown)."""
        return TokenUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
            calls=self.calls,
        )


def _total(tallies: Iterable[UsageTally]) -> UsageTally:
    """The sum of `tallies`, added field by field (one object, however many are summed)."""
    prompt = completion = calls = priced = unpriced = cached = 0
    cost = 0.0
    for tally in tallies:
        prompt += tally.prompt_tokens
        completion += tally.completion_tokens
        calls += tally.calls
        cost += tally.known_cost_usd
        priced += tally.priced_calls
        unpriced += tally.unpriced_calls
        cached += tally.cached_calls
    return UsageTally(prompt, completion, calls, cost, priced, unpriced, cached)


_NOTHING = UsageTally()


@dataclass(eq=False)
class ModelCallNode:
    """A root-model call; `start` or `end` is None while it runs or when the trajectory lacks it.

    `started_at` is the start's time, or the end's time less its duration when the start is missing.
    """

    call_id: str
    iteration: int
    model: str
    started_at: float
    start: LMCallStarted | None = None
    end: LMCallFinished | None = None
    usage: UsageTally = _NOTHING
    """What the call spent (set when it ends)."""


@dataclass(eq=False)
class SubCallNode:
    """An `llm_query`, `rlm_query` or tool call (`function` names it; `model` is ``"tool"`` for a tool).

    `child` is the run an `rlm_query` started; `started_at` as on `ModelCallNode`.
    """

    call_id: str
    cell_id: str | None
    function: str
    model: str
    started_at: float
    start: SubCallStarted | None = None
    end: SubCallFinished | None = None
    child: RunNode | None = None
    own_usage: UsageTally = _NOTHING
    """What the call itself spent, set when it ends (a child run's calls are not in it)."""

    @property
    def usage(self) -> UsageTally:
        """The call's own usage plus its child run's."""
        return self.own_usage + self.child.usage if self.child is not None else self.own_usage


@dataclass(eq=False)
class CellNode:
    """A code cell and the sub-calls its code made (`started_at` as on `ModelCallNode`)."""

    cell_id: str
    iteration: int
    started_at: float
    start: CellStarted | None = None
    end: CellFinished | None = None
    subs: list[SubCallNode] = field(default_factory=list)

    @property
    def own_usage(self) -> UsageTally:
        """The cell's sub-calls' own usage."""
        return _total(sub.own_usage for sub in self.subs)

    @property
    def usage(self) -> UsageTally:
        """The cell's sub-calls and the child runs they started."""
        return _total(sub.usage for sub in self.subs)


@dataclass(eq=False)
class IterationNode:
    """One root-model turn: its model calls, its cells, and sub-calls made outside a cell."""

    number: int
    started_at: float
    end: IterationFinished | None = None
    calls: list[ModelCallNode] = field(default_factory=list)
    cells: list[CellNode] = field(default_factory=list)
    subs: list[SubCallNode] = field(default_factory=list)

    def all_subs(self) -> Iterator[SubCallNode]:
        """Every sub-call of the turn: the cells' first, then those made outside a cell."""
        for cell in self.cells:
            yield from cell.subs
        yield from self.subs

    @property
    def reply(self) -> str:
        """The text of the turn's last finished model call."""
        return next((call.end.text for call in reversed(self.calls) if call.end is not None), "")

    @property
    def own_usage(self) -> UsageTally:
        """The turn's model calls and sub-calls."""
        return _total([*(call.usage for call in self.calls), *(sub.own_usage for sub in self.all_subs())])

    @property
    def usage(self) -> UsageTally:
        """The turn's own usage plus the child runs its sub-calls started."""
        return _total([*(call.usage for call in self.calls), *(sub.usage for sub in self.all_subs())])


@dataclass(eq=False)
class RunNode:
    """One run; `start` is None when the trajectory lacks its ``run_start`` event."""

    run_id: str
    start: RunStarted | None = None
    end: RunFinished | None = None
    parent: RunNode | None = None
    parent_call: SubCallNode | None = None
    children: list[RunNode] = field(default_factory=list)
    iterations: dict[int, IterationNode] = field(default_factory=dict)
    cells: dict[str, CellNode] = field(default_factory=dict)
    calls: dict[str, ModelCallNode] = field(default_factory=dict)
    subs: dict[str, SubCallNode] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """0 for the top-level run, 1 for its children, and so on."""
        if self.start is not None:
            return self.start.depth
        return self.parent.depth + 1 if self.parent is not None else 0

    @property
    def query(self) -> str:
        """The run's question ("" when its start is missing)."""
        return self.start.query if self.start is not None else ""

    @property
    def status(self) -> str:
        """The run's status, or ``"unfinished"`` while it runs (or when its end is missing)."""
        return self.end.status if self.end is not None else "unfinished"

    @property
    def parent_cell(self) -> CellNode | None:
        """The cell whose code started this run."""
        if self.parent is None or self.start is None or self.start.parent_cell_id is None:
            return None
        return self.parent.cells.get(self.start.parent_cell_id)

    def turns(self) -> list[IterationNode]:
        """The run's turns in order."""
        return [self.iterations[number] for number in sorted(self.iterations)]

    def walk(self) -> Iterator[RunNode]:
        """This run and every run below it, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def own_usage(self) -> UsageTally:
        """The run's own model calls and sub-calls (its child runs' are not in it)."""
        return _total(turn.own_usage for turn in self.iterations.values())

    @property
    def usage(self) -> UsageTally:
        """Everything the run and its child runs spent."""
        loose = [child.usage for child in self.children if child.parent_call is None]
        return _total([*(turn.usage for turn in self.iterations.values()), *loose])


class RunTree:
    """The tree of runs built from events; call it with each event (it is an observer) or use `from_events`.

    Attributes:
        runs: every run seen, by id, in the order each was first seen.
        problems: what the events lacked or got wrong (events before their run's start, a loop of parents).
    """

    def __init__(self) -> None:
        self.runs: dict[str, RunNode] = {}
        self.problems: list[str] = []
        self._waiting: dict[str, list[RunNode]] = {}  # parent id -> children that started before it
        self._child_calls: dict[str, SubCallNode] = {}  # child run id -> the sub-call that names it

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> RunTree:
        """The tree of a trajectory's events (in the order they were emitted)."""
        tree = cls()
        for event in events:
            tree.feed(event)
        return tree

    def __call__(self, event: Event) -> None:
        """Add one event (so a tree can be passed as an observer)."""
        self.feed(event)

    @property
    def roots(self) -> list[RunNode]:
        """Runs with no parent in the tree: the top-level run (and runs whose parent never started)."""
        return [run for run in self.runs.values() if run.parent is None]

    @property
    def root(self) -> RunNode | None:
        """The top-level run (the first run that names no parent)."""
        declared = (run for run in self.runs.values() if run.start is not None and run.start.parent_id is None)
        return next(declared, None) or next(iter(self.roots), None)

    @property
    def usage(self) -> UsageTally:
        """Everything every run in the tree spent."""
        return _total(run.own_usage for run in self.runs.values())

    def by_model(self) -> dict[str, UsageTally]:
        """Usage per model name, over every call in the tree (names sorted)."""
        models: dict[str, UsageTally] = {}
        for run in self.runs.values():
            for turn in run.iterations.values():
                calls = [(call.model, call.usage) for call in turn.calls]
                for name, usage in [*calls, *((sub.model, sub.own_usage) for sub in turn.all_subs())]:
                    if usage != _NOTHING:
                        models[name] = models.get(name, _NOTHING) + usage
        return dict(sorted(models.items()))

    def forget(self, run_id: str) -> None:
        """Drop a run and every run below it (a long-lived observer calls this when a top-level run ends)."""
        node = self.runs.get(run_id)
        if node is None:
            return
        gone = list(node.walk())
        for run in gone:
            self.runs.pop(run.run_id, None)
            self._waiting.pop(run.run_id, None)
            self._child_calls.pop(run.run_id, None)
        for waiting in self._waiting.values():
            waiting[:] = [run for run in waiting if run not in gone]
        if node.parent is not None:
            node.parent.children.remove(node)

    # -- building -------------------------------------------------------------------------------
    def feed(self, event: Event) -> None:
        """Add one event to the tree."""
        match event:
            case RunStarted():
                self._run_started(event)
            case RunFinished():
                self._run(event.run_id).end = event
            case IterationStarted():
                self._turn(self._run(event.run_id), event.iteration, event.at)
            case IterationFinished():
                self._turn(self._run(event.run_id), event.iteration, event.at).end = event
            case LMCallStarted():
                call = self._model_call(event, event.at)
                call.start, call.started_at = event, event.at
            case LMCallFinished():
                call = self._model_call(event, event.at - event.duration)
                call.end, call.usage = event, UsageTally.of(event.usage, cached=event.cached)
            case CellStarted():
                cell = self._cell(event, event.at)
                cell.start, cell.started_at = event, event.at
            case CellFinished():
                self._cell(event, event.at - event.duration).end = event
            case SubCallStarted():
                sub = self._sub_call(event, event.at)
                sub.start, sub.started_at = event, event.at
            case SubCallFinished():
                sub = self._sub_call(event, event.at - event.duration)
                sub.end = event
                sub.own_usage = UsageTally.of(event.usage, cached=event.cached)
                if event.child_run_id is not None:
                    self._child_calls[event.child_run_id] = sub
                    child = self.runs.get(event.child_run_id)
                    if child is not None:
                        self._link_call(child)
            case CitationsFound():
                pass  # the answer's sources, after the run: no step of the tree
            case _:
                assert_never(event)

    def _run(self, run_id: str) -> RunNode:
        found = self.runs.get(run_id)
        if found is None:
            found = self.runs[run_id] = RunNode(run_id=run_id)
            self.problems.append(f"events for run {run_id} arrived without its run_start event")
        return found

    def _run_started(self, event: RunStarted) -> None:
        node = self.runs.get(event.run_id)
        if node is None:
            node = self.runs[event.run_id] = RunNode(run_id=event.run_id, start=event)
        elif node.start is None:
            node.start = event
        else:
            self.problems.append(f"run {event.run_id} started twice; the first start is kept")
            return
        if event.parent_id is not None:
            parent = self.runs.get(event.parent_id)
            if parent is not None:
                self._adopt(parent, node)
            else:
                self._waiting.setdefault(event.parent_id, []).append(node)
        for child in self._waiting.pop(event.run_id, []):
            self._adopt(node, child)

    def _adopt(self, parent: RunNode, child: RunNode) -> None:
        ancestor: RunNode | None = parent
        while ancestor is not None:
            if ancestor is child:
                self.problems.append(f"run {child.run_id} names run {parent.run_id} as its parent, a loop; not linked")
                return
            ancestor = ancestor.parent
        child.parent = parent
        parent.children.append(child)
        self._link_call(child)

    def _link_call(self, child: RunNode) -> None:
        """Tie a child run to the `rlm_query` sub-call that started it, once both are known."""
        parent = child.parent
        if parent is None or child.parent_call is not None:
            return
        named = child.start.parent_call_id if child.start is not None else None
        sub = parent.subs.get(named) if named is not None else None
        if sub is None:
            sub = self._child_calls.get(child.run_id)
        if sub is not None and sub.child is None and parent.subs.get(sub.call_id) is sub:
            sub.child = child
            child.parent_call = sub

    def _turn(self, run: RunNode, number: int, at: float) -> IterationNode:
        found = run.iterations.get(number)
        if found is None:
            found = run.iterations[number] = IterationNode(number=number, started_at=at)
        return found

    # Each finds the step's node, or makes it (`began`: when the step began) from its start or its end.
    def _model_call(self, event: LMCallStarted | LMCallFinished, began: float) -> ModelCallNode:
        run = self._run(event.run_id)
        found = run.calls.get(event.call_id)
        if found is None:
            found = ModelCallNode(call_id=event.call_id, iteration=event.iteration, model=event.model, started_at=began)
            run.calls[event.call_id] = found
            self._turn(run, event.iteration, event.at).calls.append(found)
        return found

    def _cell(self, event: CellStarted | CellFinished, began: float) -> CellNode:
        run = self._run(event.run_id)
        found = run.cells.get(event.cell_id)
        if found is None:
            found = run.cells[event.cell_id] = CellNode(
                cell_id=event.cell_id, iteration=event.iteration, started_at=began
            )
            self._turn(run, event.iteration, event.at).cells.append(found)
        return found

    def _sub_call(self, event: SubCallStarted | SubCallFinished, began: float) -> SubCallNode:
        run = self._run(event.run_id)
        found = run.subs.get(event.call_id)
        if found is None:
            found = SubCallNode(event.call_id, event.cell_id, event.function, event.model, started_at=began)
            run.subs[event.call_id] = found
            cell = run.cells.get(event.cell_id) if event.cell_id is not None else None
            if cell is not None:
                cell.subs.append(found)
            else:
                self._turn(run, max(run.iterations, default=0), event.at).subs.append(found)
        return found
