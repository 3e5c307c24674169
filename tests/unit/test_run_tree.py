"""Core's run tree: its shape, the usage roll-up per node, what it forgives, and the HTML display hook."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from rlm_integrations.core import result as result_module
from rlm_integrations.core.events import (
    EVENT_TYPES,
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
from rlm_integrations.core.result import RLMResult, register_html_display
from rlm_integrations.core.run_tree import RunTree, UsageTally
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.lm.protocol import TokenUsage
from rlm_integrations.viewer._sample import depth2_result

CORE = Path(result_module.__file__).parent


@pytest.fixture(scope="module")
def result() -> RLMResult:
    return depth2_result()


def usage(prompt: int, completion: int, cost: float | None) -> TokenUsage:
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, calls=1)


def hand_built() -> list[Event]:
    """A root run: one turn with a model call, and a cell that calls llm_query and starts a child run."""
    return [
        RunStarted(run_id="r", at=0.0, query="q", model="big", sub_model="small"),
        IterationStarted(run_id="r", at=1.0, iteration=1),
        LMCallStarted(run_id="r", at=1.0, call_id="c1", iteration=1, model="big"),
        LMCallFinished(
            run_id="r", at=2.0, call_id="c1", iteration=1, model="big", usage=usage(10, 5, 0.01), duration=1.0
        ),
        CellStarted(run_id="r", at=2.0, cell_id="cell1", iteration=1, code="x"),
        SubCallStarted(
            run_id="r",
            at=2.1,
            call_id="s1",
            cell_id="cell1",
            function="llm_query",
            model="small",
            prompt="p",
            prompt_chars=1,
        ),
        SubCallFinished(
            run_id="r",
            at=2.2,
            call_id="s1",
            cell_id="cell1",
            function="llm_query",
            model="small",
            usage=usage(3, 2, None),
            duration=0.1,
        ),
        SubCallStarted(
            run_id="r",
            at=2.3,
            call_id="s2",
            cell_id="cell1",
            function="rlm_query",
            model="big",
            prompt="p2",
            prompt_chars=2,
        ),
        RunStarted(
            run_id="k",
            at=2.4,
            parent_id="r",
            parent_cell_id="cell1",
            parent_call_id="s2",
            depth=1,
            query="q2",
            model="big",
            sub_model="small",
        ),
        IterationStarted(run_id="k", at=2.5, iteration=1),
        LMCallStarted(run_id="k", at=2.5, call_id="c2", iteration=1, model="big"),
        LMCallFinished(
            run_id="k", at=2.6, call_id="c2", iteration=1, model="big", usage=usage(7, 1, 0.02), duration=0.1
        ),
        IterationFinished(run_id="k", at=2.7, iteration=1, duration=0.2),
        RunFinished(run_id="k", at=2.8, status="completed", answer=1, duration=0.4, iterations=1),
        SubCallFinished(
            run_id="r",
            at=2.9,
            call_id="s2",
            cell_id="cell1",
            function="rlm_query",
            model="big",
            response="1",
            duration=0.6,
            child_run_id="k",
        ),
        CellFinished(run_id="r", at=3.0, cell_id="cell1", iteration=1, stdout="1\n", duration=1.0),
        IterationFinished(run_id="r", at=3.0, iteration=1, duration=2.0),
        RunFinished(run_id="r", at=3.1, status="completed", answer=1, duration=3.1, iterations=1),
    ]


# -- shape ---------------------------------------------------------------------------------------


def test_the_tree_nests_runs_turns_calls_cells_and_sub_calls() -> None:
    tree = RunTree.from_events(hand_built())
    root = tree.root
    assert root is not None and root.run_id == "r" and root.status == "completed"
    (turn,) = root.turns()
    assert [call.call_id for call in turn.calls] == ["c1"]
    (cell,) = turn.cells
    assert [sub.function for sub in cell.subs] == ["llm_query", "rlm_query"]
    (child,) = root.children
    assert child.parent is root and child.depth == 1 and child.query == "q2"
    assert child.parent_call is cell.subs[1] and cell.subs[1].child is child
    assert child.parent_cell is cell
    assert [run.run_id for run in root.walk()] == ["r", "k"]
    assert tree.roots == [root] and tree.problems == []


def test_the_tree_of_a_real_depth_two_run(result: RLMResult) -> None:
    tree = result.trajectory.run_tree()
    root = tree.root
    assert root is not None and root.depth == 0
    assert [child.depth for child in root.children] == [1, 1]
    assert [grand.depth for child in root.children for grand in child.children] == [2, 2]
    for child in [run for run in root.walk() if run is not root]:
        assert child.parent_call is not None and child.parent_call.function == "rlm_query"
        assert child.parent_cell is not None and child.parent_call in child.parent_cell.subs
    assert len(tree.runs) == 5 and tree.problems == []


# -- usage roll-up -------------------------------------------------------------------------------


def test_usage_rolls_up_from_calls_to_cells_turns_and_runs() -> None:
    tree = RunTree.from_events(hand_built())
    root = tree.runs["r"]
    child = tree.runs["k"]
    (turn,) = root.turns()
    (cell,) = turn.cells
    assert (cell.own_usage.calls, cell.usage.calls) == (1, 2)  # llm_query; plus the child's call
    assert (turn.own_usage.calls, turn.usage.calls) == (2, 3)
    assert (root.own_usage.prompt_tokens, root.usage.prompt_tokens) == (13, 20)
    assert child.usage == child.own_usage == UsageTally.of(usage(7, 1, 0.02))
    total = root.usage
    assert (total.calls, total.priced_calls, total.unpriced_calls) == (3, 2, 1)
    assert total.cost_usd == pytest.approx(0.03)  # the known part; one price is unknown
    assert tree.usage == total
    assert total.token_usage() == TokenUsage(prompt_tokens=20, completion_tokens=8, cost_usd=total.cost_usd, calls=3)
    by_model = tree.by_model()
    assert list(by_model) == ["big", "small"]
    assert (by_model["big"].calls, by_model["small"].unpriced_calls) == (2, 1)


def test_roll_up_matches_the_result_usage(result: RLMResult) -> None:
    tree = result.trajectory.run_tree()
    total = result.usage.total
    assert tree.root is not None
    rolled = tree.root.usage
    assert (rolled.prompt_tokens, rolled.completion_tokens, rolled.calls) == (
        total.prompt_tokens,
        total.completion_tokens,
        total.calls,
    )
    assert rolled.cost_usd == pytest.approx(total.cost_usd)
    assert {name: tally.calls for name, tally in tree.by_model().items()} == {
        name: model.calls for name, model in result.usage.by_model.items()
    }


def test_a_cost_with_no_known_price_is_none_not_zero() -> None:
    unknown = UsageTally.of(usage(1, 1, None)) + UsageTally.of(usage(2, 2, None))
    assert unknown.cost_usd is None and unknown.unpriced_calls == 2
    assert UsageTally().cost_usd == 0.0  # nothing spent is a known zero
    assert UsageTally.of(None) == UsageTally()


def test_a_running_child_counts_in_its_parents_totals_before_its_sub_call_ends() -> None:
    events = hand_built()
    cut = next(i for i, e in enumerate(events) if isinstance(e, RunFinished))  # the child has not ended
    tree = RunTree.from_events(events[:cut])
    assert tree.runs["k"].status == "unfinished"
    assert tree.runs["r"].usage.calls == 3


def test_cached_calls_are_counted_apart_like_the_result_usage() -> None:
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm import ScriptedLM

    code = "```repl\na = llm_query('alpha')\nprint(a)\n```"
    root = ScriptedLM([code, "```repl\nFINAL(a)\n```"], name="root")
    sub = ScriptedLM(lambda messages: "sub:" + messages[-1]["content"], name="sub")
    rlm = RLM(root, sub, config=RLMConfig(cache="memory", cell_timeout_s=20))
    rlm.completion("What is it?", "ctx")
    live = RunTree()
    replayed = rlm.completion("What is it?", "ctx", observers=[live])
    tree = replayed.trajectory.run_tree()
    assert tree.usage == live.usage  # fed live as an observer or built afterwards: the same tree
    assert tree.usage.calls == replayed.usage.total.calls == 0
    assert tree.usage.cached_calls == replayed.usage.cached_calls == 3


# -- what the tree forgives ----------------------------------------------------------------------


def test_ends_without_starts_still_make_nodes() -> None:
    events = [e for e in hand_built() if not isinstance(e, LMCallStarted | CellStarted | SubCallStarted)]
    tree = RunTree.from_events(events)
    (turn,) = tree.runs["r"].turns()
    (call,) = turn.calls
    assert call.start is None and call.model == "big" and call.started_at == pytest.approx(1.0)
    (cell,) = turn.cells
    assert cell.start is None and cell.started_at == pytest.approx(2.0)
    assert [sub.call_id for sub in turn.all_subs()] == ["s1", "s2"]  # made outside any known cell
    assert tree.runs["k"].parent_call is turn.subs[1]  # tied through the end's child_run_id
    assert tree.root is not None and tree.root.usage.calls == 3


def test_events_before_a_run_start_are_reported() -> None:
    events = [e for e in hand_built() if not (isinstance(e, RunStarted) and e.run_id == "k")]
    tree = RunTree.from_events(events)
    assert any("without its run_start" in problem for problem in tree.problems)
    orphan = tree.runs["k"]
    assert orphan.start is None and orphan.parent is None and orphan in tree.roots
    assert tree.root is tree.runs["r"]


def test_a_loop_of_parents_is_refused() -> None:
    events: list[Event] = [
        RunStarted(run_id="a", parent_id="b", depth=1, query="", model="m", sub_model="m"),
        RunStarted(run_id="b", parent_id="a", depth=1, query="", model="m", sub_model="m"),
    ]
    tree = RunTree.from_events(events)
    assert any("a loop" in problem for problem in tree.problems)
    assert list(tree.runs["b"].walk())  # finite
    assert tree.runs["b"].usage == UsageTally()


def test_a_child_that_starts_before_its_parent_is_adopted() -> None:
    events = hand_built()
    child_start = next(e for e in events if isinstance(e, RunStarted) and e.run_id == "k")
    tree = RunTree.from_events([child_start, *(e for e in events if e is not child_start)])
    assert tree.runs["k"].parent is tree.runs["r"]
    assert tree.runs["k"].parent_call is tree.runs["r"].subs["s2"]  # tied once the sub-call ended


def test_forget_drops_a_run_and_everything_below_it() -> None:
    tree = RunTree.from_events(hand_built())
    tree.forget("r")
    assert tree.runs == {}


def test_a_saved_trajectory_gives_the_same_tree(result: RLMResult, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    result.save(path)
    loaded = Trajectory.load(path).run_tree()
    built = RunTree.from_events(result.trajectory.events)
    assert list(loaded.runs) == list(built.runs)
    assert loaded.usage == built.usage


def test_every_event_class_is_in_the_one_table() -> None:
    (union, *_) = typing.get_args(Event)
    assert set(typing.get_args(union)) == set(EVENT_TYPES)
    assert len({cls.model_fields["kind"].default for cls in EVENT_TYPES}) == len(EVENT_TYPES)


# -- the HTML display hook -------------------------------------------------------------------------


def test_core_never_imports_the_viewer() -> None:
    offenders = [path.name for path in CORE.glob("*.py") if "rlm_integrations.viewer" in path.read_text()]
    assert offenders == []


def test_a_result_shows_what_the_registered_display_draws() -> None:
    import rlm_integrations.viewer as viewer

    result = RLMResult(status="completed", answer=1)
    try:
        register_html_display(lambda shown: f"<b>{shown.answer}</b>")
        assert result._repr_html_() == "<b>1</b>"
    finally:
        register_html_display(viewer.notebook_html)
    assert (result._repr_html_() or "").startswith("<iframe srcdoc=")


def test_without_a_registered_display_an_entry_point_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import rlm_integrations.viewer as viewer

    class Entry:
        value = "somewhere:show"
        dist = None

        def load(self) -> Any:
            return lambda shown: "from an entry point"

    asked: list[tuple[str, str]] = []

    def entry_points(*, group: str, name: str) -> list[Entry]:
        asked.append((group, name))
        return [Entry()]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    try:
        register_html_display(None)
        assert RLMResult(status="completed")._repr_html_() == "from an entry point"
        assert asked == [("rlm_integrations.display", "text/html")]
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
        register_html_display(None)
        assert RLMResult(status="completed")._repr_html_() is None  # plain text in a notebook
    finally:
        register_html_display(viewer.notebook_html)


def test_importing_the_viewer_registers_its_display() -> None:
    code = (
        "from rlm_integrations.core.result import RLMResult, register_html_display\n"
        "import rlm_integrations.core.result as r\n"
        "r.importlib.metadata.entry_points = lambda **_: []\n"
        "before = RLMResult(status='completed')._repr_html_()\n"
        "import rlm_integrations.viewer\n"
        "after = RLMResult(status='completed')._repr_html_()\n"
        "print(before is None, after.startswith('<iframe'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
