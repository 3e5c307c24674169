"""Benchmark our DSPy module against DSPy's own `dspy.RLM`, with the same scripted replies.

Both modules get the signature ``context, question -> answer`` and a scripted `dspy.LM`
that plays the same turns: ``print(len(context))`` until the submitting turn, then
``FINAL(answer=str(len(context)))`` (ours) or ``SUBMIT(answer=str(len(context)))``
(dspy.RLM: the same call under its name). The question says on which turn to submit, so
one script serves runs of any length. Measured at a 10 KB and a 20 MB context:

- wall time per forward (2 turns and 6 turns; the LM answers instantly),
- per-iteration overhead: the median time from one turn's model call to the next one's,
  taken by a DSPy callback on the step predictor, i.e. what a turn costs besides the model
  (prompt building, parsing, running the cell, passing the inputs to the interpreter),
- 8 concurrent `acall`s (3 turns each, 0.2 s of LM latency per call, 10 KB context)
  against one `acall` alone: concurrent calls that overlap take about as long as one.

Contenders: ours (`rlm_integrations.dspy.RLM`, sandboxed worker REPL), `dspy.RLM` with
`dspy.LocalInterpreter` (a CPython subprocess), and `dspy.RLM` with its default
`dspy.PythonInterpreter` (Deno + Pyodide; it cannot start offline, and the table says so).
Each runs in its own child process per phase.

    python benchmarks/dspy_vs_builtin.py               # full run (a few minutes)
    python benchmarks/dspy_vs_builtin.py --quick       # smoke run: 1 MB instead of 20 MB, fewer repetitions
    python benchmarks/dspy_vs_builtin.py --json out.json --only ours,dspy_local

Needs: the project with its `[dspy]` extra (`dspy` 3.4.x), and `deno` (PyPI) for the Pyodide column.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    Recorder,
    fmt_ratio,
    fmt_seconds,
    machine_info,
    make_text,
    print_table,
    run_child,
    write_json,
)

SIGNATURE = "context, question -> answer"
SHORT_TURNS, LONG_TURNS, CONCURRENT_TURNS = 2, 6, 3
CONCURRENT_CALLS = 8
LM_LATENCY_S = 0.2
KB, MB = 1_000, 1_000_000


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    reps: dict[int, int]
    concurrent_reps: int


FULL = Plan(sizes=(10 * KB, 20 * MB), reps={10 * KB: 7, 20 * MB: 3}, concurrent_reps=3)
QUICK = Plan(sizes=(10 * KB, 1 * MB), reps={10 * KB: 3, 1 * MB: 2}, concurrent_reps=1)


@dataclass(frozen=True)
class Contender:
    label: str
    submit: str
    build: Callable[[], Any]


def _ours() -> Any:
    from rlm_integrations import RLMConfig
    from rlm_integrations.dspy import RLM

    return RLM(SIGNATURE, config=RLMConfig(max_iterations=10, cell_timeout_s=120))


def _dspy_local() -> Any:
    import dspy

    return dspy.RLM(SIGNATURE, max_iters=10, interpreter_factory=dspy.LocalInterpreter)


def _dspy_pyodide() -> Any:
    import dspy

    return dspy.RLM(SIGNATURE, max_iters=10)


CONTENDERS = {
    "ours": Contender("ours (rlm_integrations.dspy.RLM)", "FINAL", _ours),
    "dspy_local": Contender("dspy.RLM + LocalInterpreter", "SUBMIT", _dspy_local),
    "dspy_pyodide": Contender("dspy.RLM + PythonInterpreter (Deno)", "SUBMIT", _dspy_pyodide),
}

_TURN = re.compile(r"\[\[ ## iteration ## \]\]\s*(?:Turn )?(\d+)")
_SUBMIT_ON = re.compile(r"submit on turn (\d+)")


def scripted_lm(submit: str, latency_s: float) -> Any:
    """The same turns for every contender: look at the context, then submit its length on the asked turn."""
    from rlm_integrations.dspy.testing import ScriptedDSPyLM, chat_reply

    def reply(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        turn = _TURN.search(last)
        if turn is None:
            return chat_reply(answer="(extracted)")
        number = int(turn.group(1))
        wanted = _SUBMIT_ON.search(last)
        if wanted and number >= int(wanted.group(1)):
            return chat_reply(reasoning="I have seen the length.", code=f"{submit}(answer=str(len(context)))")
        return chat_reply(reasoning="Look at the context first.", code="print(len(context))")

    return ScriptedDSPyLM(reply, model="scripted/bench", latency_s=latency_s)


# --------------------------------------------------------------------------- child side


class TurnClock:
    """A DSPy callback noting when each step predictor (the one that writes `code`) starts."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return self._ignore
        raise AttributeError(name)

    def _ignore(self, **_: Any) -> None:
        return None

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        import dspy

        if isinstance(instance, dspy.Predict) and "code" in instance.signature.output_fields:
            self.starts.append(time.perf_counter())


