"""Prompt optimization on ourselves: compile the DSPy face's RLM for the embedded model on the suite.

The "prompt optimization experiment" a user runs with ``rlm_integrations.dspy.RLM``, on the
long-context suite (``benchmarks/longctx_suite``):

1. the metric is the suite's scorer (exact / list / numeric partial credit);
2. the trainset is the **train** split (families x ``--train-per-family``, interleaved by
   family so the first successful runs cover several families), the devset the **heldout** split;
3. ``baseline`` is ``RLM("context, question -> answer")`` with the embedded model as is,
   which means *with* the core's per-shape worked examples: the DSPy face offers them as
   `generate_code` demos to root LMs that prefer them (``LocalModel`` does), while the
   predictor has no demos of its own. ``--no-worked-examples`` builds every DSPy program with
   ``worked_examples=False`` (the baseline before that, and a compile that starts from it);
   the table's row label and a printed note say which baseline ran;
   ``compiled`` is the same module after ``BootstrapFewShot`` (``--max-demos`` bootstrapped
   demos of ``generate_code``; only runs that score >= ``--threshold`` become demos) or,
   with ``--optimizer gepa``, after GEPA (the same model writes the reflections);
4. both are scored on the held-out split, next to ``core``: the core loop with its
   hand-written per-shape worked examples and helpers (``rlm_integrations.RLM(LocalModel())``,
   what small models use today). The table, every answer (``--json``) and the compiled
   program (``--program``, ``program.save``; load it with ``RLM(...).load(path)``) are saved.

``--model scripted`` runs the whole pipeline with a scripted DSPy LM that executes each
task's reference program, and the suite's scripted reader for sub-calls (a smoke test of the
plumbing, no llama; see tests/unit/test_compile_small.py). The DSPy LM behind the local mode
wraps ``LocalModel`` in-process as a custom ``dspy.LM`` engine (no server).

    python benchmarks/compile_small.py --model scripted --families single_needle,count_records --sizes 8K
    nice -n 15 python benchmarks/compile_small.py --families single_needle --train-per-family 1 \\
        --heldout-per-family 1 --sizes 8K                       # one task each way, real model
    python benchmarks/compile_small.py --sizes 32K --train-per-family 2 --heldout-per-family 2   # the full run
    python benchmarks/compile_small.py --sizes 32K ... --no-worked-examples   # the DSPy rows without worked examples
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import dspy  # noqa: E402
from dspy.lm15 import Message, Request, Response, TextPart, Usage  # noqa: E402
from longctx_suite import FAMILIES, Task, make_task  # noqa: E402

from rlm_integrations import RLMConfig  # noqa: E402
from rlm_integrations.dspy import RLM  # noqa: E402
from rlm_integrations.dspy.orientation import prefers_worked_example  # noqa: E402

SIGNATURE = "context, question -> answer"
ROWS = ("baseline", "compiled", "core")
Metric = Callable[..., Any]


# --------------------------------------------------------------------------- data and metric


def build_tasks(families: Sequence[str], sizes: Sequence[str], split: str, per_family: int) -> list[Task]:
    """Tasks of one split, interleaved: index 0 of every family and size, then index 1, ..."""
    return [make_task(f, s, split, i) for i in range(per_family) for s in sizes for f in families]


def to_example(task: Task) -> dspy.Example:
    """A DSPy example: the inputs, plus the task's id for the metric (no labels: demos come from runs)."""
    example = dspy.Example(context=task.context, question=task.question, task_id=task.task_id)
    return example.with_inputs("context", "question")


def suite_metric(tasks: dict[str, Task], threshold: float = 1.0) -> Metric:
    """The suite's scorer as a DSPy metric.

    Evaluating (``trace`` None) it returns the score in [0, 1]; bootstrapping (a trace) it
    returns whether the score reaches `threshold`, so only good runs become demos.
    """

    def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float | bool:
        value = tasks[example.task_id].score(getattr(pred, "answer", None))
        return value >= threshold if trace is not None else value

    return metric


