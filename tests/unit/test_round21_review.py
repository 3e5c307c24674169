"""Review of round 21: `infer_reference` on ties and multi-line items, and the opening step beside
user tools and inputs, `timeout_s`, a failing helper, sessions and the run tree."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from engine_helpers import block, config, conversation, fake_repls, make_rlm, run

from rlm_integrations import RLM
from rlm_integrations.core import repl_helpers
from rlm_integrations.core.events import CellStarted
from rlm_integrations.core.reference_chain import InferredReference, infer_reference
from rlm_integrations.core.resume import ResumableRun
from rlm_integrations.core.run_tree import RunTree
from rlm_integrations.lm import Message, ScriptedLM
from rlm_integrations.viewer import build_view

_WATER = "\n".join(
    ["The road bent north and the carts passed the old gate of the valley town."] * 5
    + [
        "Town BEX draws its water from Lake Orva.",
        "Town KELL draws its water from town BEX.",
        "The market opened at dawn.",
        "Town ARNO draws its water from town KELL.",
    ]
)
CHAIN = "Which towns get their water from Lake Orva, directly or through other towns? List their names."
OPENING = "A first step for this question, already run:"


def _small(replies: list[str]) -> ScriptedLM:
    root = ScriptedLM(replies, name="root")
    root.prefers_worked_example = True
    return root


def _first_user(messages: list[Message]) -> str:
    return next(m["content"] for m in conversation(messages) if m["role"] == "user")


# --------------------------------------------------------------------------- infer_reference


def test_two_equally_ranked_names_do_not_crash_and_the_earlier_wins() -> None:
    # 'QQ7' and 'ZZ9' are both name-like, both once in the text, both 7 characters from 'Orva'
    found = infer_reference(["QQ7 xx Orva y ZZ9"], "Orva")
    assert found is not None and found.name == "QQ7"


def test_a_sentence_after_a_line_break_keeps_its_first_word() -> None:
    found = infer_reference(["intro line\nKX7 feeds Orva."], "Orva")
    assert found == InferredReference(r"(\w(?:[\w.-]*\w)?)\s+feeds\s+{}", "KX7 feeds Orva.", "KX7")


@pytest.mark.parametrize("start", ["(", "[x]", "a+b", "\\", "*"])
def test_regex_characters_in_the_start_are_literal(start: str) -> None:
    found = infer_reference(["", f"{start} links BEX7", ""], start)
    assert found is not None and found.name == "BEX7"


def test_a_ten_megabyte_line_is_read_well_under_the_follow_limit() -> None:
    line = "word " * 2_000_000 + "Town BEX draws its water from Orva."
    began = time.monotonic()
    found = infer_reference([line], "Orva")
    assert found is not None and found.name == "BEX"
    assert time.monotonic() - began < 10


# --------------------------------------------------------------------------- the opening step


async def test_a_user_tool_named_like_the_step_is_not_run_before_the_first_turn() -> None:
    calls: list[tuple[object, ...]] = []

    def follow(*args: object) -> str:
        """Follow an account (a side effect the loop must not cause on its own)."""
        calls.append(args)
        return "followed"

    root = _small([block("FINAL(['BEX'])")] * 2)
    rlm = RLM(root, ScriptedLM(["unused"], name="sub"), config=config(), repl=fake_repls, tools={"follow": follow})
    result = await run(rlm, CHAIN, _WATER)
    assert result.status == "completed", result.error
    assert calls == []
    assert OPENING not in _first_user(root.calls[0])


async def test_an_input_named_like_the_steps_variable_is_not_overwritten() -> None:
    rlm, root, _ = make_rlm(_small([block("FINAL(found)")]))
    result = await rlm.prepare().execute(CHAIN, _WATER, variables={"found": "the caller's value"})
    assert result.answer == "the caller's value"
    assert OPENING not in _first_user(root.calls[0])


async def test_the_opening_step_stops_at_timeout_s(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(items: Sequence[str], start: str) -> InferredReference | None:
        time.sleep(3)
        return None

    monkeypatch.setattr(repl_helpers, "infer_reference", slow)
    rlm, _, _ = make_rlm(_small([block("FINAL('too late')")]), timeout_s=1.0)
    began = time.monotonic()
    result = await run(rlm, CHAIN, _WATER)
    assert time.monotonic() - began < 2.5
    assert result.status == "timeout"


async def test_a_helper_error_in_the_opening_step_is_shown_and_the_run_goes_on() -> None:
    text = _WATER.replace("Town BEX draws its water from Lake Orva.", "Orva")  # no line says what 'orva' feeds
    rlm, root, _ = make_rlm(_small([block("FINAL(['BEX'])")]))
    result = await run(rlm, CHAIN, text)
    assert result.status == "completed" and result.answer == ["BEX"]
    first = _first_user(root.calls[0])
    assert OPENING in first and "ValueError" in first and "no line mentions 'orva'" in first


async def test_only_a_sessions_first_ask_gets_the_opening_step() -> None:
    rlm, root, _ = make_rlm(_small([block("FINAL(found)")] * 2))
    session = rlm.session(_WATER)
    try:
        first = await session.aask(CHAIN)
        second = await session.aask(CHAIN)
    finally:
        await session.aclose()
    assert first.answer == ["BEX", "KELL", "ARNO"] and second.answer == ["BEX", "KELL", "ARNO"]
    assert OPENING in _first_user(root.calls[0]) and OPENING not in _first_user(root.calls[1])
    assert not [e for e in second.trajectory.events if isinstance(e, CellStarted) and e.iteration == 0]


async def test_the_run_tree_puts_the_opening_cell_in_turn_zero() -> None:
    rlm, _, _ = make_rlm(_small([block("FINAL(found)")]))
    result = await run(rlm, CHAIN, _WATER)
    root = next(iter(RunTree.from_events(result.trajectory.events).runs.values()))
    assert [turn.number for turn in root.turns()] == [0, 1]
    assert [len(turn.cells) for turn in root.turns()] == [1, 1] and not root.turns()[0].calls
    assert result.iterations == 1


async def test_a_resumed_run_replays_past_the_opening_step(tmp_path: Path) -> None:
    replies = [block("print(len(found))"), block("FINAL(found)")]
    rlm, _, _ = make_rlm(_small(replies))
    first = await ResumableRun(rlm, tmp_path).acompletion(CHAIN, _WATER)
    again, root, _ = make_rlm(_small(replies))
    second = await ResumableRun(again, tmp_path).acompletion(CHAIN, _WATER)
    assert first.answer == second.answer == ["BEX", "KELL", "ARNO"]
    assert root.calls == []  # both turns were cache hits: the opening step's output is the same on replay
    journal = ResumableRun(again, tmp_path).journal
    assert journal is not None and journal.attempts[-1].diverged_at is None


def test_a_window_cut_mid_text_does_not_offer_a_word_fragment_as_the_next_name() -> None:
    # no sentence stop within reach: the window's edges fall inside words ("xQ7zz..." cut to "Q7zz...")
    filler = "xQ7zz" * 60
    line = f"{filler} KX7 feeds Orva {filler}"
    inferred = infer_reference([line, "LM4 feeds KX7"], "Orva")
    assert inferred is not None and inferred.name == "KX7"


async def test_the_viewer_counts_the_first_step_apart_from_the_turns_and_gives_it_an_end() -> None:
    lines = [
        "The road bent north. Town BEX draws its water from Lake Orva. Fog lay on the hills.",
        "Town KELL draws its water from town BEX since the drought.",
        "Town ARNO draws its water from town KELL.",
    ]
    root = ScriptedLM([block("FINAL(['BEX', 'KELL', 'ARNO'])")], name="root")
    root.prefers_worked_example = True
    rlm, _, _ = make_rlm(root)
    question = "Which towns get their water from Lake Orva, directly or through other towns? List their names."
    result = await run(rlm, question, "\n".join(lines) + "\n" + "Carts and mules passed the old gate. " * 40)
    assert any(isinstance(e, CellStarted) and e.iteration == 0 for e in result.trajectory.events)
    view = build_view(result.trajectory.events)
    assert view["summary"]["iterations"] == result.iterations == 1
    (run_view,) = view["runs"]
    first = next(item for item in run_view["iterations"] if item["n"] == 0)
    assert first["t1"] is not None and first["duration"] is not None and first["duration"] >= 0
