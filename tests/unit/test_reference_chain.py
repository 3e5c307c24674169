"""`follow(start, pattern)`: the names reached from a start through references, hop by hop."""

from __future__ import annotations

import pytest
from engine_helpers import block, make_rlm, run

from rlm_integrations.core import reference_chain, repl_helpers
from rlm_integrations.core.reference_chain import (
    SPAN_CHARS,
    InferredReference,
    ReferencePattern,
    follow_references,
    infer_reference,
)
from rlm_integrations.core.repl_helpers import HELPER_DOCS, ReplHelpers

_RULER_LIKE = [
    "VAR QWERT = 53233.",
    "Some prose about the weather. VAR ASDFG = VAR QWERT. More prose.",
    "VAR ZXCVB = VAR ASDFG.",
    "VAR POIUY = 11111.",
    "VAR LKJHG = VAR POIUY.",
    "VAR QWERTY = 53233.",  # a second root with a look-alike name: reached, but its name does not reach QWERT's hop
]

_HELD_OUT_WORDING = [
    "Let ABCDE equal 53233.",
    "Let FGHIJ equal ABCDE.",
    "Let KLMNO equal FGHIJ.",
    "Let PQRST equal 532330.",  # the start as a prefix of a longer number: not reached
    "Let UVWXY equal ABCDEF.",  # a longer name that starts with a reached one: not reached
]


def test_follows_a_chain_whose_hops_carry_a_type_word_the_pattern_does_not_name() -> None:
    found = follow_references(_RULER_LIKE, "53233", ReferencePattern(r"VAR (\w+) = {}"))
    assert found == ["QWERT", "QWERTY", "ASDFG", "ZXCVB"]


def test_whole_names_only_and_the_start_is_left_out() -> None:
    found = follow_references(_HELD_OUT_WORDING, "53233", ReferencePattern(r"Let (\w+) equal {}"))
    assert found == ["ABCDE", "FGHIJ", "KLMNO"]


def test_case_is_ignored_but_names_keep_their_spelling() -> None:
    found = follow_references(_HELD_OUT_WORDING, "53233", ReferencePattern(r"let (\w+) EQUAL {}\."))
    assert found == ["ABCDE", "FGHIJ", "KLMNO"]


def test_cycles_end_and_each_name_is_reported_once() -> None:
    lines = ["A1 follows B1.", "B1 follows A1.", "C1 follows A1.", "C1 follows B1."]
    assert follow_references(lines, "A1", ReferencePattern(r"(\w+) follows {}")) == ["B1", "C1"]


def test_several_references_on_one_line_are_all_taken() -> None:
    lines = ["Town KELL draws its water from Lake Orva; Town ARNO draws its water from Lake Orva too."]
    found = follow_references(lines, "Orva", ReferencePattern(r"Town (\w+) draws its water from {}"))
    assert found == ["KELL", "ARNO"]


def test_special_characters_in_a_name_are_literal() -> None:
    lines = ["x depends on a.b+c", "y depends on x", "z depends on aXb+c"]
    assert follow_references(lines, "a.b+c", ReferencePattern(r"(\w+) depends on {}")) == ["x", "y"]


def test_a_pattern_with_a_quantifier_in_braces_still_works() -> None:
    lines = ["Let ABCDE equal 53233.", "Let FGHIJ equal ABCDE."]
    assert follow_references(lines, "53233", ReferencePattern(r"Let ([A-Z]{5}) equal {}")) == ["ABCDE", "FGHIJ"]


def test_a_chain_longer_than_the_cap_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_chain, "MAX_NAMES", 25)
    lines = [f"n{i} after n{i - 1}" for i in range(1, 100)]
    found = follow_references(lines, "n0", ReferencePattern(r"(\w+) after {}"))
    assert found == [f"n{i}" for i in range(1, 26)]


def test_the_cap_holds_when_one_line_reaches_many_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_chain, "MAX_NAMES", 5)
    lines = [" ".join(f"n{i} after root." for i in range(40))]
    assert follow_references(lines, "root", ReferencePattern(r"(\w+) after {}")) == [f"n{i}" for i in range(5)]


def test_a_name_is_not_matched_as_the_tail_of_a_longer_word() -> None:
    lines = ["VAR B = VAR XA.", "VAR C = 1 + A."]
    assert follow_references(lines, "A", ReferencePattern(r"VAR (\w+) = .*{}")) == ["C"]


