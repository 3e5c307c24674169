"""The module as a drop-in for DSPy programs: output-field streaming, child runs, MIPROv2, `dspy.Parallel`."""

from __future__ import annotations

import time
import typing

import pytest

pytest.importorskip("dspy")
import dspy
from dspy.streaming import StatusMessage, StreamListener, StreamResponse

from rlm_integrations import RLMConfig
from rlm_integrations.dspy import RLM
from rlm_integrations.dspy.bridge import STREAM_CHUNK_CHARS
from rlm_integrations.dspy.testing import ScriptedDSPyLM, chat_reply, rlm_replies, signature_reply

CONFIG = RLMConfig(cell_timeout_s=20.0)


def submitting_lm(answer_code: str = "question.upper()") -> ScriptedDSPyLM:
    """Turn 1 prints the context's size; turn 2 submits `answer_code`."""
    return ScriptedDSPyLM(rlm_replies(["print(len(context))", f"FINAL(answer={answer_code})"]))


class Pipeline(dspy.Module):
    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__()
        self.find = RLM("context, question -> answer", config=CONFIG, **kwargs)

    def forward(self, context: str, question: str) -> typing.Any:
        return self.find(context=context, question=question)

    async def aforward(self, context: str, question: str) -> typing.Any:
        return await self.find.acall(context=context, question=question)


# -- output-field streaming ---------------------------------------------------------------------
def test_a_listener_on_the_answer_field_streams_the_submitted_answer():
    program = RLM("context, question -> answer", config=CONFIG)
    listener = StreamListener(signature_field_name="answer")
    stream = dspy.streamify(program, stream_listeners=[listener], async_streaming=False)
    with dspy.context(lm=submitting_lm()):
        items = list(stream(context="some text", question="which?"))
    chunks = [item for item in items if isinstance(item, StreamResponse)]
    assert [(c.predict_name, c.signature_field_name, c.chunk, c.is_last_chunk) for c in chunks] == [
        ("extract", "answer", "WHICH?", True)
    ]
    assert any(isinstance(item, StatusMessage) for item in items)
    assert items.index(chunks[0]) < len(items) - 1 and items[-1].answer == "WHICH?"
    assert [name for name, _ in program.named_predictors()] == ["generate_code"]  # still hidden from optimizers


async def test_a_long_answer_streams_in_chunks_in_a_nested_async_program():
    program = Pipeline()
    stream = dspy.streamify(
        program,
        stream_listeners=[StreamListener(signature_field_name="answer")],
        is_async_program=True,
        include_final_prediction_in_output_stream=False,
    )
    with dspy.context(lm=submitting_lm(f"'x' * {STREAM_CHUNK_CHARS * 2 + 5}")):
        items = [item async for item in stream(context="c", question="q")]
    chunks = [item for item in items if isinstance(item, StreamResponse)]
    assert {c.predict_name for c in chunks} == {"find.extract"}
    assert [len(c.chunk) for c in chunks] == [STREAM_CHUNK_CHARS, STREAM_CHUNK_CHARS, 5]
    assert [c.is_last_chunk for c in chunks] == [False, False, True]
    assert not any(isinstance(item, dspy.Prediction) for item in items)  # the listener consumed the answer


def test_outputs_written_by_extract_at_a_limit_are_streamed_too():
    lm = ScriptedDSPyLM(rlm_replies(["print(1)"], extract=chat_reply(answer="best effort")))
    program = RLM("context, question -> answer", config=CONFIG, max_iterations=1)
    stream = dspy.streamify(program, stream_listeners=[StreamListener(signature_field_name="answer")])
    with dspy.context(lm=lm):
        items = list(dspy.streaming.apply_sync_streaming(stream(context="c", question="q")))
    chunks = [item.chunk for item in items if isinstance(item, StreamResponse)]
    assert chunks == ["best effort"]
    assert items[-1].status == "max_iterations"


