"""`same(word)`: the lines grouped by the value written after a word, only values two or more lines share."""

from __future__ import annotations

import pytest
from engine_helpers import block, conversation, make_rlm, run

from rlm_integrations.core import repl_helpers, shared_values
from rlm_integrations.core.events import CellStarted
from rlm_integrations.core.question_shape import first_step, probe_question, question_shape
from rlm_integrations.core.repl_helpers import ReplHelpers
from rlm_integrations.core.shared_values import SHOWN_CHARS, VALUE_WINDOW_CHARS, same_value_groups
from rlm_integrations.lm import ScriptedLM

_LOCKERS = [
    "Member Ada Lind joined in 2019; her locker code is 192394.",
    "Member Bo Serra joined in 2021; his locker code is 557120.",
    "Member Cleo Marsh joined in 2020; her locker code is 192394.",
    "The gym closes at nine on Sundays.",
    "Member Dag Holm joined in 2018; his locker code is 310086.",
]
"""One shared code (Ada and Cleo); the year before the word is not the value."""


# --------------------------------------------------------------------------- same_value_groups


def test_lines_sharing_the_first_digit_token_after_the_word_are_grouped() -> None:
    assert same_value_groups(_LOCKERS, "code") == [[_LOCKERS[0], _LOCKERS[2]]]


def test_values_compare_case_insensitively_with_a_trailing_dot_left_out() -> None:
    items = ["badge PIN AB800431.", "Visitor badge pin ab800431 issued at noon", "badge PIN 777."]
    assert same_value_groups(items, "pin") == [items[:2]]


def test_groups_come_largest_first_and_unshared_values_are_left_out() -> None:
    items = [
        "room 12 Ada",
        "room 40 Bo",
        "room 40 Cleo",
        "room 40 Dag",
        "room 12 Eve",
        "room 7 Finn",
    ]
    assert same_value_groups(items, "room") == [
        ["room 40 Bo", "room 40 Cleo", "room 40 Dag"],
        ["room 12 Ada", "room 12 Eve"],
    ]


def test_lines_without_the_word_are_skipped() -> None:
    items = ["door code 4411", "table 4411", "gate code 4411", "fee 4411 paid"]
    assert same_value_groups(items, "code") == [["door code 4411", "gate code 4411"]]


def test_the_word_matches_whole_words_only() -> None:
    items = ["spinning class 800431", "spin bike 800431", "pins box 800431", "badge PIN 800431.", "badge pin 12."]
    assert same_value_groups(items, "pin") == []
    items.append("pin 800431 reissued")
    assert same_value_groups(items, "pin") == [["badge PIN 800431.", "pin 800431 reissued"]]


def test_without_a_digit_in_the_window_the_next_word_is_the_value() -> None:
    items = ["Ada plays for team north.", "Bo plays for team South", "Cleo plays for Team North", "Dag has no team"]
    assert same_value_groups(items, "team") == [[items[0], items[2]]]


def test_a_digit_beyond_the_window_is_not_the_value() -> None:
    far = " " * VALUE_WINDOW_CHARS
    items = [f"team north{far}42", f"team south{far}42"]
    assert same_value_groups(items, "team") == []  # north and south, not the far 42
    near = [f"team north 42{far}", f"team south 42{far}"]
    assert same_value_groups(near, "team") == [near]


def test_a_word_followed_by_a_different_name_on_every_line_gives_no_group() -> None:
    items = ["member Ada paid", "member Bo paid", "member Cleo paid", "member Dag paid"]
    assert same_value_groups(items, "member") == []


def test_a_long_line_is_shown_cut_around_the_word() -> None:
    filler = "lorem ipsum " * 100
    items = [f"{filler}locker code 192394 {filler}", f"{filler}locker code 192394 {filler}"]
    (group,) = same_value_groups(items, "code")
    assert len(group) == 2
    for shown in group:
        assert shown.startswith("...") and shown.endswith("...")
        assert len(shown) == SHOWN_CHARS + 6
        assert "code 192394" in shown


def test_a_short_line_is_shown_whole() -> None:
    assert same_value_groups(["x code 1", "y code 1"], "code") == [["x code 1", "y code 1"]]


def test_at_most_max_groups_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_values, "MAX_GROUPS", 2)
    items = [f"code {value} line {n}" for value in (1, 2, 3, 4) for n in range(value + 1)]
    groups = same_value_groups(items, "code")
    assert [len(lines) for lines in groups] == [5, 4]
    assert groups[0][0] == "code 4 line 0"


