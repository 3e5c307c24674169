"""The question shape's first step: the cell written for it (`first_step`), run by the loop for a
model shown worked examples (the opening step), and named when an answer comes before any code."""

from __future__ import annotations

import pytest
from engine_helpers import block, conversation, make_rlm, run

from rlm_integrations.core import prompts
from rlm_integrations.core.events import CellStarted
from rlm_integrations.core.question_shape import Probe, Shape, first_step, probe_question, question_shape
from rlm_integrations.lm import Message, ScriptedLM

_WATER = "\n".join(
    ["The road bent north and the carts passed the old gate of the valley town."] * 5
    + [
        "Lake Sell is cold and deep; the lake feeds no town.",
        "Town BEX draws its water from Lake Orva.",
        "Town KELL draws its water from town BEX.",
        "The market opened at dawn.",
        "Town ARNO draws its water from town KELL.",
        "Town DUNE draws its water from Lake Sell.",
    ]
)
"""Longer than the first message's preview, so the model does not see it whole; 'orva' is the rarest word."""

CHAIN = "Which towns get their water from Lake Orva, directly or through other towns? List their names."
LOOKUP = "Where does Town DUNE draw its water from?"
STEP = "found = follow('orva')\nprint(found)"
OPENING = "A first step for this question, already run:"

_PROBE = Probe(lines=100, found={"town": 60, "oslo": 8, "unpaid": 20, "order": 100}, missing=["late"])
"""'order' is in every line: it picks no line out; 'oslo' is the rarest."""


# --------------------------------------------------------------------------- first_step


def test_a_chain_follows_from_the_rarest_word_found() -> None:
    assert first_step("chain", _PROBE) == "found = follow('oslo')\nprint(found)"
    probe = probe_question(CHAIN, _WATER)
    assert question_shape(CHAIN, probe) == "chain"
    assert first_step("chain", probe) == STEP


def test_a_list_greps_the_words_that_pick_lines_out_and_prints_every_hit() -> None:
    assert _PROBE.selective == ["town", "oslo", "unpaid"]
    step = first_step("list", _PROBE)
    assert step == "hits = grep('town', 'oslo', 'unpaid')\nprint(len(hits))\nfor hit in hits:\n    print(hit)"


def test_a_count_greps_the_words_that_pick_lines_out_and_prints_the_count_and_a_few() -> None:
    assert first_step("count", _PROBE) == "hits = grep('town', 'oslo', 'unpaid')\nprint(len(hits))\nprint(hits[:3])"


def test_with_no_selective_word_the_rarest_word_is_grepped() -> None:
    probe = Probe(lines=3, found={"order": 3, "city": 3}, missing=[])
    assert probe.selective == []
    step = first_step("count", probe)
    assert step is not None and step.startswith("hits = grep('city')\n")


def test_a_group_calls_same_with_the_last_word_found_and_prints_every_group() -> None:
    step = first_step("group", _PROBE)  # 'order' is in every line, but the attribute is named last
    assert step == "groups = same('order', names=True)\nprint(len(groups))\nprint(groups)"
    assert first_step("group", None) is None
    assert first_step("group", Probe(lines=10, found={}, missing=["code"])) is None


@pytest.mark.parametrize("shape", ["lookup", "count_reading"])
def test_shapes_no_single_call_starts_have_no_first_step(shape: Shape) -> None:
    assert first_step(shape, _PROBE) is None


@pytest.mark.parametrize("shape", ["chain", "list", "count", "lookup"])
def test_no_first_step_without_a_probe_or_a_word_found(shape: Shape) -> None:
    assert first_step(shape, None) is None
    assert first_step(shape, Probe(lines=10, found={}, missing=["orva"])) is None


def test_the_unchecked_answer_note_names_the_step_in_a_repl_block() -> None:
    note = prompts.unchecked_answer_note(["BEX"], STEP)
    assert f"start with:\n```repl\n{STEP}\n```" in note and "['BEX']" in note and "FINAL again" in note
    plain = prompts.unchecked_answer_note(["BEX"])
    assert "```repl" not in plain and "checks the whole context" in plain


