"""benchmarks/compile_small.py: the metric, bootstrapping only good runs, the scripted pipeline end to end."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import get_args

import pytest

dspy = pytest.importorskip("dspy")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
compile_small = importlib.import_module("compile_small")
suite = importlib.import_module("longctx_suite")

from rlm_integrations.core.question_shape import Shape  # noqa: E402
from rlm_integrations.core.worked_examples import worked_example  # noqa: E402
from rlm_integrations.dspy import RLM  # noqa: E402
from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies  # noqa: E402


def test_metric_scores_like_the_suite_and_bootstraps_only_at_the_threshold():
    task = suite.make_task("count_records", "8K", "train", 0)
    tasks = {task.task_id: task}
    metric = compile_small.suite_metric(tasks, threshold=1.0)
    example = compile_small.to_example(task)
    assert set(example.inputs().keys()) == {"context", "question"}
    right, near = dspy.Prediction(answer=str(task.gold)), dspy.Prediction(answer=str(task.gold + 1))
    assert metric(example, right) == 1.0
    assert metric(example, near) == pytest.approx(0.75)  # numeric partial credit while evaluating
    assert metric(example, right, trace=[]) is True
    assert metric(example, near, trace=[]) is False  # not good enough to become a demo
    feedback = compile_small.gepa_metric(tasks)(example, near)
    assert feedback.score == pytest.approx(0.75)
    assert repr(task.gold) in feedback.feedback


def test_verdict_ships_only_a_program_that_beats_both_rivals():
    def results(baseline: float, compiled: float, core: float) -> list[dict[str, object]]:
        return [{"row": r, "score": s} for r, s in (("baseline", baseline), ("compiled", compiled), ("core", core))]

    assert compile_small.verdict(results(0.2, 0.6, 0.5)).startswith("ship the compiled program")
    assert compile_small.verdict(results(0.2, 0.5, 0.5)).startswith("keep the hand-written default")
    assert compile_small.verdict(results(0.7, 0.6, 0.1)).startswith("keep the hand-written default")


def test_bootstrap_keeps_demos_only_from_runs_that_scored():
    needles = [suite.make_task("single_needle", "8K", "train", i) for i in range(2)]
    count = suite.make_task("count_records", "8K", "train", 0)
    train = [needles[0], count, needles[1]]

    def turn(request: str, number: int) -> str:
        if count.question in request:
            return "FINAL('0')"  # a wrong count: partial credit, below the threshold
        code: str = next(t.reference_code for t in needles if t.question in request)  # suite is imported untyped
        return code

    lm = ScriptedDSPyLM(rlm_replies(turn))
    settings = compile_small.Settings(max_demos=3, scripted=True)
    compiled, info = compile_small.compile_program(settings, train, lm, lm)
    codes = [demo["code"].strip() for demo in compiled.generate_code.demos]
    assert info["demos"] == 2
    assert sorted(codes) == sorted(t.reference_code.strip() for t in needles)  # not the count's FINAL('0')


def test_scripted_pipeline_end_to_end(tmp_path, capsys):
    results, program = tmp_path / "results.json", tmp_path / "program.json"
    argv = ["--model", "scripted", "--families", "single_needle,count_reading", "--sizes", "8K"]
    argv += ["--train-per-family", "1", "--heldout-per-family", "1", "--json", str(results), "--program", str(program)]
    assert compile_small.main(argv) == 0

    report = json.loads(results.read_text())
    rows = [(r["row"], r["family"], r["split"]) for r in report["results"]]
    assert sorted(rows) == sorted(
        (row, family, "heldout") for row in compile_small.ROWS for family in ("single_needle", "count_reading")
    )
    assert all(r["score"] == 1.0 and r["status"] == "completed" for r in report["results"])  # reference programs
    assert all(r["tokens"] > 0 for r in report["results"])
    for r in report["results"]:  # each record keeps the code its run ran (cut to 300 characters)
        reference = suite.make_task(r["family"], r["size"], r["split"], r["index"]).reference_code.strip()
        assert len(r["cells"]) == 1 and reference.startswith(r["cells"][0][:300].strip())
    assert report["compile"]["demos"] == 2
    assert report["verdict"].startswith("keep the hand-written default")  # a tie does not ship
    out = capsys.readouterr().out
    assert "| single_needle |" in out and "| count_reading |" in out and "verdict:" in out

    loaded = RLM(compile_small.SIGNATURE)
    loaded.load(str(program))
    train = [suite.make_task(f, "8K", "train", 0) for f in ("single_needle", "count_reading")]
    assert [d["code"].strip() for d in loaded.generate_code.demos] == [t.reference_code.strip() for t in train]
    task = suite.make_task("single_needle", "8K", "heldout", 1)  # not one the run saw
    with dspy.context(lm=compile_small.scripted_lm([task])):
        assert task.score(loaded(context=task.context, question=task.question).answer) == 1.0


def test_a_compile_that_changed_nothing_is_not_run_twice(tmp_path):
    train = [suite.make_task("single_needle", "8K", "train", 0)]
    heldout = [suite.make_task("single_needle", "8K", "heldout", 0)]
    lm = ScriptedDSPyLM(rlm_replies(["FINAL('not found')"]))  # never right: nothing to bootstrap
    settings = compile_small.Settings(scripted=True, rows=("baseline", "compiled"), json=tmp_path / "r.json")
    report = compile_small.experiment(settings, train, heldout, lm, lm, None)
    assert report["compile"]["demos"] == 0
    baseline, compiled = report["results"]
    assert compiled["same_as"] == "baseline" and compiled["score"] == baseline["score"] == 0.0
    root_calls = [c for c in lm.calls if "[[ ## iteration ## ]]" in c[-1]["content"]]
    assert len(root_calls) == 2  # one train run, one held-out run: the compiled row reused the baseline's
    assert json.loads((tmp_path / "r.json").read_text())["verdict"].startswith("keep the hand-written default")


def _root_requests(lm: ScriptedDSPyLM) -> list[list[dict[str, str]]]:
    return [c for c in lm.calls if "[[ ## iteration ## ]]" in c[-1]["content"]]


@pytest.mark.parametrize("offered", [True, False])
def test_the_baseline_shows_the_worked_examples_unless_told_not_to(offered):
    task = suite.make_task("single_needle", "8K", "heldout", 0)
    lm = compile_small.scripted_lm([task])
    lm.prefers_worked_example = True  # as the DSPy LM over LocalModel does
    settings = compile_small.Settings(scripted=True, rows=("baseline",), worked_examples=offered)
    assert compile_small.make_program(settings).worked_examples is (None if offered else False)
    report = compile_small.experiment(settings, [], [task], lm, lm, None)
    (record,) = report["results"]
    assert record["score"] == 1.0
    (request,) = _root_requests(lm)
    example_codes = {turn.code for shape in get_args(Shape) for turn in worked_example(shape).turns}
    shown = [m for m in request[1:-1] if any(code in m["content"] for code in example_codes)]
    assert bool(shown) is offered  # the demo turns come before the real request
    label = f"baseline ({'with' if offered else 'no'} worked examples)"
    assert report["labels"] == {"baseline": label}
    assert report["table"].startswith(f"| family | {label} score |")
    assert "--no-worked-examples" in report["baseline"]
    assert ("worked_examples=False" in report["baseline"]) is not offered


def test_the_flag_reaches_the_settings_and_the_printed_table(tmp_path, capsys):
    results = tmp_path / "results.json"
    argv = ["--model", "scripted", "--families", "single_needle", "--sizes", "8K", "--rows", "baseline"]
    argv += ["--train-per-family", "1", "--heldout-per-family", "1", "--json", str(results)]
    assert compile_small.parse_args(argv).worked_examples is True
    assert compile_small.main([*argv, "--no-worked-examples"]) == 0
    report = json.loads(results.read_text())
    assert report["settings"]["worked_examples"] is False
    assert [r["score"] for r in report["results"]] == [1.0]
    out = capsys.readouterr().out
    assert "| baseline (no worked examples) score |" in out
    assert "baseline: RLM(...) with worked_examples=False (--no-worked-examples)" in out