@pytest.mark.parametrize("word", ["", "   "])
def test_an_empty_word_is_a_value_error(word: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        same_value_groups(_LOCKERS, word)


# --------------------------------------------------------------------------- ReplHelpers.same


def _helpers(text: str) -> ReplHelpers:
    return ReplHelpers(text, _no_sub_call, max_prompt_chars=1_000)


async def test_same_groups_the_context_lines() -> None:
    helpers = _helpers("\n".join(_LOCKERS))
    assert await helpers.same("code") == [[_LOCKERS[0], _LOCKERS[2]]]
    assert helpers.notes.take() == []


async def test_same_with_nothing_shared_records_a_note_that_says_how_to_look() -> None:
    helpers = _helpers("\n".join(_LOCKERS))
    assert await helpers.same("member") == []
    (note,) = helpers.notes.take()
    assert "same('member') found no value" in note and "grep('member')[:3]" in note


async def test_same_at_the_cap_records_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_values, "MAX_GROUPS", 2)
    monkeypatch.setattr(repl_helpers, "SAME_GROUPS_CAP", 2)  # the helper's copy of the cap, for its note
    helpers = _helpers("\n".join(["code 1 a", "code 1 b", "code 2 a", "code 2 b", "code 3 a", "code 3 b"]))
    assert len(await helpers.same("code")) == 2
    (note,) = helpers.notes.take()
    assert "stopped at 2 groups" in note


async def test_same_of_a_word_that_is_not_a_str_is_a_type_error() -> None:
    helpers = _helpers("\n".join(_LOCKERS))
    with pytest.raises(TypeError, match="word must be a str"):
        await helpers.same(192394)


async def test_same_searches_the_text_it_is_given_instead_of_the_context() -> None:
    helpers = _helpers("nothing about lockers here")
    assert await helpers.same("code", text="\n".join(_LOCKERS)) == [[_LOCKERS[0], _LOCKERS[2]]]
    assert await helpers.same("code", text=_LOCKERS) == [[_LOCKERS[0], _LOCKERS[2]]]
    assert helpers.notes.take() == []


async def test_same_is_one_of_the_repl_functions() -> None:
    helpers = _helpers("\n".join(_LOCKERS))
    assert await helpers.functions()["same"]("code") == [[_LOCKERS[0], _LOCKERS[2]]]


# --------------------------------------------------------------------------- the opening step in a run

GROUP = "Which members share the same locker code? List every pair."
STEP = "groups = same('code', names=True)\nprint(len(groups))\nprint(groups)"
OPENING = "A first step for this question, already run:"

_CLUB = "\n".join(
    ["The club house opened its doors at dawn and the coaches walked the long hall to the courts."] * 5
    + [
        "Member Ada Lind joined in 2019; her locker code is 192394.",
        "Member Bo Serra joined in 2021; his locker code is 557120.",
        "Member Cleo Marsh joined in 2020; her locker code is 810332.",
        "Member Dag Holm joined in 2018; his locker code is 310086.",
        "Member Eve Rask joined in 2022; her locker code is 640218.",
        "Member Finn Oder joined in 2017; his locker code is 192394.",
        "Member Gus Tamm joined in 2016; his locker code is 902771.",
        "Member Hana Vik joined in 2023; her locker code is 118840.",
        "Member Ivo Pell joined in 2015; his locker code is 725519.",
        "Member Juno Ek joined in 2014; her locker code is 433007.",
    ]
)
"""Longer than the first message's preview; Ada and Finn share 192394 and no other code repeats."""


async def test_a_small_model_is_shown_the_group_questions_first_step_already_run() -> None:
    probe = probe_question(GROUP, _CLUB)
    assert question_shape(GROUP, probe) == "group"
    assert first_step("group", probe) == STEP
    root = ScriptedLM([block("FINAL(['Ada Lind', 'Finn Oder'])")], name="root")
    root.prefers_worked_example = True
    rlm, root, _ = make_rlm(root)
    result = await run(rlm, GROUP, _CLUB)
    assert result.status == "completed" and result.answer == ["Ada Lind", "Finn Oder"]
    assert len(root.calls) == 1
    first = next(m["content"] for m in conversation(root.calls[0]) if m["role"] == "user")
    assert f"{OPENING}\n```repl\n{STEP}\n```" in first
    output = first.split(OPENING)[1]
    assert "1\n[['Ada', 'Finn']]" in output and "Bo" not in output  # each line's first word no other line holds
    opening = [e for e in result.trajectory.events if isinstance(e, CellStarted) and e.iteration == 0]
    assert [e.code for e in opening] == [STEP]


async def _no_sub_call(function: str, prompt: str, max_tokens: int | None = None) -> str:
    raise AssertionError("same makes no model call")


async def test_same_with_names_gives_each_lines_first_word_no_other_line_holds() -> None:
    lines = [
        "On 4 May ana.silva12 came; the room number given was 214.",
        "On 9 May li.wong30 came; the room number given was 508.",
        "On 2 June tom.berg7 came; the room number given was 214.",
        "On 3 June kim.dahl3 came; the room number given was 311.",
    ]
    helpers = _helpers("\n".join(lines))
    # '4' and '2' occur once too, but a number is a name only when no word is
    assert await helpers.same("room", names=True) == [["ana.silva12", "tom.berg7"]]
    assert await helpers.same("room") == [[lines[0], lines[2]]]


def test_a_record_with_no_word_of_its_own_is_given_whole() -> None:
    lines = ["room 214 booked", "room 214 booked", "room 7 open"]
    assert same_value_groups(lines, "room", names=True) == [["room 214 booked", "room 214 booked"]]
