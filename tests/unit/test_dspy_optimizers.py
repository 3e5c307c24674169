"""Optimizers compile programs containing the RLM end to end, with scripted LMs, and the result saves, loads, runs."""

from __future__ import annotations

import json
import typing

import pytest

pytest.importorskip("dspy")
import dspy
from dspy.teleprompt import GEPA, BootstrapFewShot

from rlm_integrations import RLMConfig
from rlm_integrations.dspy import RLM
from rlm_integrations.dspy.signatures import GUIDE_PLACEHOLDER
from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

CONFIG = RLMConfig(cell_timeout_s=20.0)
TUNED = "TUNED: the answer is the first word of the context."


class Pipeline(dspy.Module):
    """A user's program: an RLM step followed by an ordinary predictor."""

    def __init__(self) -> None:
        super().__init__()
        self.find = RLM("context, question -> answer", config=CONFIG, demo_chars=1_500)
        self.polish = dspy.Predict("answer -> final")

    def forward(self, context: str, question: str) -> typing.Any:
        found = self.find(context=context, question=question)
        return dspy.Prediction(answer=self.polish(answer=found.answer).final, status=found.status)


def first_word_lm(*, tuned_only: bool = False) -> ScriptedDSPyLM:
    """Looks at the context with long output (two turns), then submits the first word of the context.

    With `tuned_only`, it submits the last word unless the instructions say TUNED (what GEPA must find).
    """

    def turn(request: str, number: int) -> str:
        if number < 3:
            return f"print('{number}' * 4000)"
        return "FINAL(answer=context.split()[0])"

    rlm = rlm_replies(turn)

    def reply(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        if "[[ ## answer ## ]]" in last and "[[ ## iteration ## ]]" not in last:  # the `polish` predictor
            answer = last.split("[[ ## answer ## ]]")[1].strip().split("\n\n")[0]
            return f"[[ ## final ## ]]\n{answer}\n\n[[ ## completed ## ]]"
        text = rlm(messages)
        if tuned_only and TUNED not in messages[0]["content"]:
            return text.replace("context.split()[0]", "context.split()[-1]")
        return text

    return ScriptedDSPyLM(reply)


def trainset() -> list[typing.Any]:
    return [
        dspy.Example(context=f"alpha{i} beta gamma", question="first word?", answer=f"alpha{i}").with_inputs(
            "context", "question"
        )
        for i in range(3)
    ]


def test_extract_is_hidden_from_optimizers_unless_asked_for():
    assert [name for name, _ in Pipeline().named_predictors()] == ["find.generate_code", "polish"]
    exposed = RLM("context, question -> answer", optimize_extract=True)
    assert [name for name, _ in exposed.named_predictors()] == ["generate_code", "extract"]


def test_bootstrap_fewshot_compiles_with_bounded_demos(tmp_path):
    lm = first_word_lm()

    def metric(example: typing.Any, pred: typing.Any, trace: typing.Any = None) -> bool:
        return bool(pred.answer.startswith("alpha"))

    with dspy.context(lm=lm):
        compiled = BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0).compile(
            Pipeline(), trainset=trainset()
        )
    demos = compiled.find.generate_code.demos
    assert len(demos) == 2
    assert len(compiled.polish.demos) == 2
    for demo in demos:
        assert demo["repl_guide"] == GUIDE_PLACEHOLDER
        assert len(demo["repl_history"]) <= 1_600  # bounded, though the run printed 8,000 characters
        assert len(demo["variables_info"]) <= 800
    assert all(demo["code"].startswith(("print(", "FINAL(")) for demo in demos)

    path = tmp_path / "compiled.json"
    compiled.save(path)
    saved = json.loads(path.read_text())
    assert len(saved["find.generate_code"]["demos"]) == 2
    loaded = Pipeline()
    loaded.load(path)
    assert [(d["repl_history"], d["code"]) for d in loaded.find.generate_code.demos] == [
        (d["repl_history"], d["code"]) for d in demos
    ]
    with dspy.context(lm=lm):
        assert loaded(context="zeta eta", question="first word?").answer == "zeta"


def test_gepa_tunes_the_instructions_and_keeps_the_repl_guide(tmp_path):
    lm = first_word_lm(tuned_only=True)
    reflection = ScriptedDSPyLM(lambda messages: json.dumps({"new_instruction": TUNED}), model="scripted/reflection")

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        ok = gold.answer == pred.answer
        return dspy.Prediction(
            score=float(ok), feedback="right" if ok else f"expected {gold.answer}, got {pred.answer}"
        )

    program = Pipeline()
    seed_instructions = program.find.generate_code.signature.instructions
    with dspy.context(lm=lm):
        optimizer = GEPA(
            metric=metric, max_metric_calls=15, reflection_lm=reflection, reflection_minibatch_size=2, use_merge=False
        )
        compiled = optimizer.compile(program, trainset=trainset(), valset=trainset())
    assert reflection.calls, "GEPA never asked the reflection model"
    assert compiled.find.generate_code.signature.instructions == TUNED
    assert seed_instructions != TUNED
    assert "FINAL(answer=...)" in compiled.find.repl_guide  # the mechanics are not part of what GEPA rewrites

    path = tmp_path / "gepa.json"
    compiled.save(path)
    loaded = Pipeline()
    loaded.load(path)
    assert loaded.find.generate_code.signature.instructions == TUNED
    with dspy.context(lm=lm):
        assert loaded(context="omega psi", question="first word?").answer == "omega"
