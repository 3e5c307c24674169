"""The module inside DSPy's machinery: async, Evaluate, batch, copies, save/load, callbacks, streaming."""

from __future__ import annotations

import asyncio
import re
import time
import typing

import pytest

pytest.importorskip("dspy")
import dspy
from dspy.streaming import StatusMessage, StatusMessageProvider
from dspy.utils.callback import BaseCallback

from rlm_integrations import RLMConfig
from rlm_integrations.dspy import RLM
from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

CONFIG = RLMConfig(cell_timeout_s=20.0)


def echo_question_lm(latency_s: float = 0.0) -> ScriptedDSPyLM:
    """Turn 1 asks the sub-model; turn 2 submits the question upper-cased (each run answers its own question)."""

    def turn(request: str, number: int) -> str:
        if number == 1:
            return "note = llm_query('hello')\nprint(note)"
        return "FINAL(answer=question.upper())"

    return ScriptedDSPyLM(rlm_replies(turn, sub="noted"), latency_s=latency_s)


def examples(count: int) -> list[typing.Any]:
    return [
        dspy.Example(context=f"text {i}", question=f"q{i}", answer=f"Q{i}").with_inputs("context", "question")
        for i in range(count)
    ]


def exact(example: typing.Any, pred: typing.Any, trace: typing.Any = None) -> bool:
    return bool(example.answer == pred.answer)


# -- async ------------------------------------------------------------------------------------------
async def test_aforward_is_really_async_and_concurrent_calls_overlap():
    program = RLM("context, question -> answer", config=CONFIG)
    with dspy.context(lm=echo_question_lm(latency_s=0.3)):
        started = time.perf_counter()
        single = await program.acall(context="c", question="solo")
        one = time.perf_counter() - started
        started = time.perf_counter()
        preds = await asyncio.gather(*(program.acall(context="c", question=f"q{i}") for i in range(8)))
        eight = time.perf_counter() - started
    assert single.answer == "SOLO"
    assert [p.answer for p in preds] == [f"Q{i}" for i in range(8)]
    assert one >= 0.9  # three model calls of 0.3 s each
    # Run one after another, eight calls would take 8x one. They overlap: on an idle machine
    # about 1.2x (benchmarks/dspy_vs_builtin.py); the bound leaves room for a busy CI box.
    assert eight < 3 * one


# -- DSPy's parallel machinery ----------------------------------------------------------------------
def test_evaluate_with_threads():
    program = RLM("context, question -> answer", config=CONFIG)
    with dspy.context(lm=echo_question_lm()):
        result = dspy.Evaluate(devset=examples(6), metric=exact, num_threads=4, display_progress=False)(program)
    assert result.score == 100.0


def test_batch():
    program = RLM("context, question -> answer", config=CONFIG)
    with dspy.context(lm=echo_question_lm()):
        preds = program.batch(examples(3), num_threads=3, disable_progress_bar=True)
    assert [p.answer for p in preds] == ["Q0", "Q1", "Q2"]


# -- copies -----------------------------------------------------------------------------------------
def test_deepcopy_and_reset_copy_are_independent_and_runnable():
    program = RLM("context, question -> answer", config=CONFIG, sub_lm=ScriptedDSPyLM([], model="sub/lm"))
    program.generate_code.demos = [dspy.Example(reasoning="r", code="print(1)")]
    copy = program.deepcopy()
    copy.generate_code.demos.append(dspy.Example(reasoning="r2", code="print(2)"))
    assert len(program.generate_code.demos) == 1
    assert copy.generate_code is not program.generate_code
    assert copy.config == program.config
    fresh = program.reset_copy()
    assert fresh.generate_code.demos == []
    with dspy.context(lm=echo_question_lm()):
        assert copy(context="c", question="a").answer == "A"
        assert fresh(context="c", question="b").answer == "B"


# -- save / load ------------------------------------------------------------------------------------
def test_save_and_load_keep_predictor_state_and_module_settings(tmp_path):
    program = RLM(
        "context, question -> answer",
        max_iterations=7,
        max_depth=0,
        sub_lm=dspy.LM("openai/gpt-4o-mini", temperature=0.3),
        config=RLMConfig(cell_timeout_s=12.0, max_llm_calls=40, timeout_s=99.0),
        history_chars=5_000,
        demo_chars=1_000,
        optimize_extract=True,
    )
    program.generate_code.demos = [dspy.Example(repl_history="h", reasoning="r", code="print(1)")]
    program.generate_code.signature = program.generate_code.signature.with_instructions("Tuned instructions.")
    path = tmp_path / "program.json"
    program.save(path)

    loaded = RLM("context, question -> answer")
    loaded.load(path)
    assert loaded.config == program.config
    assert loaded.config.max_iterations == 7 and loaded.config.max_depth == 0
    assert (loaded.history_chars, loaded.demo_chars) == (5_000, 1_000)
    assert loaded.optimize_extract
    assert [name for name, _ in loaded.named_predictors()] == ["generate_code", "extract"]
    sub_lm = typing.cast(typing.Any, loaded.sub_lm)
    assert sub_lm.model == "openai/gpt-4o-mini"
    assert sub_lm.kwargs["temperature"] == 0.3
    assert loaded.generate_code.signature.instructions == "Tuned instructions."
    assert loaded.generate_code.demos[0]["code"] == "print(1)"


