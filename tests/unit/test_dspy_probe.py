"""The DSPy face's per-question help: the probe of the user's question, and worked examples for small root LMs."""

from __future__ import annotations

import re
import typing

import pytest

pytest.importorskip("dspy")
import dspy

from rlm_integrations import RLM as CoreRLM
from rlm_integrations import RLMConfig
from rlm_integrations.core import prompts
from rlm_integrations.core.context_info import describe
from rlm_integrations.core.events import ContextInfo
from rlm_integrations.core.policy import ChatPolicy, QuestionAware
from rlm_integrations.core.question_shape import Shape, first_step, probe_question, question_shape
from rlm_integrations.core.worked_examples import Turn, WorkedExample, example_for, worked_example
from rlm_integrations.dspy import RLM, orientation
from rlm_integrations.dspy.orientation import (
    NOT_PROBED,
    QUESTION_CHARS,
    prefers_worked_example,
    probe_subject,
    worked_demos,
)
from rlm_integrations.dspy.signatures import GUIDE_PLACEHOLDER
from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies
from rlm_integrations.lm.scripted import ScriptedLM

CONFIG = RLMConfig(cell_timeout_s=20.0)
SHIPMENTS = "\n".join(
    f"Shipment {i}: to {'Accra' if i % 3 else 'Lima'}; state {'held' if i % 2 else 'sent'}." for i in range(1, 301)
)
ASKED = "How many shipments went to Accra with state held?"


Ledger = dspy.Signature(
    "context: str, question: str -> answer: str", "Summarize the warehouse ledger for the auditors, quarter by quarter."
)


def submitting(code: str = "FINAL(answer='done')") -> ScriptedDSPyLM:
    return ScriptedDSPyLM(rlm_replies(["print(len(context))", code]))


def small(lm: ScriptedDSPyLM) -> ScriptedDSPyLM:
    """The scripted LM marked as one that prefers worked examples (as an LM over `LocalModel` is)."""
    lm.prefers_worked_example = True
    return lm


def section(message: str, name: str) -> str:
    """One `[[ ## name ## ]]` section of a ChatAdapter request."""
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", message, re.DOTALL)
    assert match is not None, f"no {name} section"
    return match.group(1).strip()


def root_requests(lm: ScriptedDSPyLM) -> list[list[dict[str, str]]]:
    return [call for call in lm.calls if "[[ ## iteration ## ]]" in call[-1]["content"]]


# -- the probe is of the user's question ----------------------------------------------------------
def test_the_root_predictor_sees_the_probe_of_the_question_field_not_of_the_instructions() -> None:
    lm = submitting()
    with dspy.context(lm=lm):
        pred = RLM(Ledger, config=CONFIG)(context=SHIPMENTS, question=ASKED)
    assert pred.status == "completed"
    requests = root_requests(lm)
    assert len(requests) == 2
    expected = probe_question(ASKED, SHIPMENTS).describe()
    for request in requests:  # every turn carries it
        assert section(request[-1]["content"], "context_probe") == expected
    assert "'accra' in 200" in expected and "'held' in 150" in expected
    from_instructions = probe_question(Ledger.instructions, SHIPMENTS).describe()
    assert from_instructions != expected
    assert "ledger" not in expected and "auditors" not in expected


def test_without_a_context_field_the_largest_input_is_probed_under_its_own_name() -> None:
    lm = submitting()
    with dspy.context(lm=lm):
        RLM("document, question -> answer", config=CONFIG)(document=SHIPMENTS, question="Which shipments were held?")
    probe = section(root_requests(lm)[0][-1]["content"], "context_probe")
    expected = probe_question("Which shipments were held?", SHIPMENTS).describe().replace("`context`", "`document`")
    assert probe == expected and probe.startswith("`document` has 300 non-empty lines.")


