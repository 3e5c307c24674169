"""The DSPy integration's parts in isolation: output checking, variable descriptions, history bounds, the LM adapter."""

from __future__ import annotations

import asyncio
import typing

import pydantic
import pytest

pytest.importorskip("dspy")
import dspy

from rlm_integrations.dspy import DSPyLanguageModel, OutputError
from rlm_integrations.dspy.inputs import describe_variables, to_repl_value
from rlm_integrations.dspy.outputs import coerce, describe_type, outputs_from_final
from rlm_integrations.dspy.policy import Step, render_history, strip_fences
from rlm_integrations.dspy.signatures import instructions_for, repl_guide
from rlm_integrations.dspy.testing import ScriptedDSPyLM
from rlm_integrations.errors import ModelError
from rlm_integrations.lm import Message
from rlm_integrations.repl import FinalAnswer


class Point(pydantic.BaseModel):
    x: int
    y: int


def outputs(
    signature: str | type, value: typing.Any, *, named: bool = True, exact: bool = True
) -> dict[str, typing.Any]:
    fields = dspy.ensure_signature(signature).output_fields
    return outputs_from_final(fields, FinalAnswer(value=value, named=named, exact=exact))


# -- outputs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (int, "42", 42),
        (int, 7.0, 7),
        (float, "0.25", 0.25),
        (bool, "true", True),
        (bool, 0, False),
        (list[str], ["a"], ["a"]),
        (list[int], "[1, 2]", [1, 2]),
        (list[int], "(1, 2)", [1, 2]),
        (typing.Literal["yes", "no"], " 'yes' ", "yes"),
        (Point, {"x": 1, "y": "2"}, Point(x=1, y=2)),
        (Point, '{"x": 1, "y": 2}', Point(x=1, y=2)),
        (str, 3, "3"),
        (str, ["a", 1], '["a", 1]'),
        (int | None, None, None),
        (dict[str, int], {"a": "1"}, {"a": 1}),
    ],
)
def test_values_are_coerced_to_their_annotation(annotation, value, expected):
    assert coerce(annotation, value) == expected


@pytest.mark.parametrize(
    ("annotation", "value"),
    [(int, "forty-two"), (int, 4.5), (typing.Literal["yes", "no"], "maybe"), (Point, {"x": 1}), (list[int], "a, b")],
)
def test_values_that_do_not_fit_are_refused(annotation, value):
    with pytest.raises(ValueError):
        coerce(annotation, value)


def test_feedback_names_each_bad_field_and_how_to_submit():
    with pytest.raises(OutputError) as caught:
        outputs("q -> n: int, kind: typing.Literal['a', 'b'], label", {"n": "x", "kind": "c", "extra": 1})
    message = str(caught.value)
    assert "unknown output(s) 'extra'" in message
    assert "`n`: expected int, got 'x' (str)" in message
    assert "`kind`: expected one of 'a', 'b', got 'c'" in message
    assert "`label` is missing (str)" in message
    assert message.endswith("Submit in code with FINAL(n=..., kind=..., label=...).")
    assert len(caught.value.problems) == 4


def test_optional_outputs_may_be_left_out():
    assert outputs("q -> answer, note: str | None", {"answer": "a"}) == {"answer": "a", "note": None}


def test_plain_final_values():
    assert outputs("q -> answer: int", 3, named=False) == {"answer": 3}
    assert outputs("q -> a, b: int", {"a": "x", "b": 2}, named=False) == {"a": "x", "b": 2}
    with pytest.raises(OutputError, match="submit each one by name"):
        outputs("q -> a, b", "x", named=False)
    with pytest.raises(OutputError, match="not plain data"):
        outputs("q -> answer: int", "<object at 0x1>", named=False, exact=False)
    assert outputs("q -> answer", "<object at 0x1>", named=False, exact=False) == {"answer": "<object at 0x1>"}


def test_type_descriptions():
    assert describe_type(int) == "int"
    assert describe_type(list[str]) == "list[str]"
    assert describe_type(typing.Literal["a", 1]) == "one of 'a', 1"
    assert describe_type(Point).startswith("a dict matching the JSON schema of Point: {")


# -- prompts ----------------------------------------------------------------------------------------
class Task(dspy.Signature):
    """Find the point."""

    document: str = dspy.InputField(desc="the text to search")
    point: Point = dspy.OutputField(desc="where it is")


def test_the_guide_lists_variables_outputs_and_tools_and_the_instructions_hold_the_task():
    guide = repl_guide(Task, sub_prompt_chars=50_000, tools={"search": "Search the web."})
    assert "the input variables: `document`" in guide
    assert "- `point` (a dict matching the JSON schema of Point:" in guide
    assert ": where it is" in guide
    assert "- `search(...)`: Search the web." in guide
    assert "at most about 50,000 characters" in guide
    assert "FINAL(point=...)" in guide
    instructions = instructions_for(Task)
    assert instructions.startswith("Find the point.\n\n")
    assert "FINAL" not in instructions