def test_typed_outputs_stream_as_json_and_other_fields_only_when_listened_to():
    program = RLM("context -> count: int, names: list[str]", config=CONFIG)
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(count=len(context), names=['a', 'b'])"]))
    stream = dspy.streamify(
        program, stream_listeners=[StreamListener(signature_field_name="names")], async_streaming=False
    )
    with dspy.context(lm=lm):
        items = list(stream(context="abc"))
    chunks = [(item.signature_field_name, item.chunk) for item in items if isinstance(item, StreamResponse)]
    assert chunks == [("names", '["a", "b"]')]
    assert items[-1].count == 3


def test_an_unknown_field_is_still_refused_by_dspy():
    with pytest.raises((ValueError, TypeError)):  # DSPy 3.4 raises a TypeError here for any program
        dspy.streamify(RLM("context -> answer"), stream_listeners=[StreamListener(signature_field_name="nope")])


# -- MIPROv2 -------------------------------------------------------------------------------------
TUNED = "Submit the first word of the context (TUNED)."


def mipro_task_lm() -> ScriptedDSPyLM:
    """Submits the first word of the context only when the instructions carry TUNED (the last word otherwise)."""

    def turn(request: str, number: int) -> str:
        return "print(context[:20])" if number == 1 else "FINAL(answer=context.split()[INDEX])"

    rlm = rlm_replies(turn)

    def reply(messages: list[dict[str, str]]) -> str:
        text = rlm(messages)
        if "[[ ## iteration ## ]]" not in messages[-1]["content"]:
            return signature_reply(TUNED)(messages)  # MIPROv2's own requests (it uses the task LM for some)
        return text.replace("INDEX", "0" if TUNED in messages[0]["content"] else "-1")

    return ScriptedDSPyLM(reply)


def test_miprov2_compiles_the_module_end_to_end_offline():
    from dspy.teleprompt import MIPROv2

    pytest.importorskip("optuna")
    data = [
        dspy.Example(context=f"alpha{i} beta omega{i}", question="first word?", answer=f"alpha{i}").with_inputs(
            "context", "question"
        )
        for i in range(4)
    ]

    def metric(example: typing.Any, pred: typing.Any, trace: typing.Any = None) -> bool:
        return bool(pred.answer == example.answer)

    task_lm, prompt_lm = mipro_task_lm(), ScriptedDSPyLM(signature_reply(TUNED))
    student = RLM("context, question -> answer", config=CONFIG)
    optimizer = MIPROv2(
        metric=metric,
        prompt_model=prompt_lm,
        task_model=task_lm,
        auto=None,
        num_candidates=2,
        max_bootstrapped_demos=1,
        max_labeled_demos=1,
        num_threads=1,
        seed=3,
    )
    started = time.monotonic()
    with dspy.context(lm=task_lm):
        before = [metric(x, student(**x.inputs())) for x in data]
        compiled = optimizer.compile(student, trainset=data[:2], valset=data[2:], num_trials=4, minibatch=False)
        after = [metric(x, compiled(**x.inputs())) for x in data]
    assert time.monotonic() - started < 60
    assert prompt_lm.calls  # the proposer really asked the prompt model
    assert not any(before) and all(after)
    assert TUNED in compiled.generate_code.signature.instructions
    assert [name for name, _ in compiled.named_predictors()] == ["generate_code"]


# -- dspy.Parallel --------------------------------------------------------------------------------
def test_the_module_under_dspy_parallel_keeps_each_call_apart():
    """Each call keeps its own REPL (a variable set in turn 1 is read in turn 2) and its own usage."""

    def turn(request: str, number: int) -> str:
        if number == 1:
            return "mine = question * 2\nprint(len(context))"
        return "FINAL(answer=mine + '/' + str(len(context)))"

    lm = ScriptedDSPyLM(rlm_replies(turn), latency_s=0.05)
    program = RLM("context, question -> answer", config=CONFIG)
    count = 6
    inputs = [{"context": "x" * (i + 1), "question": f"q{i}"} for i in range(count)]
    with dspy.context(lm=lm):
        results = dspy.Parallel(num_threads=count)([(program, item) for item in inputs])
    assert [pred.answer for pred in results] == [f"q{i}q{i}/{i + 1}" for i in range(count)]
    assert all(pred.status == "completed" for pred in results)
    assert [pred.usage.calls for pred in results] == [2] * count  # no call counted in another run's usage
    assert len({pred.rlm_result.trajectory.root.run_id for pred in results}) == count
    assert len(lm.calls) == 2 * count