def test_a_named_group_is_the_next_name() -> None:
    lines = ["Let ABCDE equal 53233.", "Let FGHIJ equal ABCDE."]
    assert follow_references(lines, "53233", ReferencePattern(r"Let (?P<next>\w+) equal {}")) == ["ABCDE", "FGHIJ"]


def test_a_chain_inside_one_long_line_is_followed_across_windows() -> None:
    filler = "word " * (reference_chain.WINDOW_CHARS // 2)
    line = filler.join(["VAR A = 7.", "VAR B = VAR A.", "VAR C = VAR B.", ""])
    assert len(line) > 3 * reference_chain.WINDOW_CHARS
    assert follow_references([line], "7", ReferencePattern(r"VAR (\w+) = {}")) == ["A", "B", "C"]


def test_a_search_that_runs_too_long_stops_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_chain, "MAX_SECONDS", -1.0)
    lines = ["VAR A = 7.", "VAR B = VAR A."]
    with pytest.raises(ValueError, match="too loose") as caught:
        follow_references(lines, "7", ReferencePattern(r"VAR (\w+) = {}"))
    assert "names so far" in str(caught.value) and "instead of .*" in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"VAR (\w+) = 53233", "needs {} where the current name goes"),
        (r"VAR \w+ = {}", "exactly one group"),
        (r"VAR (\w+) = (VAR )?{}", "has 2"),
        (r"VAR (\w+ = {}", "not a valid regular expression"),
        (r"VAR (\w+) = [{}]", "inside [...]"),
    ],
)
def test_a_bad_pattern_is_refused_with_the_fix(pattern: str, words: str) -> None:
    with pytest.raises(ValueError, match="follow") as caught:
        ReferencePattern(pattern)
    assert words in str(caught.value)


# --------------------------------------------------------------------------- in a run


async def test_follow_answers_a_chain_question_in_one_line_of_repl_code() -> None:
    rlm, _, sub = make_rlm([block("FINAL(follow('53233', r'Let (\\w+) equal {}'))")])
    result = await run(rlm, "Which names end up equal to 53233?", "\n".join(_HELD_OUT_WORDING))
    assert result.status == "completed", result.error
    assert result.answer == ["ABCDE", "FGHIJ", "KLMNO"]
    assert sub.calls == []  # no model call: following references is code


async def test_follow_that_finds_nothing_says_how_to_fix_the_pattern_in_the_feedback() -> None:
    replies = [block("print(follow('53233', r'VAR (\\w+) = {}'))"), block("FINAL([])")]
    rlm, root, _ = make_rlm(replies)
    await run(rlm, "Which names end up equal to 53233?", "\n".join(_HELD_OUT_WORDING))
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "follow('53233'" in feedback and "found nothing" in feedback and "grep('53233')" in feedback


async def test_a_bad_pattern_is_an_error_in_the_cell_and_the_run_goes_on() -> None:
    replies = [block("print(follow('53233', r'Let (\\w+) equal 53233'))"), block("FINAL('done')")]
    rlm, root, _ = make_rlm(replies)
    result = await run(rlm, "Which names end up equal to 53233?", "\n".join(_HELD_OUT_WORDING))
    assert result.status == "completed" and result.answer == "done"
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "ValueError" in feedback and "needs {} where the current name goes" in feedback


def test_the_system_prompt_documents_follow_with_an_example() -> None:
    doc = HELPER_DOCS["follow"]
    assert "follow('Orva', r'Town (\\w+) draws its water from {}')" in doc


async def test_follow_that_stops_at_the_cap_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_chain, "MAX_NAMES", 2)
    monkeypatch.setattr(repl_helpers, "MAX_NAMES", 2)

    async def no_sub_call(function: str, prompt: str, max_tokens: int | None = None) -> str:
        raise AssertionError("follow makes no model call")

    helpers = ReplHelpers("\n".join(_HELD_OUT_WORDING), no_sub_call, max_prompt_chars=1_000)
    assert await helpers.follow("53233", r"Let (\w+) equal {}") == ["ABCDE", "FGHIJ"]
    (note,) = helpers.notes.take()
    assert "stopped at 2 names" in note


# --------------------------------------------------------------------------- the pattern read off the text