def test_variables_are_described_within_bounds():
    values = {
        "text": "y" * 1_000_000,
        "docs": ["z" * 100_000] * 10_000,
        "table": {str(i): i for i in range(1000)},
        "n": 3,
    }
    fields = dspy.ensure_signature("text, docs: list[str], table: dict, n: int -> answer").input_fields
    info = describe_variables(values, fields, preview_chars=300)
    assert len(info) < 3_000
    assert "Variable `text`: str, 1,000,000 characters." in info
    assert "... (999,700 more characters)" in info
    assert "Variable `docs`: list, 10,000 items." in info
    assert "Variable `table`: dict, 1,000 items." in info


def test_inputs_become_plain_data():
    assert to_repl_value(Point(x=1, y=2)) == {"x": 1, "y": 2}
    assert to_repl_value({"p": [Point(x=1, y=2)], 3: (1, 2)}) == {"p": [{"x": 1, "y": 2}], "3": [1, 2]}
    assert to_repl_value(object).startswith("<class")


def test_history_keeps_the_newest_turns_whole_and_stays_bounded():
    steps = [Step(i, f"thinking {i}", f"print({i})", f"Output:\n{'o' * 3_000}") for i in range(1, 201)]
    text = render_history(steps, 8_000)
    assert len(text) <= 8_000
    assert text.rstrip().endswith("o" * 100)
    assert "=== Turn 200 ===" in text
    assert "(output elided) code: print(" in text
    assert "earlier turns omitted" in text
    assert render_history([], 1000).startswith("(no cells yet")
    huge = render_history([Step(1, "r", "x", "o" * 50_000)], 2_000)
    assert len(huge) < 2_200


def test_fences_are_stripped_from_code():
    assert strip_fences("```python\nprint(1)\n```") == "print(1)"
    assert strip_fences("```\nx = 1\ny = 2\n```\n") == "x = 1\ny = 2"
    assert strip_fences("print('```')") == "print('```')"


# -- the LM adapter ---------------------------------------------------------------------------------
def test_adapter_sends_a_prompt_and_reports_usage_from_dspy():
    lm = ScriptedDSPyLM(["four words in reply"], model="scripted/sub")
    model = DSPyLanguageModel(lm)
    completion = asyncio.run(model.acomplete([{"role": "user", "content": "hello there, how are you"}]))
    assert completion.text == "four words in reply"
    assert completion.model == "scripted/sub"
    assert completion.usage.calls == 1
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert lm.calls == [[{"role": "user", "content": "hello there, how are you"}]]
    assert len(lm.history) == 1


def test_adapter_sends_a_conversation_with_the_lm_defaults():
    seen: list[typing.Any] = []

    class Recording(ScriptedDSPyLM):
        async def acall(self, *args, **kwargs):
            seen.append(args[0])
            return await super().acall(*args, **kwargs)

    lm = Recording(["ok"])
    lm.kwargs["temperature"] = 0.2
    model = DSPyLanguageModel(lm)
    messages: list[Message] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    completion = model.complete(messages, max_tokens=50)
    assert completion.text == "ok"
    assert lm.calls == [messages]
    assert seen[0].config.temperature == 0.2
    assert seen[0].config.max_tokens == 50


def test_adapter_reads_the_cost_dspy_recorded():
    class Priced(ScriptedDSPyLM):
        def update_history(self, entry):
            entry["cost"] = 0.25
            super().update_history(entry)

    completion = DSPyLanguageModel(Priced(["ok"])).complete([{"role": "user", "content": "q"}])
    assert completion.usage.cost_usd == 0.25


def test_adapter_failures_are_model_errors_that_keep_the_cause():
    class Down(Exception):
        pass

    model = DSPyLanguageModel(ScriptedDSPyLM([Down("no route")]))
    with pytest.raises(ModelError, match="no route") as caught:
        model.complete([{"role": "user", "content": "q"}])
    assert caught.value.__cause__ is not None


def test_the_public_surface_is_frozen():
    import rlm_integrations.dspy
    import rlm_integrations.dspy.testing

    assert sorted(rlm_integrations.dspy.__all__) == [
        "DSPyLanguageModel",
        "OutputError",
        "RLM",
        "Session",
        "default_status_message",
    ]
    assert sorted(rlm_integrations.dspy.testing.__all__) == [
        "ScriptedDSPyLM",
        "chat_reply",
        "request_text",
        "rlm_replies",
        "signature_reply",
    ]