def _forward(program: Any, context: str, turns: int) -> float:
    time.sleep(0.2)  # let the previous call's processes wind down: each forward starts from a quiet machine
    started = time.perf_counter()
    pred = program(context=context, question=f"How long is the context? (submit on turn {turns})")
    elapsed = time.perf_counter() - started
    if str(pred.answer) != str(len(context)):
        raise RuntimeError(f"wrong answer {pred.answer!r} (expected {len(context)})")
    return elapsed


def phase_size(key: str, size: int, plan: Plan, rec: Recorder) -> None:
    import dspy

    contender = CONTENDERS[key]
    context = make_text(size)
    clock = TurnClock()
    dspy.configure(lm=scripted_lm(contender.submit, 0.0), callbacks=[clock])
    program = contender.build()
    rec.step(f"warm-up at {size}")
    _forward(program, context, SHORT_TURNS)
    tag = _tag(size)
    for turns in (SHORT_TURNS, LONG_TURNS):
        rec.step(f"{turns} turns at {size}")
        samples, intervals = [], []
        for _ in range(plan.reps[size]):
            clock.starts = []
            samples.append(_forward(program, context, turns))
            intervals += clock.intervals()
        rec.set(f"forward_{turns}_{tag}", statistics.median(samples))
        if turns == LONG_TURNS:
            rec.set(f"per_iteration_{tag}", statistics.median(intervals))


async def _acall(program: Any, context: str, index: int) -> float:
    started = time.perf_counter()
    pred = await program.acall(context=context, question=f"Call {index}: how long? (submit on turn {CONCURRENT_TURNS})")
    if str(pred.answer) != str(len(context)):
        raise RuntimeError(f"wrong answer {pred.answer!r}")
    return time.perf_counter() - started


async def phase_concurrent(key: str, plan: Plan, rec: Recorder) -> None:
    import dspy

    contender = CONTENDERS[key]
    context = make_text(10 * KB)
    program = contender.build()
    with dspy.context(lm=scripted_lm(contender.submit, LM_LATENCY_S)):
        rec.step("warm-up acall")
        await _acall(program, context, 0)
        rec.step("single acall")
        singles = [await _acall(program, context, i) for i in range(plan.concurrent_reps)]
        rec.set("acall_single", statistics.median(singles))
        rec.step("concurrent acalls")
        totals = []
        for _ in range(plan.concurrent_reps):
            started = time.perf_counter()
            await asyncio.gather(*(_acall(program, context, i) for i in range(CONCURRENT_CALLS)))
            totals.append(time.perf_counter() - started)
        rec.set("acall_concurrent", statistics.median(totals))