_WATER = [
    "Lake Orva is cold and deep.",  # a prose mention of the start before the reference line
    "The road bent north past the mill.",
    "Town BEX draws its water from Lake Orva.",
    "Town KELL draws its water from town BEX.",
    "Town ARNO draws its water from town KELL.",
    "Town DUNE draws its water from the river Sell.",
]


def _inferred(items: list[str], start: str) -> InferredReference:
    inferred = infer_reference(items, start)
    assert inferred is not None
    return inferred


@pytest.mark.parametrize(
    ("items", "start", "name", "names"),
    [
        (_RULER_LIKE[:5], "53233", "QWERT", ["QWERT", "ASDFG", "ZXCVB"]),
        (_HELD_OUT_WORDING, "53233", "ABCDE", ["ABCDE", "FGHIJ", "KLMNO"]),
        (
            ["Orva supplies BEX.", "BEX supplies KELL.", "KELL supplies ARNO.", "ZED supplies ARNO."],
            "Orva",
            "BEX",
            ["BEX", "KELL", "ARNO"],
        ),  # the name after the start
    ],
)
def test_the_pattern_is_read_off_the_line_that_mentions_the_start(
    items: list[str], start: str, name: str, names: list[str]
) -> None:
    inferred = _inferred(items, start)
    assert inferred.name == name and start in inferred.line and name in inferred.line
    assert "{}" in inferred.pattern
    assert follow_references(items, start, ReferencePattern(inferred.pattern)) == names


def test_the_relation_words_are_in_the_pattern_in_the_order_the_line_writes_them() -> None:
    before = _inferred(_HELD_OUT_WORDING, "53233").pattern
    assert before.endswith(r"\s+equal\s+{}") and before.index("equal") > before.index(")")
    after = _inferred(["Orva supplies BEX.", "BEX supplies KELL."], "Orva").pattern
    assert after.startswith(r"{}\s+supplies\s+(")


def test_the_type_word_before_the_start_is_neither_the_name_nor_the_relation() -> None:
    items = ["Town BEX draws its water from Lake Orva.", "Town KELL draws its water from town BEX."]
    inferred = _inferred(items, "Orva")
    assert inferred.name == "BEX"
    assert "Lake" not in inferred.pattern and "Town" not in inferred.pattern
    assert "draws" in inferred.pattern and inferred.pattern.endswith(r"from\s+{}")
    # the pattern without 'Lake' still takes the next hop, written with another type word ('town BEX')
    assert follow_references(items, "Orva", ReferencePattern(inferred.pattern)) == ["BEX", "KELL"]


def test_a_prose_mention_of_the_start_before_the_reference_line_does_not_win() -> None:
    inferred = _inferred(_WATER, "Orva")
    assert inferred.line == "Town BEX draws its water from Lake Orva." and inferred.name == "BEX"
    assert follow_references(_WATER, "Orva", ReferencePattern(inferred.pattern)) == ["BEX", "KELL", "ARNO"]


def test_the_start_is_found_whatever_its_case() -> None:
    inferred = _inferred(_WATER, "orva")
    assert inferred.name == "BEX"
    assert follow_references(_WATER, "orva", ReferencePattern(inferred.pattern)) == ["BEX", "KELL", "ARNO"]


@pytest.mark.parametrize(
    ("items", "start"),
    [
        (["Orva", "Nothing else is said."], "Orva"),  # mentioned, but alone on its line
        (["Lake Orva.", "BEX is a town."], "Orva"),  # only its type word beside it
        (["Let ABCDE equal 53233.", "Let FGHIJ equal ABCDE."], "nowhere"),  # never mentioned
        (["Let ABCDE equal 153233.", "Let FGHIJ equal X53233."], "53233"),  # only the tail of longer words
        (["Let ABCDE equal 53233-7."], "53233"),  # the head of a dashed name
        ([], "Orva"),
    ],
)
def test_no_pattern_without_a_line_that_mentions_the_start_beside_another_word(items: list[str], start: str) -> None:
    assert infer_reference(items, start) is None


def test_a_start_as_the_tail_of_a_longer_word_is_not_the_line_used() -> None:
    items = ["Let QQQQQ equal X53233.", "Let ABCDE equal 53233.", "Let FGHIJ equal ABCDE."]
    inferred = _inferred(items, "53233")
    assert inferred.line == "Let ABCDE equal 53233." and inferred.name == "ABCDE"