def test_without_a_question_field_the_signature_instructions_are_probed() -> None:
    Summary = dspy.Signature("context: str -> summary: str", "List every shipment held in Accra.")
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(summary='x')"]))
    with dspy.context(lm=lm):
        RLM(Summary, config=CONFIG)(context=SHIPMENTS)
    probe = section(root_requests(lm)[0][-1]["content"], "context_probe")
    instructions_probe = probe_question(Summary.instructions, SHIPMENTS)
    assert probe == instructions_probe.describe_for(question_shape(Summary.instructions, instructions_probe))
    assert probe == instructions_probe.describe(samples=False)  # a list question: no first mentions
    assert "'accra' in 200" in probe


def test_nothing_to_probe_is_said_plainly_and_brings_no_worked_example() -> None:
    lm = small(ScriptedDSPyLM(rlm_replies(["FINAL(answer=question)"])))
    with dspy.context(lm=lm):
        assert RLM("question -> answer", config=CONFIG)(question="hi there").answer == "hi there"
    (request,) = root_requests(lm)
    assert section(request[-1]["content"], "context_probe") == NOT_PROBED
    assert len(request) == 2  # system and the request: no demo turns (the examples' code reads `context`)


def test_probe_subject_splits_question_from_data() -> None:
    fields = dict.fromkeys(["context", "question", "language", "history", "n"])
    long_text = "x" * (QUESTION_CHARS + 1)
    values = {"context": ["a", "b"], "question": "Who?", "language": "en", "history": {"messages": []}, "n": 3}
    subject = probe_subject(values, fields)
    assert (subject.question, subject.question_fields, subject.name) == (
        "Who?\nen",
        ("question", "language"),
        "context",
    )
    # no context field: the largest non-question input; a long text is data, not question
    subject = probe_subject({"notes": long_text, "table": ["y"], "q": "Why?"}, dict.fromkeys(["notes", "table", "q"]))
    assert (subject.question, subject.name, subject.value) == ("Why?", "notes", long_text)
    # only short texts: the longest is the text, the rest the question
    subject = probe_subject({"passage": "a longer passage", "q": "what?"}, dict.fromkeys(["passage", "q"]))
    assert (subject.question, subject.name) == ("what?", "passage")
    assert probe_subject({"q": "what?"}, {"q": None}).name is None


def test_child_runs_get_the_probe_of_their_sub_question_once() -> None:
    def turn(request: str, number: int) -> str:
        if "This run is a sub-task" in request:
            return "FINAL(str(len(grep('Lima'))))"
        return "FINAL(answer=rlm_query('How many shipments went to Lima?', context=context))"

    lm = ScriptedDSPyLM(rlm_replies(turn))
    with dspy.context(lm=lm):
        pred = RLM(Ledger, config=CONFIG.with_overrides(max_depth=1))(context=SHIPMENTS, question=ASKED)
    assert pred.answer == "100"
    (child,) = [c for c in root_requests(lm) if "This run is a sub-task" in c[-1]["content"]]
    expected = probe_question("How many shipments went to Lima?", SHIPMENTS).describe()
    assert section(child[-1]["content"], "context_probe") == expected
    assert expected not in section(child[-1]["content"], "variables_info")  # not shown twice


def test_the_traced_probe_is_bounded_by_demo_chars() -> None:
    program = RLM(Ledger, config=CONFIG, demo_chars=200)
    with dspy.context(lm=submitting(), trace=[]):
        program(context=SHIPMENTS, question=ASKED)
        traced = [inputs for predictor, inputs, _ in dspy.settings.trace if predictor is program.generate_code]
    full = probe_question(ASKED, SHIPMENTS).describe()
    assert traced and all(len(inputs["context_probe"]) < len(full) for inputs in traced)
    assert all(inputs["repl_guide"] == GUIDE_PLACEHOLDER for inputs in traced)


# -- worked examples for root LMs that prefer them -----------------------------------------------
def demo_turns(request: list[dict[str, str]]) -> list[str]:
    """The code of each demo reply shown before the real request."""
    return [section(m["content"], "code") for m in request[1:-1] if m["role"] == "assistant"]


