"""Answers read as meant: the worked example's invented answer is sent back; a bare FINAL(name) reads the variable."""

from __future__ import annotations

from engine_helpers import block, make_rlm, run

from rlm_integrations.core.worked_examples import normal_answer, worked_example
from rlm_integrations.lm import ScriptedLM

QUESTION = "What is the capital of Freedonia?"  # a lookup: the example shown answers 'Lutz'
CONTEXT = "\n".join(["The hills rolled on, the carts went by."] * 40 + ["The capital of Freedonia is Ovid."])


def _small(replies: list[str]) -> ScriptedLM:
    root = ScriptedLM(replies, name="root")
    root.prefers_worked_example = True
    return root


def test_the_examples_answers_compare_without_case_quotes_or_spaces() -> None:
    assert worked_example("lookup").answer == "lutz"
    assert worked_example("count_reading").answer == normal_answer(214) == "214"
    assert worked_example("chain").answer == normal_answer(["bex", "KELL", "Arno"])
    assert worked_example("group").answer is None  # FINAL_VAR: nothing to compare


async def test_the_examples_answer_is_sent_back_once_then_accepted_when_repeated() -> None:
    rlm, root, _ = make_rlm(_small([block('FINAL("Lutz")'), block('FINAL("Lutz")')]))
    result = await run(rlm, QUESTION, CONTEXT)
    assert result.status == "completed" and result.answer == "Lutz"
    assert len(root.calls) == 2
    assert "is the worked example's answer" in root.calls[1][-1]["content"]


async def test_a_different_answer_after_the_note_is_accepted() -> None:
    rlm, root, _ = make_rlm(_small([block('FINAL("Lutz")'), block('FINAL("Ovid")')]))
    result = await run(rlm, QUESTION, CONTEXT)
    assert result.answer == "Ovid" and len(root.calls) == 2


async def test_a_model_shown_no_example_is_never_told_so() -> None:
    rlm, root, _ = make_rlm([block('FINAL("Lutz")')])
    result = await run(rlm, QUESTION, CONTEXT)
    assert result.answer == "Lutz" and len(root.calls) == 1


async def test_a_closing_reply_that_repeats_the_example_gives_no_answer_and_says_why() -> None:
    # the one turn's answer is sent back (the closing request is one more chance), and the closing reply repeats it
    rlm, root, _ = make_rlm(_small([block('FINAL("Lutz")'), 'FINAL("Lutz")']), max_iterations=1)
    result = await run(rlm, QUESTION, CONTEXT)
    assert len(root.calls) == 2
    assert result.answer is None and result.status == "max_iterations"
    assert result.error is not None and "worked example" in result.error


async def test_a_context_that_writes_the_examples_values_makes_them_a_real_answer() -> None:
    context = CONTEXT.replace("Ovid", "Lutz")
    rlm, root, _ = make_rlm(_small([block('FINAL("Lutz")')]))
    result = await run(rlm, QUESTION, context)
    assert result.answer == "Lutz" and len(root.calls) == 1


async def test_a_textual_final_naming_a_variable_submits_the_variables_value() -> None:
    rlm, _, _ = make_rlm([block("groups = [['ana', 'tom']]\nprint(groups)"), "FINAL(groups)"])
    result = await run(rlm, QUESTION, CONTEXT)
    assert result.status == "completed" and result.answer == [["ana", "tom"]]


async def test_a_textual_final_naming_no_variable_is_the_word_itself() -> None:
    rlm, _, _ = make_rlm(["FINAL(Ovid)"])
    result = await run(rlm, QUESTION, CONTEXT)
    assert result.answer == "Ovid"


async def test_a_closing_reply_naming_a_variable_submits_its_value() -> None:
    rlm, _, _ = make_rlm([block("found = ['BEX', 'KELL']\nprint(found)"), "FINAL(found)"], max_iterations=1)
    result = await run(rlm, QUESTION, CONTEXT)
    assert result.status == "max_iterations" and result.answer == ["BEX", "KELL"]