# -- child runs through `generate_code` -----------------------------------------------------------
def tree_lm() -> ScriptedDSPyLM:
    """The root asks a child how long 'abcd' is, then submits what it said; the child counts and submits."""

    def turn(request: str, number: int) -> str:
        if "This run is a sub-task" in request:
            return "FINAL(str(len(context)))"
        if number == 1:
            return "said = rlm_query('how long is it?', context='abcd')\nprint(said)"
        return "FINAL(answer='child said ' + said)"

    return ScriptedDSPyLM(rlm_replies(turn))


def test_child_runs_step_through_generate_code_with_its_demos_and_instructions():
    program = RLM("question -> answer", config=CONFIG.with_overrides(max_depth=1))
    program.generate_code.signature = program.generate_code.signature.with_instructions("TUNED-INSTRUCTIONS")
    program.generate_code.demos = [dspy.Example(repl_history="(none)", reasoning="DEMO-REASONING", code="print(1)")]
    lm = tree_lm()
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.answer == "child said 4"
    assert [run.depth for run in pred.rlm_result.trajectory.runs()] == [0, 1]
    child_requests = [m for m in lm.calls if "This run is a sub-task" in m[-1]["content"]]
    assert len(child_requests) == 1
    (child,) = child_requests
    assert "TUNED-INSTRUCTIONS" in child[0]["content"]  # the tuned instructions apply at depth 1
    assert any("DEMO-REASONING" in m["content"] for m in child)  # and so do the demos
    assert "Question: how long is it?" in child[-1]["content"]
    assert "FINAL(value)" in child[-1]["content"] and "`context`" in child[-1]["content"]
    assert pred.usage.calls == 3


def test_bootstrap_fewshot_traces_the_whole_tree():
    from dspy.teleprompt import BootstrapFewShot

    data = [dspy.Example(question=f"q{i}", answer="child said 4").with_inputs("question") for i in range(2)]

    def metric(example: typing.Any, pred: typing.Any, trace: typing.Any = None) -> bool:
        return bool(pred.answer == example.answer)

    student = RLM("question -> answer", config=CONFIG.with_overrides(max_depth=1))
    # What BootstrapFewShot samples its demos from: the trace of a teacher run holds every step of the tree.
    with dspy.context(lm=tree_lm(), trace=[]):
        student(question="q0")
        traced = [inputs for predictor, inputs, _ in dspy.settings.trace if predictor is student.generate_code]
    infos = [inputs["variables_info"] for inputs in traced]
    assert sum(info.startswith("This run is a sub-task") for info in infos) == 1  # the child's step
    assert sum(not info.startswith("This run is a sub-task") for info in infos) == 2  # and the root's two
    with dspy.context(lm=tree_lm()):
        compiled = BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=0).compile(
            student, trainset=data
        )
    # It keeps one sampled step per example (which one depends on a hash of the steps).
    assert len(compiled.generate_code.demos) == 2
    for demo in compiled.generate_code.demos:
        assert (
            demo["variables_info"].startswith("This run is a sub-task")
            or "Variable `question`" in demo["variables_info"]
        )
    with dspy.context(lm=tree_lm()):
        assert compiled(question="again").answer == "child said 4"


def test_a_child_that_hits_its_turn_limit_answers_through_the_hidden_child_extractor():
    def turn(request: str, number: int) -> str:
        if "This run is a sub-task" in request:
            return "print('looking')"
        return "FINAL(answer=rlm_query('sub?', context='xyz'))"

    lm = ScriptedDSPyLM(rlm_replies(turn, extract=chat_reply(answer="child best effort")))
    program = RLM("question -> answer", config=CONFIG.with_overrides(max_depth=1, max_iterations=2))
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.answer == "child best effort"
    assert [name for name, _ in program.named_predictors()] == ["generate_code"]