def test_a_long_single_line_is_read_around_the_mention_only() -> None:
    # a capitalised word found once, far from the mention: it would be the rarest name if the whole line were read
    line = "ZQXJV opens the file and " + "filler words run on " * 1_200 + "Let ABCDE equal 53233 " + "and on " * 1_200
    line += "Let FGHIJ equal ABCDE. Let KLMNO equal FGHIJ."
    assert len(line) > 20_000
    inferred = _inferred([line], "53233")
    assert inferred.name == "ABCDE" and "ZQXJV" not in inferred.line
    assert len(inferred.line) <= 2 * SPAN_CHARS + len("53233")
    assert follow_references([line], "53233", ReferencePattern(inferred.pattern)) == ["ABCDE", "FGHIJ", "KLMNO"]


def test_a_name_with_dots_and_dashes_inside_is_one_name() -> None:
    items = ["Let ab.c-1 equal 53233.", "Let x-2 equal ab.c-1."]
    inferred = _inferred(items, "53233")
    assert inferred.name == "ab.c-1"
    assert follow_references(items, "53233", ReferencePattern(inferred.pattern)) == ["ab.c-1", "x-2"]


async def test_follow_without_a_pattern_reads_it_off_the_text_and_says_which_line() -> None:
    helpers = ReplHelpers("\n".join(_WATER), _no_sub_call, max_prompt_chars=1_000)
    assert await helpers.follow("Orva") == ["BEX", "KELL", "ARNO"]
    (note,) = helpers.notes.take()
    inferred = _inferred(_WATER, "Orva")
    assert "follow('Orva')" in note and repr(inferred.line) in note and "'BEX'" in note
    assert f"r'{inferred.pattern}'" in note and "pass a pattern" in note


async def test_follow_without_a_pattern_searches_the_text_it_is_given() -> None:
    helpers = ReplHelpers("nothing about lakes here", _no_sub_call, max_prompt_chars=1_000)
    assert await helpers.follow("53233", text=_HELD_OUT_WORDING) == ["ABCDE", "FGHIJ", "KLMNO"]


async def test_follow_with_a_pattern_records_no_inference_note() -> None:
    helpers = ReplHelpers("\n".join(_WATER), _no_sub_call, max_prompt_chars=1_000)
    assert await helpers.follow("Orva", r"Town (\w+) draws its water from {}") == ["BEX", "KELL", "ARNO"]
    assert helpers.notes.take() == []


@pytest.mark.parametrize("text", ["Let ABCDE equal 53233.", "Let ABCDE equal 53233.\nnowhere"])
async def test_follow_of_a_start_no_line_mentions_beside_a_word_says_how_to_fix_it(text: str) -> None:
    helpers = ReplHelpers(text, _no_sub_call, max_prompt_chars=1_000)
    with pytest.raises(ValueError, match="no line mentions 'nowhere'") as caught:
        await helpers.follow("nowhere")
    message = str(caught.value)
    assert "grep('nowhere')" in message and "pass the pattern" in message and "follow('Orva', r'Town" in message


async def test_follow_without_a_pattern_in_a_run_answers_and_the_note_reaches_the_model() -> None:
    replies = [block("print(follow('Orva'))"), block("FINAL(follow('Orva'))")]
    rlm, root, sub = make_rlm(replies)
    result = await run(rlm, "Which towns draw from Lake Orva, directly or through other towns?", "\n".join(_WATER))
    assert result.status == "completed", result.error
    assert result.answer == ["BEX", "KELL", "ARNO"]
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "['BEX', 'KELL', 'ARNO']" in feedback and "read the references from the line" in feedback
    assert sub.calls == []


async def test_follow_of_a_start_that_is_nowhere_is_an_error_in_the_cell_with_the_fix() -> None:
    replies = [block("print(follow('nowhere'))"), block("FINAL('done')")]
    rlm, root, _ = make_rlm(replies)
    result = await run(rlm, "Which names end up equal to 53233?", "\n".join(_HELD_OUT_WORDING))
    assert result.status == "completed" and result.answer == "done"
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "ValueError" in feedback and "no line mentions 'nowhere'" in feedback and "grep('nowhere')" in feedback


async def _no_sub_call(function: str, prompt: str, max_tokens: int | None = None) -> str:
    raise AssertionError("follow makes no model call")
