"""The worked examples as data: each shape's parts, and the chat messages the core loop renders from them."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from rlm_integrations.core import prompts
from rlm_integrations.core.events import ContextInfo
from rlm_integrations.core.question_shape import Shape
from rlm_integrations.core.worked_examples import Turn, WorkedExample, example_for, worked_example

SHAPES: tuple[Shape, ...] = get_args(Shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_has_parts_that_its_messages_are_rendered_from(shape: Shape) -> None:
    example = worked_example(shape)
    assert example.shape == shape
    assert example.question and example.probe and example.turns
    assert example.final.startswith(("FINAL(", "FINAL_VAR("))
    messages = example_for(shape)
    assert messages == example.messages()
    assert [m["role"] for m in messages] == ["user"] + ["assistant", "user"] * len(example.turns) + ["assistant"]
    first = messages[0]["content"]
    assert first.startswith(f"Question: {example.question}\n\n")
    assert f"\n\n{example.probe}\n\n" in first
    assert f"{example.context.chars:,} characters" in first and example.context.preview in first
    for index, turn in enumerate(example.turns):
        assert messages[1 + 2 * index]["content"] == f"```repl\n{turn.code}\n```"
        assert messages[2 + 2 * index]["content"].startswith(turn.feedback + "\n\n")
    assert messages[-1]["content"] == example.final


def test_turn_feedback_counts_the_characters_of_the_output() -> None:
    turn = Turn("print(1)", "héllo\nworld")
    assert turn.feedback == "Output (11 characters):\nhéllo\nworld"
    code, output = turn  # still a (code, output) pair
    assert (code, output) == ("print(1)", "héllo\nworld")


def test_messages_count_the_turns_down_from_the_budget() -> None:
    info = ContextInfo(type="str", chars=120, preview="Line one.")
    turns = (Turn("a = 1", "x"), Turn("b = 2", "y"))
    example = WorkedExample("lookup", "Why?", info, "`context` has 3 non-empty lines.", turns, "FINAL(1)", 3)
    messages = example.messages()
    assert messages[0]["content"] == prompts.first_message("Why?", info, 3, probe="`context` has 3 non-empty lines.")
    assert messages[2]["content"] == prompts.next_turn_message("Output (1 characters):\nx", 2)
    assert messages[4]["content"] == prompts.next_turn_message("Output (1 characters):\ny", 1)
    assert "last turn" in messages[4]["content"] and "last turn" not in messages[2]["content"]


def test_examples_are_shared_and_frozen_but_messages_are_fresh() -> None:
    example = worked_example("count")
    assert worked_example("count") is example
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.question = "changed"  # type: ignore[misc]
    first = example_for("count")
    first[0]["content"] = "changed"
    assert example_for("count")[0]["content"] != "changed"
