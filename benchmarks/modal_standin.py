"""Benchmark ModalREPL on the stand-in sandbox: scaling out from one host, and protocol overhead.

Two measurements, each in its own child process:

- **concurrent runs**: N (default 32) RLM runs at once with a scripted root and sub model
  (no network, no latency), each over its own REPL: the stand-in sandbox with a pool big
  enough for all of them, the stand-in with a pool of 8 that reuses sandboxes, and
  `LocalREPL` for comparison. Reported per run: host CPU time (this process only; in
  real Modal the sandbox side runs remotely), host peak-RSS increase, wall time, and the
  stand-in's own processes (supervisor + worker) at their peak.
- **protocol overhead per cell**: the round trip of a trivial cell and of a cell that
  makes one host callback, on `LocalREPL` and on `ModalREPL` over the stand-in (same
  worker, plus the supervisor hop and the thread hand-offs). The difference is what the
  Modal protocol layer adds; the target is under 2 ms. Network latency to real Modal
  comes on top and is not measured here.

    python benchmarks/modal_standin.py                 # full run (about a minute)
    python benchmarks/modal_standin.py --quick         # smoke run
    python benchmarks/modal_standin.py --runs 64 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    amedian_time,
    child_pids,
    fmt_bytes,
    fmt_seconds,
    machine_info,
    make_text,
    peak_rss,
    print_table,
    reset_peak_rss,
    rss,
    run_child,
    write_json,
)

OVERHEAD_TARGET_S = 2e-3
_QUESTION_MARK = "[bench]"
CONFIGS = {
    "standin": "ModalREPL, stand-in, pool of N (no reuse)",
    "standin-reuse": "ModalREPL, stand-in, pool of 8, reuse",
    "local": "LocalREPL",
}


def _block(code: str) -> str:
    return f"```repl\n{code}\n```"


def _root_reply(messages: list[dict[str, Any]]) -> str:
    # Turns of this run: assistant messages after our question (the policy may put a worked example first).
    start = min(i for i, m in enumerate(messages) if m["role"] == "user" and _QUESTION_MARK in m["content"])
    turn = sum(1 for m in messages[start:] if m["role"] == "assistant")
    if turn == 0:
        return _block("n = len(context)\nprint(n, context[:40])")
    if turn == 1:
        return _block("summary = llm_query('Summarise: ' + context[:200])\nlines = context.count('\\n')")
    return _block("FINAL({'chars': n, 'lines': lines, 'summary': summary[:20]})")


class _ProcessSampler:
    """Samples the summed RSS of this process's descendants (the stand-in's sandboxes, or local workers)."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = child_pids()
            total = sum(rss(pid) or 0 for pid in pids)
            self.peak_rss = max(self.peak_rss, total)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(0.05)


async def _concurrent(config: str, runs: int, context_chars: int) -> dict[str, Any]:
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm import ScriptedLM
    from rlm_integrations.repl import LocalREPL
    from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend

    backend = StandInBackend()
    pool = SandboxPool(max_sandboxes=runs) if config == "standin" else SandboxPool(max_sandboxes=8, keep_idle=8)

    def factory(cfg: RLMConfig) -> Any:
        if config == "local":
            return LocalREPL(cell_timeout_s=cfg.cell_timeout_s, max_output_chars=cfg.max_output_chars)
        return ModalREPL(backend=backend, pool=pool, cell_timeout_s=cfg.cell_timeout_s)

    rlm = RLM(
        ScriptedLM(_root_reply, name="root"),
        ScriptedLM(lambda m: "a short summary of the text", name="sub"),
        repl=factory,
        config=RLMConfig(cell_timeout_s=60),
    )
    contexts = [make_text(context_chars, seed=i) for i in range(runs)]
    # Warm up imports and code paths with one run, outside the measurement.
    await rlm.acompletion(f"{_QUESTION_MARK} Warm-up?", context=contexts[0][:1000])
    await asyncio.sleep(0.2)

    rss_before = rss() or 0
    reset_peak_rss()
    created_before, reused_before = pool.created, pool.reused
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with _ProcessSampler() as sampler:
        results = await asyncio.gather(
            *(rlm.acompletion(f"{_QUESTION_MARK} Describe text {i}?", context=c) for i, c in enumerate(contexts))
        )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    host_peak = (peak_rss() or 0) - rss_before
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    failures = [f"{r.status}: {r.error}" for r in results if r.status != "completed"]
    for i, result in enumerate(results):
        if result.status == "completed" and result.answer["chars"] != context_chars:
            failures.append(f"run {i}: wrong answer {result.answer!r}")
    pool.close()
    return {
        "config": config,
        "runs": runs,
        "context_chars": context_chars,
        "wall_s": wall,
        "host_cpu_s": cpu,
        "host_cpu_per_run_s": cpu / runs,
        "host_peak_rss_increase": host_peak,
        "host_peak_rss_per_run": host_peak / runs,
        "sandbox_processes_peak": sampler.peak_processes,
        "sandbox_rss_peak": sampler.peak_rss,
        "sandboxes_created": pool.created - created_before if config != "local" else None,
        "sandboxes_reused": pool.reused - reused_before if config == "standin-reuse" else None,
        "peak_live_sandboxes": pool.peak_live if config != "local" else None,
        "failures": failures[:3],
    }