def test_a_small_root_lm_gets_the_worked_example_of_the_question_shape() -> None:
    lm = small(submitting())
    with dspy.context(lm=lm):
        RLM(Ledger, config=CONFIG)(context=SHIPMENTS, question=ASKED)
    first = root_requests(lm)[0]
    count = [m for m in example_for("count") if m["role"] == "assistant"]
    assert demo_turns(first) == [m["content"].removeprefix("```repl\n").removesuffix("\n```") for m in count]
    # the demo turns carry the example's own probe and invented text, and the real request its own
    demo_user = first[1]["content"]
    assert "'tromso' in 402" in section(demo_user, "context_probe")
    assert section(demo_user, "variables_info").startswith("Variable `context`: str, 402,113 characters.")
    assert "Tromso" not in first[-1]["content"]


@pytest.mark.parametrize(
    ("question", "shape"),
    [
        ("What is the state of shipment 17?", "lookup"),
        ("List every shipment to Lima.", "list"),
        ("How many of the writers are unhappy?", "count_reading"),
        ("Which shipments share the same state?", "group"),
    ],
)
def test_the_example_follows_the_shape(question: str, shape: typing.Any) -> None:
    lm = small(submitting())
    with dspy.context(lm=lm):
        RLM(Ledger, config=CONFIG)(context=SHIPMENTS, question=question)
    first_code = demo_turns(root_requests(lm)[0])[0]
    expected = next(m["content"] for m in example_for(shape) if m["role"] == "assistant")
    assert first_code == expected.removeprefix("```repl\n").removesuffix("\n```")


def test_demos_set_by_an_optimizer_win_over_the_worked_example() -> None:
    from dspy.teleprompt import BootstrapFewShot

    trainset = [
        dspy.Example(context=SHIPMENTS, question=ASKED, answer="done").with_inputs("context", "question")
        for _ in range(2)
    ]
    with dspy.context(lm=small(submitting())):
        compiled = BootstrapFewShot(
            metric=lambda ex, pred, trace=None: ex.answer == pred.answer, max_bootstrapped_demos=1, max_labeled_demos=0
        ).compile(RLM(Ledger, config=CONFIG), trainset=trainset)
    (demo,) = compiled.generate_code.demos
    assert demo["code"] in ("print(len(context))", "FINAL(answer='done')")  # bootstrapped from the real run
    lm = small(submitting())
    with dspy.context(lm=lm):
        compiled(context=SHIPMENTS, question=ASKED)
    first = root_requests(lm)[0]
    assert demo_turns(first) == [demo["code"]]
    assert all("Tromso" not in m["content"] for m in first)


def test_worked_examples_follow_the_setting_and_the_lm() -> None:
    for lm, setting, shown in [
        (submitting(), None, False),  # an LM that does not ask for them
        (submitting(), True, True),
        (small(submitting()), False, False),
    ]:
        with dspy.context(lm=lm):
            RLM(Ledger, config=CONFIG, worked_examples=setting)(context=SHIPMENTS, question=ASKED)
        assert bool(demo_turns(root_requests(lm)[0])) is shown


def test_several_outputs_get_the_example_without_its_single_value_final() -> None:
    lm = small(ScriptedDSPyLM(rlm_replies(["FINAL(answer='a', count=1)"])))
    with dspy.context(lm=lm):
        RLM("context, question -> answer, count: int", config=CONFIG)(context=SHIPMENTS, question=ASKED)
    turns = demo_turns(root_requests(lm)[0])
    assert len(turns) == 1 and "FINAL" not in turns[0]
    one = worked_demos("count", question_field="question", single_output=True, max_iterations=5)
    assert [d["iteration"] for d in one] == ["Turn 1 of 5.", "Turn 2 of 5."]
    assert "57" in one[1]["repl_history"] and one[1]["code"] == "FINAL(57)"