class Program(dspy.Module):
    def __init__(self, **settings: typing.Any) -> None:
        super().__init__()
        self.find = RLM("context, question -> answer", **settings)

    def forward(self, context: str, question: str) -> typing.Any:
        return self.find(context=context, question=question)


def test_settings_survive_save_and_load_of_a_program_that_contains_the_rlm(tmp_path):
    program = Program(max_iterations=4, config=RLMConfig(cell_timeout_s=9.0, max_llm_calls=30), history_chars=4_000)
    program.find.demo_chars = 900  # changed after construction: saved too
    program.save(tmp_path / "program.json")
    loaded = Program()
    assert loaded.find.config.max_iterations == 20
    loaded.load(tmp_path / "program.json")
    assert loaded.find.config == program.find.config
    assert (loaded.find.config.max_iterations, loaded.find.config.max_llm_calls) == (4, 30)
    assert (loaded.find.history_chars, loaded.find.demo_chars) == (4_000, 900)
    copied = loaded.deepcopy()
    assert copied.find.config.max_iterations == 4
    with dspy.context(lm=echo_question_lm()):
        assert copied(context="c", question="z").answer == "Z"


def test_save_program_pickles_the_whole_module(tmp_path):
    program = RLM("context, question -> answer", max_iterations=4, config=CONFIG)
    program.save(tmp_path / "whole", save_program=True)
    loaded = dspy.load(tmp_path / "whole", allow_pickle=True)
    assert isinstance(loaded, RLM)
    assert loaded.config.max_iterations == 4
    with dspy.context(lm=echo_question_lm()):
        assert loaded(context="c", question="x").answer == "X"


# -- callbacks and streaming ------------------------------------------------------------------------
class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_module_start(self, call_id, instance, inputs):
        self.events.append(("module_start", type(instance).__name__))

    def on_lm_start(self, call_id, instance, inputs):
        self.events.append(("lm_start", instance.model))

    def on_interpreter_execute_start(self, call_id, instance, inputs):
        self.events.append(("cell_start", inputs["code"]))

    def on_interpreter_execute_end(self, call_id, outputs, exception=None):
        self.events.append(("cell_end", outputs["stdout"]))


def test_callbacks_see_module_lm_and_cell_events():
    recorder = Recorder()
    program = RLM("context, question -> answer", config=CONFIG)
    with dspy.context(lm=echo_question_lm(), callbacks=[recorder]):
        program(context="c", question="q")
    events = recorder.events
    assert events[0] == ("module_start", "RLM")
    assert ("module_start", "StepPredict") in events  # generate_code, a dspy.Predict
    assert events.count(("lm_start", "scripted/dspy")) == 3  # two turns and one llm_query
    assert ("cell_start", "note = llm_query('hello')\nprint(note)") in events
    assert ("cell_end", "noted\n") in events


def test_streamify_shows_a_status_message_per_turn():
    program = RLM("context, question -> answer", config=CONFIG)
    stream = dspy.streamify(program, async_streaming=False)
    with dspy.context(lm=echo_question_lm()):
        items = list(stream(context="c", question="q"))
    messages = [item.message for item in items if isinstance(item, StatusMessage)]
    assert isinstance(items[-1], dspy.Prediction) and items[-1].answer == "Q"
    assert "RLM turn 1/20: writing code..." in messages
    assert "RLM turn 2: outputs submitted." in messages
    assert messages.index("RLM turn 1/20: writing code...") < messages.index("RLM turn 2/20: writing code...")


class Quiet(StatusMessageProvider):
    def rlm_status_message(self, event):
        return f"turn {event.iteration}" if event.kind == "iteration_start" else None


async def test_streamify_an_async_program_with_a_custom_provider():
    program = RLM("context, question -> answer", config=CONFIG)
    stream = dspy.streamify(program, is_async_program=True, status_message_provider=Quiet())
    with dspy.context(lm=echo_question_lm()):
        items = [item async for item in stream(context="c", question="q")]
    assert [item.message for item in items if isinstance(item, StatusMessage)] == ["turn 1", "turn 2"]
    assert items[-1].answer == "Q"


def test_prediction_carries_trajectory_status_and_saveable_result(tmp_path):
    program = RLM("context, question -> answer", config=CONFIG)
    with dspy.context(lm=echo_question_lm()):
        pred = program(context="c", question="q")
    assert pred.status == "completed"
    assert [step["iteration"] for step in pred.trajectory] == [1, 2]
    pred.rlm_result.save(tmp_path / "run.jsonl")
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    assert re.search(r'"kind": "run_start"', lines[0])
    assert pred.usage.calls == 3