def child_main(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    rec = Recorder(args.out)
    rec.step("import")
    try:
        import dspy  # noqa: F401

        if args.child == "ours":
            import rlm_integrations.dspy  # noqa: F401
    except Exception as error:
        rec.fail("import", error)
        return 0
    phase = args.phase
    try:
        if phase == "concurrent":
            asyncio.run(phase_concurrent(args.child, plan, rec))
        else:
            phase_size(args.child, int(phase.removeprefix("size:")), plan, rec)
    except Exception as error:
        rec.fail(phase, error)
    rec.step("done")
    return 0


# --------------------------------------------------------------------------- parent side


def _tag(size: int) -> str:
    return f"{size // KB}k" if size < MB else f"{size // MB}M"


def _label(size: int) -> str:
    return f"{size // KB} KB" if size < MB else f"{size // MB} MB"


def collect(keys: list[str], plan: Plan, quick: bool, timeout_s: float) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for key in keys:
        merged: dict[str, Any] = {"metrics": {}, "errors": {}}
        for phase in [*(f"size:{size}" for size in plan.sizes), "concurrent"]:
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", key, "--phase", phase]
            if quick:
                argv.append("--quick")
            print(f"… {CONTENDERS[key].label}: {phase}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            data, error = run_child(argv, timeout_s)
            merged["metrics"].update(data.get("metrics", {}))
            merged["errors"].update(data.get("errors", {}))
            if error:
                merged["errors"].setdefault(phase, f"{error} (during {data.get('step', 'start')})")
            note = f" — {next(iter(data.get('errors', {}).values()), error)}" if data.get("errors") or error else ""
            print(f"  done in {time.perf_counter() - started:.1f} s{note}", file=sys.stderr, flush=True)
            if "import" in merged["errors"] or (phase.startswith("size") and phase in merged["errors"]):
                if not merged["metrics"]:
                    break  # it cannot start here: the reason is recorded
        results[key] = merged
    return results


def report(results: dict[str, dict[str, Any]], plan: Plan, plain: bool) -> dict[str, Any]:
    keys = list(results)
    rows: list[list[str]] = []

    def value(key: str, name: str) -> float | None:
        found = results[key]["metrics"].get(name)
        return found if isinstance(found, int | float) else None

    def cell(key: str, name: str) -> str:
        found = value(key, name)
        if found is not None:
            return fmt_seconds(found)
        errors = results[key]["errors"]
        return "cannot run: " + next(iter(errors.values()))[:120] if errors else "—"

    for size in plan.sizes:
        tag = _tag(size)
        rows.append(
            [f"forward, {SHORT_TURNS} turns, {_label(size)}", *(cell(k, f"forward_{SHORT_TURNS}_{tag}") for k in keys)]
        )
        rows.append(
            [f"forward, {LONG_TURNS} turns, {_label(size)}", *(cell(k, f"forward_{LONG_TURNS}_{tag}") for k in keys)]
        )
        rows.append([f"per-iteration overhead, {_label(size)}", *(cell(k, f"per_iteration_{tag}") for k in keys)])
    rows.append(
        [f"1 acall ({CONCURRENT_TURNS} turns, {LM_LATENCY_S:g} s LM latency)", *(cell(k, "acall_single") for k in keys)]
    )
    rows.append([f"{CONCURRENT_CALLS} concurrent acalls, total", *(cell(k, "acall_concurrent") for k in keys)])
    overlap = []
    for key in keys:
        single, total = value(key, "acall_single"), value(key, "acall_concurrent")
        overlap.append(f"{total / single:.2f}×" if single and total else "—")
    rows.append([f"{CONCURRENT_CALLS} concurrent ÷ 1 alone", *overlap])
    print_table(
        "Our DSPy RLM vs dspy.RLM: same signature, same scripted replies",
        ["measure", *(CONTENDERS[k].label for k in keys)],
        rows,
        plain=plain,
    )

    ratio_rows: list[list[str]] = []
    targets: dict[str, Any] = {}
    others = [k for k in keys if k != "ours"]
    if "ours" in results and others:
        names = [(f"per_iteration_{_tag(s)}", f"per-iteration overhead, {_label(s)}") for s in plan.sizes]
        names += [(f"forward_{LONG_TURNS}_{_tag(s)}", f"forward, {LONG_TURNS} turns, {_label(s)}") for s in plan.sizes]
        names += [("acall_concurrent", f"{CONCURRENT_CALLS} concurrent acalls")]
        for name, label in names:
            ratio_rows.append([label, *(fmt_ratio(value(k, name), value("ours", name)) for k in others)])
        print_table(
            "Ratios: their time ÷ ours", ["measure", *(CONTENDERS[k].label for k in others)], ratio_rows, plain=plain
        )
        big = f"per_iteration_{_tag(plan.sizes[-1])}"
        ours_big = value("ours", big)
        for key in others:
            theirs = value(key, big)
            if ours_big and theirs:
                targets[f"per-iteration at {_label(plan.sizes[-1])} ≥ 10× faster than {CONTENDERS[key].label}"] = (
                    theirs / ours_big >= 10,
                    f"{theirs / ours_big:.0f}×",
                )
    single, total = value("ours", "acall_single") if "ours" in results else None, None
    if "ours" in results:
        total = value("ours", "acall_concurrent")
    if single and total:
        targets[f"ours: {CONCURRENT_CALLS} concurrent acalls < 1.5× one"] = (
            total / single < 1.5,
            f"{total / single:.2f}×",
        )
    if targets:
        print_table(
            "Targets",
            ["target", "result", "measured"],
            [[name, "PASS" if ok else "FAIL", shown] for name, (ok, shown) in targets.items()],
            plain=plain,
        )
    info = machine_info(["dspy", "rlm-integrations", "deno", "pydantic"])
    print(
        f"machine: {info['cpu']}, {info['usable_cpus']} CPUs, Python {info['python']}, {info['os']}; "
        f"packages: {json.dumps(info['packages'])}; {info['date']}"
    )
    return {
        "results": results,
        "targets": {k: {"pass": ok, "measured": s} for k, (ok, s) in targets.items()},
        "machine": info,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 MB instead of 20 MB, fewer repetitions")
    parser.add_argument("--json", metavar="PATH", help="also write all results to PATH as JSON")
    parser.add_argument("--only", metavar="KEYS", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per contender and phase")
    parser.add_argument("--plain", action="store_true", help="plain-text tables (no rich)")
    parser.add_argument("--child", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    keys = [k.strip() for k in args.only.split(",")] if args.only else list(CONTENDERS)
    unknown = [k for k in keys if k not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    plan = QUICK if args.quick else FULL
    results = collect(keys, plan, args.quick, args.timeout)
    summary = report(results, plan, args.plain)
    if args.json:
        write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