def gepa_metric(tasks: dict[str, Task]) -> Metric:
    """The scorer with textual feedback, in the form GEPA asks for."""

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        task, answer = tasks[gold.task_id], getattr(pred, "answer", None)
        value, status = task.score(answer), getattr(pred, "status", "?")
        feedback = f"score {value:.2f} (run {status}); expected {task.gold!r}, got {str(answer)[:200]!r}"
        return dspy.Prediction(score=value, feedback=feedback)

    return metric


# --------------------------------------------------------------------------- language models


def _call(request: Request) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """A lm15 request as our chat messages and call parameters."""
    system, config = request.system, request.config
    if system is not None and not isinstance(system, str):
        system = "".join(getattr(part, "text", "") or "" for part in system)
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
    params = {"max_tokens": config.max_tokens, "temperature": config.temperature}
    return messages, {k: v for k, v in params.items() if v is not None}


def _response(model: str, completion: Any) -> Response:
    used = completion.usage
    usage = Usage(used.prompt_tokens, used.completion_tokens, used.prompt_tokens + used.completion_tokens)
    return Response(None, model, Message.assistant([TextPart(completion.text)]), "stop", usage)


class LocalEngine:
    """A `dspy.LM` engine over one of our `LanguageModel`s (e.g. `LocalModel`), in-process."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def complete(self, request: Request) -> Response:
        """One blocking call."""
        messages, params = _call(request)
        return _response(request.model, self.model.complete(messages, **params))


class AsyncLocalEngine(LocalEngine):
    """The async twin (`LocalModel.acomplete` runs llama.cpp in a thread)."""

    async def complete(self, request: Request) -> Response:
        """One awaited call."""
        messages, params = _call(request)
        return _response(request.model, await self.model.acomplete(messages, **params))


def local_lm(model_name: str, max_tokens: int, threads: int | None = None) -> tuple[dspy.LM, Any]:
    """(a `dspy.LM` over the embedded model, the `LocalModel` itself for the core row)."""
    from rlm_integrations.lm import LocalModel

    started = time.monotonic()
    model = LocalModel(model=model_name, n_threads=threads)
    print(f"loaded {model_name} in {time.monotonic() - started:.1f} s", flush=True)
    engines = {"engine": LocalEngine(model), "async_engine": AsyncLocalEngine(model)}
    lm = dspy.LM(f"local/{model_name}", **engines, cache=False, num_retries=0, temperature=0.0, max_tokens=max_tokens)
    return lm, model


def scripted_lm(tasks: Sequence[Task]) -> dspy.LM:
    """A scripted DSPy LM: runs the reference program of the task whose question it is shown.

    Sub-calls get the suite's scripted reader's answers (from the generator's labels).
    """
    from longctx_suite._records import SUB_PROMPT

    from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies

    labels = {text: label for task in tasks for text, label in task.meta.get("labels", {}).items()}

    def turn(request: str, number: int) -> str:
        found = (task.reference_code for task in tasks if task.question in request)
        return next(found, "FINAL('no task matches this question')")

    def sub(prompt: str) -> str:
        text = prompt.split(SUB_PROMPT, 1)[-1].strip()
        label = labels.get(text)
        return "unknown" if label is None else "yes" if label == "complaint" else "no"

    return ScriptedDSPyLM(rlm_replies(turn, sub=sub), model="scripted/compile-small")


def scripted_reflection_lm() -> dspy.LM:
    """GEPA's reflection model in scripted mode: always proposes the same instruction."""
    from rlm_integrations.dspy.testing import ScriptedDSPyLM

    proposal = json.dumps({"new_instruction": "Find the answer with code, then submit it with FINAL."})
    return ScriptedDSPyLM(lambda messages: proposal, model="scripted/reflection")


# --------------------------------------------------------------------------- the experiment


@dataclass
class Settings:
    """What to compile and how."""

    optimizer: str = "bootstrap"
    max_demos: int = 2
    threshold: float = 1.0
    max_iterations: int = 6
    task_timeout: float = 0.0
    gepa_calls: int = 0
    scripted: bool = False
    rows: Sequence[str] = ROWS
    worked_examples: bool = True  # False: the DSPy programs never show the worked examples
    program: Path | None = None  # where the compiled program is saved (`program.save`)
    json: Path | None = None  # where the results are saved, after every task


def run_config(settings: Settings) -> RLMConfig:
    """The limits of every run (unlimited sub-calls in scripted mode: its reader reads every message)."""
    extra: dict[str, Any] = {"timeout_s": settings.task_timeout} if settings.task_timeout else {}
    if settings.scripted:
        extra["max_llm_calls"] = None
    return RLMConfig(max_iterations=settings.max_iterations, **extra)


def make_program(settings: Settings) -> RLM:
    """The DSPy face's RLM as a user would write it (with ``--no-worked-examples``: ``worked_examples=False``)."""
    return RLM(SIGNATURE, config=run_config(settings), worked_examples=None if settings.worked_examples else False)


def baseline_label(settings: Settings, lm: dspy.LM) -> str:
    """The baseline row's name in the table: whether its root LM was offered the worked examples."""
    shown = settings.worked_examples and prefers_worked_example(lm)
    return f"baseline ({'with' if shown else 'no'} worked examples)"


def baseline_note(settings: Settings, lm: dspy.LM) -> str:
    """One line on what the baseline row is, printed with the table."""
    if not settings.worked_examples:
        return (
            "baseline: RLM(...) with worked_examples=False (--no-worked-examples): no worked examples, "
            "the DSPy face before it offered them"
        )
    if prefers_worked_example(lm):
        return (
            "baseline: RLM(...) as is, so the root LM (it prefers worked examples) is shown the per-shape "
            "worked example as demos (a compiled program's own demos replace them); --no-worked-examples "
            "measures the baseline without them"
        )
    return "baseline: RLM(...) as is; this root LM does not ask for worked examples, so none are shown"


def compile_program(settings: Settings, train: list[Task], lm: dspy.LM, reflection: dspy.LM) -> tuple[RLM, Any]:
    """Compile a fresh program over the train split; returns it with what compiling took.

    ``tokens`` is what `dspy.track_usage` saw (GEPA's evaluation threads are not included).
    """
    from dspy.teleprompt import GEPA, BootstrapFewShot

    tasks = {t.task_id: t for t in train}
    trainset = [to_example(t) for t in train]
    optimizer: Any = (
        GEPA(metric=gepa_metric(tasks), max_metric_calls=settings.gepa_calls or 3 * len(trainset),
             reflection_lm=reflection, reflection_minibatch_size=min(2, len(trainset)), use_merge=False)
        if settings.optimizer == "gepa"
        else BootstrapFewShot(metric=suite_metric(tasks, settings.threshold),
                              max_bootstrapped_demos=settings.max_demos, max_labeled_demos=0, max_rounds=1)
    )  # fmt: skip
    extra = {"valset": trainset} if settings.optimizer == "gepa" else {}
    started = time.monotonic()
    with dspy.context(lm=lm), dspy.track_usage() as tracker:
        compiled = optimizer.compile(make_program(settings), trainset=trainset, **extra)
    used = [e for entries in tracker.usage_data.values() for e in entries]
    seed = make_program(settings).generate_code.signature.instructions
    info = {
        "optimizer": settings.optimizer,
        "train_tasks": [t.task_id for t in train],
        "wall_s": time.monotonic() - started,
        "tokens": sum(int(e.get("prompt_tokens") or 0) + int(e.get("completion_tokens") or 0) for e in used),
        "demos": len(compiled.generate_code.demos),
        "instructions_changed": compiled.generate_code.signature.instructions != seed,
    }
    return compiled, info


def run_row(row: str, task: Task, settings: Settings, program: RLM | None, lm: dspy.LM, core: Any) -> dict[str, Any]:
    """One held-out task through a DSPy program, or with `program` None through the core loop."""
    from longctx_suite.scripted import scripted_models

    from rlm_integrations import RLM as CoreRLM

    started, cells = time.monotonic(), []
    try:
        if program is None:
            rlm = CoreRLM(*(scripted_models(task) if core is None else (core,)), config=run_config(settings))
            result = rlm.completion(task.question, task.context)
            answer, error = result.answer, result.error
        else:
            with dspy.context(lm=lm):
                pred = program(context=task.context, question=task.question)
            answer, result, error = pred.answer, pred.rlm_result, None
        tokens, status = result.usage.total_tokens, result.status
        cells = [str(getattr(e, "code", ""))[:300] for e in result.trajectory.iter_events("cell_start")]
    except Exception as exc:
        answer, tokens, status, error = None, 0, "error", f"{type(exc).__name__}: {exc}"
    wall, text = time.monotonic() - started, "" if answer is None else str(answer)
    return {"row": row, **task.summary(), "answer": text[:400], "score": task.score(answer), "wall_s": wall,
            "tokens": tokens, "status": status, "error": error, "cells": cells}  # fmt: skip


def table(results: list[dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """Per family: each row's mean score, median time and median tokens; then the overall means.

    `labels` names rows in the header (e.g. ``baseline (with worked examples)``); others keep their own name.
    """
    rows = [r for r in ROWS if any(x["row"] == r for x in results)]
    families = list(dict.fromkeys(x["family"] for x in results))
    named = [(labels or {}).get(r, r) for r in rows]
    head = "| family | " + " | ".join(f"{r} score | {r} time | {r} tokens" for r in named) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(rows)]
    for family in [*families, None]:
        cells = []
        for row in rows:
            mine = [x for x in results if x["row"] == row and (family is None or x["family"] == family)]
            if not mine:
                cells.append("not run | | ")
                continue
            score = statistics.mean(x["score"] for x in mine)
            wall = statistics.median(x["wall_s"] for x in mine)
            tokens = statistics.median(x["tokens"] for x in mine)
            cells.append(f"{100 * score:.0f}% ({len(mine)}) | {wall:.1f} s | {tokens / 1000:.1f}K")
        lines.append(f"| {family or '**all**'} | " + " | ".join(cells) + " |")
    lines.append("\nScore: mean over tasks (count); time and tokens: median per task.")
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> str:
    """Whether the compiled program should ship: it must beat both the baseline and the core loop."""
    scores = {r: [x["score"] for x in results if x["row"] == r] for r in ROWS}
    means = {r: statistics.mean(v) for r, v in scores.items() if v}
    if "compiled" not in means:
        return "no compiled row"
    rivals = {r: v for r, v in means.items() if r != "compiled"}
    shown = ", ".join(f"{r} {100 * v:.0f}%" for r, v in means.items())
    wins = all(means["compiled"] > v for v in rivals.values())
    return f"{'ship the compiled program' if wins else 'keep the hand-written default'} ({shown})"


def experiment(
    settings: Settings, train: list[Task], heldout: list[Task], lm: dspy.LM, reflection: dspy.LM, core_model: Any
) -> dict[str, Any]:
    """Compile over `train`, score every row on `heldout`; save the program and the results as they come."""
    report: dict[str, Any] = {"settings": vars(settings), "results": []}
    report["labels"] = {"baseline": baseline_label(settings, lm)}
    report["baseline"] = baseline_note(settings, lm)
    print(report["baseline"], flush=True)

    def save() -> None:
        if settings.json is not None:
            settings.json.write_text(json.dumps(report, indent=1, default=str))

    compiled: RLM | None = None
    if "compiled" in settings.rows:
        compiled, report["compile"] = compile_program(settings, train, lm, reflection)
        print(f"compiled: {json.dumps(report['compile'])}", flush=True)
        if settings.program is not None:
            compiled.save(str(settings.program))
        save()
    programs = {"baseline": make_program(settings), "compiled": compiled, "core": None}
    unchanged = "compile" in report and not report["compile"]["demos"] and not report["compile"]["instructions_changed"]
    for task in heldout:
        done: dict[str, dict[str, Any]] = {}
        for row in settings.rows:
            if row == "compiled" and unchanged and "baseline" in done:  # the same program: do not run it twice
                record = {**done["baseline"], "row": row, "same_as": "baseline"}
            else:
                record = run_row(row, task, settings, programs[row], lm, core_model)
            done[row] = record
            report["results"].append(record)
            save()
            print(
                f"{row:8} {task.task_id:32} score {record['score']:.2f}  {record['wall_s']:6.1f} s  "
                f"{record['status']}  answer={record['answer'][:60]!r}",
                flush=True,
            )
    report["table"] = table(report["results"], report["labels"])
    report["verdict"] = verdict(report["results"])
    save()
    return report


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="'scripted', or a LocalModel name")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    p.add_argument("--sizes", default="32K", help="comma list of sizes (8K, 32K, 128K, ... or e.g. 64K)")
    p.add_argument("--train-per-family", type=int, default=2)
    p.add_argument("--heldout-per-family", type=int, default=2)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument(
        "--no-worked-examples",
        dest="worked_examples",
        action="store_false",
        help="build the DSPy programs (baseline, and the one compiled) with worked_examples=False; "
        "the core row is unchanged",
    )
    p.add_argument("--optimizer", default="bootstrap", choices=("bootstrap", "gepa"))
    p.add_argument("--max-demos", type=int, default=2, help="BootstrapFewShot's max_bootstrapped_demos")
    p.add_argument("--threshold", type=float, default=1.0, help="score a run needs to become a demo")
    p.add_argument("--gepa-calls", type=int, default=0, help="GEPA's max_metric_calls (0: 3 per train task)")
    p.add_argument("--max-iterations", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=768, help="reply cap of the local DSPy LM")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its choice)")
    p.add_argument("--task-timeout", type=float, default=0, help="seconds per run (RLMConfig.timeout_s)")
    p.add_argument("--json", type=Path, default=Path("compile-small-results.json"))
    p.add_argument("--program", type=Path, default=Path("compile-small-program.json"))
    args = p.parse_args(argv)
    args.rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    bad = sorted(set(args.rows) - set(ROWS))
    if bad:
        p.error(f"unknown rows {bad}: use {', '.join(ROWS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the experiment and print the table."""
    args = parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    names = ("optimizer", "max_demos", "threshold", "max_iterations", "task_timeout", "gepa_calls", "program", "json")
    settings = Settings(
        **{n: getattr(args, n) for n in names},
        scripted=args.model == "scripted",
        rows=args.rows,
        worked_examples=args.worked_examples,
    )
    train = build_tasks(families, sizes, "train", args.train_per_family)
    heldout = build_tasks(families, sizes, "heldout", args.heldout_per_family)
    if settings.scripted:
        lm, core_model = scripted_lm([*train, *heldout]), None
        reflection_lm = scripted_reflection_lm()
    else:
        lm, core_model = local_lm(args.model, args.max_tokens, args.threads)
        reflection_lm = lm
    report = experiment(settings, train, heldout, lm, reflection_lm, core_model)
    print(f"\n{report['table']}\n\n{report['baseline']}\nverdict: {report['verdict']}")
    if "compile" in report:
        done = report["compile"]
        print(f"compile: {done['wall_s']:.0f} s, {done['tokens']:,} tokens, {done['demos']} demos -> {args.program}")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