# --------------------------------------------------------------------------- the opening step in a run


def _small(replies: list[str]) -> ScriptedLM:
    root = ScriptedLM(replies, name="root")
    root.prefers_worked_example = True
    return root


def _first_user(messages: list[Message]) -> str:
    return next(m["content"] for m in conversation(messages) if m["role"] == "user")


async def test_a_small_model_is_shown_the_chain_questions_first_step_already_run() -> None:
    rlm, root, _ = make_rlm(_small([block("FINAL(['BEX', 'KELL', 'ARNO'])")]))
    result = await run(rlm, CHAIN, _WATER)
    assert result.status == "completed" and result.answer == ["BEX", "KELL", "ARNO"]
    assert len(root.calls) == 1  # the output was seen: the answer is not questioned as typed in
    first = _first_user(root.calls[0])
    assert first.startswith(f"Question: {CHAIN}")
    assert f"{OPENING}\n```repl\n{STEP}\n```" in first
    assert "['BEX', 'KELL', 'ARNO']" in first and "DUNE" not in first.split(OPENING)[1]
    assert "Note: follow('orva') read the references from the line 'Town BEX draws its water from Lake Orva.'" in first
    assert first.endswith("Otherwise write the next ```repl block.")
    opening = [e for e in result.trajectory.events if isinstance(e, CellStarted) and e.iteration == 0]
    assert [e.code for e in opening] == [STEP]


async def test_the_same_code_again_gets_the_repeated_code_note() -> None:
    rlm, root, _ = make_rlm(_small([block(STEP), block("FINAL(found)")]))
    result = await run(rlm, CHAIN, _WATER)
    assert result.answer == ["BEX", "KELL", "ARNO"]  # the opening step's variable is there for the model
    feedback = conversation(root.calls[1])[-1]["content"]
    assert prompts.repeated_code_note() in feedback


async def test_different_code_after_the_opening_step_gets_no_repeated_code_note() -> None:
    rlm, root, _ = make_rlm(_small([block("print(len(found))"), block("FINAL(found)")]))
    await run(rlm, CHAIN, _WATER)
    feedback = conversation(root.calls[1])[-1]["content"]
    assert "\n3\n" in f"\n{feedback}" and prompts.repeated_code_note() not in feedback


async def test_a_model_not_shown_worked_examples_runs_its_own_first_step() -> None:
    rlm, root, _ = make_rlm([block("FINAL(follow('orva'))")])
    result = await run(rlm, CHAIN, _WATER)
    assert result.answer == ["BEX", "KELL", "ARNO"]
    assert OPENING not in _first_user(root.calls[0])
    assert all(e.iteration != 0 for e in result.trajectory.events if isinstance(e, CellStarted))


async def test_a_lookup_gets_no_opening_step() -> None:
    assert question_shape(LOOKUP, probe_question(LOOKUP, _WATER)) == "lookup"
    rlm, root, _ = make_rlm(_small([block("FINAL('Lake Sell')")]))
    result = await run(rlm, LOOKUP, _WATER)
    assert result.answer == "Lake Sell"
    assert OPENING not in _first_user(root.calls[0])
    assert not [e for e in result.trajectory.events if isinstance(e, CellStarted) and e.iteration == 0]


async def test_a_context_shown_whole_gets_no_opening_step() -> None:
    short = "Town BEX draws its water from Lake Orva.\nTown KELL draws its water from town BEX."
    rlm, root, _ = make_rlm(_small([block("FINAL(['BEX', 'KELL'])")]))
    await run(rlm, CHAIN, short)
    assert OPENING not in _first_user(root.calls[0])


async def test_an_answer_typed_in_before_any_code_is_told_the_call_to_start_from() -> None:
    rlm, root, _ = make_rlm(["FINAL(['BEX'])", block("FINAL(follow('orva'))")])
    result = await run(rlm, CHAIN, _WATER)
    assert result.answer == ["BEX", "KELL", "ARNO"]
    feedback = conversation(root.calls[1])[-1]["content"]
    assert "comes before any code ran" in feedback and f"start with:\n```repl\n{STEP}\n```" in feedback