async def _overhead(reps: int) -> dict[str, Any]:
    from rlm_integrations.repl import LocalREPL
    from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend

    out: dict[str, Any] = {}
    backend = StandInBackend()
    pool = SandboxPool(max_sandboxes=2)
    for name, repl in (
        ("local", LocalREPL(cell_timeout_s=30)),
        ("modal", ModalREPL(backend=backend, pool=pool, cell_timeout_s=30)),
    ):
        async with repl:
            repl.register("echo", lambda x: x)
            await repl.load("context", make_text(1_000_000))
            trivial = await amedian_time(lambda r=repl: r.execute("x = 1"), reps, warmup=20, budget_s=20)
            value = await amedian_time(lambda r=repl: r.execute("x"), reps, warmup=20, budget_s=20)
            callback = await amedian_time(lambda r=repl: r.execute("y = echo(1)"), reps, warmup=20, budget_s=20)
            started = time.perf_counter()
            await repl.load("big", make_text(10_000_000, seed=1))
            load_10mb = time.perf_counter() - started
        out[name] = {
            "trivial": trivial.to_dict(),
            "value": value.to_dict(),
            "callback": callback.to_dict(),
            "load_10mb_s": load_10mb,
        }
    pool.close()
    return out


def child_main(args: argparse.Namespace) -> int:
    if args.phase == "overhead":
        data = asyncio.run(_overhead(args.reps))
    else:
        data = asyncio.run(_concurrent(args.phase, args.runs, args.context_chars))
    write_json(args.out, data)
    return 0


def _report(
    concurrent: dict[str, dict[str, Any]], overhead: dict[str, Any], errors: dict[str, str], plain: bool
) -> None:
    columns = ["", *(CONFIGS[c] for c in concurrent)]
    rows = []

    def row(label: str, render: Any) -> None:
        rows.append([label, *(render(d) if d else "—" for d in concurrent.values())])

    row("runs at once", lambda d: str(d["runs"]))
    row("context per run", lambda d: f"{d['context_chars'] / 1e6:g} MB")
    row("wall time, all runs", lambda d: fmt_seconds(d["wall_s"]))
    row("host CPU per run", lambda d: fmt_seconds(d["host_cpu_per_run_s"]))
    row("host peak RSS increase per run", lambda d: fmt_bytes(d["host_peak_rss_per_run"]))
    row("host peak RSS increase, all runs", lambda d: fmt_bytes(d["host_peak_rss_increase"]))
    row("sandbox-side processes at peak", lambda d: str(d["sandbox_processes_peak"]))
    row("sandbox-side RSS at peak (local here)", lambda d: fmt_bytes(d["sandbox_rss_peak"]))
    row("sandboxes created / reused / peak live (after the warm-up run)", _sandbox_counts)
    row("failed runs", lambda d: str(len(d["failures"])) + (f" ({d['failures'][0]})" if d["failures"] else ""))
    notes = [f"{name}: {error}" for name, error in errors.items()]
    print_table("Concurrent RLM runs (scripted models)", columns, rows, notes, plain=plain)

    if overhead:
        local, modal = overhead["local"], overhead["modal"]
        rows = []
        for key, label in (
            ("trivial", "cell `x = 1`"),
            ("value", "cell `x` (returns a repr)"),
            ("callback", "cell with one host callback"),
        ):
            added = modal[key]["median"] - local[key]["median"]
            verdict = ("PASS" if added < OVERHEAD_TARGET_S else "FAIL") if key == "trivial" else ""
            rows.append(
                [
                    label,
                    fmt_seconds(local[key]["median"]),
                    fmt_seconds(modal[key]["median"]),
                    fmt_seconds(added),
                    verdict,
                ]
            )
        rows.append(
            [
                "load 10 MB string",
                fmt_seconds(local["load_10mb_s"]),
                fmt_seconds(modal["load_10mb_s"]),
                fmt_seconds(modal["load_10mb_s"] - local["load_10mb_s"]),
                "",
            ]
        )
        print_table(
            "Protocol overhead per cell (median round trip, 1 MB context loaded)",
            ["", "LocalREPL", "ModalREPL (stand-in)", "added by the Modal layer", "target < 2 ms"],
            rows,
            ["Real Modal adds the network round trip to the sandbox on top (not measured here)."],
            plain=plain,
        )


def _sandbox_counts(d: dict[str, Any]) -> str:
    if d["sandboxes_created"] is None:
        return "—"
    return f"{d['sandboxes_created']} / {d['sandboxes_reused'] or 0} / {d['peak_live_sandboxes']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=32, help="concurrent RLM runs (default 32)")
    parser.add_argument("--context-chars", type=int, default=200_000, help="context size per run (default 200k)")
    parser.add_argument("--reps", type=int, default=300, help="cells timed per overhead measurement")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 runs, fewer repetitions")
    parser.add_argument("--json", help="also write every number to this file")
    parser.add_argument("--plain", action="store_true", help="plain-text tables")
    parser.add_argument("--phase", choices=[*CONFIGS, "overhead"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.reps = 8, 50
    if args.phase:
        return child_main(args)

    script = str(Path(__file__).resolve())
    common = [sys.executable, script, "--runs", str(args.runs), "--context-chars", str(args.context_chars)]
    concurrent: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for config in CONFIGS:
        data, error = run_child([*common, "--phase", config], timeout_s=600)
        concurrent[config] = data
        if error:
            errors[CONFIGS[config]] = error
    overhead, error = run_child([*common, "--reps", str(args.reps), "--phase", "overhead"], timeout_s=600)
    if error:
        errors["overhead"] = error
    _report(concurrent, overhead, errors, args.plain)
    info = machine_info(["modal", "RestrictedPython"])
    print(f"machine: {info['cpu']}, {info['usable_cpus']} usable CPUs, Python {info['python']}, {info['date']}")
    if args.json:
        write_json(args.json, {"concurrent": concurrent, "overhead": overhead, "errors": errors, "machine": info})
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