@pytest.mark.parametrize("shape", typing.get_args(Shape))
def test_every_shape_s_demos_are_the_example_s_parts(shape: Shape) -> None:
    example = worked_example(shape)
    demos = worked_demos(shape, question_field="query", single_output=True, max_iterations=8)
    assert [d["code"] for d in demos] == [turn.code for turn in example.turns] + [example.final]
    assert {d["context_probe"] for d in demos} == {example.probe}
    assert demos[0]["repl_history"] == "(no cells yet: this is the first turn)"
    for number, (demo, turn) in enumerate(zip(demos[1:], example.turns, strict=True), 1):
        assert turn.feedback in demo["repl_history"] and f"=== Turn {number} ===" in demo["repl_history"]
    info = demos[0]["variables_info"]
    assert info.startswith(f"Variable `context`: str, {example.context.chars:,} characters.\nPreview:\n")
    assert info.endswith(f"Variable `query`: str, {len(example.question):,} characters.\nPreview:\n{example.question}")
    assert example.context.preview in info


def test_demos_are_built_from_parts_that_the_message_text_could_not_be_split_back_into(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a question with a paragraph break, a probe in no known wording, a list context: splitting
    # the rendered first message by paragraphs or matching its wording would lose or mix these
    odd = WorkedExample(
        "lookup",
        "Which bell rang?\n\nAnswer with its name.",
        ContextInfo(type="list", chars=5_000, items=1_234, preview="['bell one', 'bell two']"),
        "Bells are named in 3 items; 'rang' in none.",
        (Turn("print(context[:2])", "You have 2 bells."),),
        'FINAL("two")',
    )
    monkeypatch.setattr(orientation, "worked_example", lambda shape: odd)
    first, second = worked_demos("lookup", question_field="question", single_output=True, max_iterations=4)
    assert first["context_probe"] == second["context_probe"] == odd.probe
    assert first["variables_info"] == (
        "Variable `context`: list, 1,234 items.\nPreview:\n['bell one', 'bell two']\n... (4,976 more characters)"
        "\n\nVariable `question`: str, 39 characters.\nPreview:\nWhich bell rang?\n\nAnswer with its name."
    )
    assert (first["code"], second["code"]) == ("print(context[:2])", 'FINAL("two")')
    assert "Output (17 characters):\nYou have 2 bells." in second["repl_history"]


def test_the_preference_is_read_from_the_lm_its_engine_or_the_engine_s_model() -> None:
    class Model:
        prefers_worked_example = True

    class Engine:
        def __init__(self) -> None:
            self.model = Model()

        def complete(self, request: typing.Any) -> typing.Any:
            raise NotImplementedError

    assert prefers_worked_example(dspy.LM("local/x", engine=Engine(), cache=False)) is True
    assert prefers_worked_example(dspy.LM("openai/gpt-5-mini")) is False
    assert prefers_worked_example(small(submitting())) is True


def test_the_setting_is_saved_and_loaded(tmp_path: typing.Any) -> None:
    RLM(Ledger, worked_examples=True).save(tmp_path / "p.json")
    restored = RLM(Ledger)
    restored.load(tmp_path / "p.json")
    assert restored.worked_examples is True


# -- the core face is unchanged ---------------------------------------------------------------------
async def test_the_core_face_still_probes_its_query_in_the_first_message() -> None:
    assert not isinstance(ChatPolicy(ScriptedLM([])), QuestionAware)
    root = ScriptedLM(["```repl\nFINAL(len(grep('accra', 'held')))\n```"])  # computed: a typed-in count is questioned
    root.prefers_worked_example = True
    result = await CoreRLM(root, config=CONFIG).acompletion(ASKED, SHIPMENTS)
    assert result.answer == 100  # shipments 1..300 that are odd (held) and not a multiple of 3 (Accra)
    (first,) = root.calls
    probe = probe_question(ASKED, SHIPMENTS)
    step = first_step("count", probe)
    assert step is not None
    expected = prompts.first_message(
        ASKED,
        await describe(SHIPMENTS, CONFIG.context_preview_chars),
        CONFIG.max_iterations,
        probe=probe.describe(),
        opening=prompts.opening_step(step, "Output (1,234 characters):\n..."),
    )
    content = first[-1]["content"]
    before, _, after = expected.partition("Output (1,234 characters):\n...")
    assert first[1:-1] == example_for("count") and content.startswith(before) and content.endswith(after)
    assert "\n100\n" in content  # the step ran: 100 shipments match both words
