"""Benchmark our LocalREPL against the REPLs of `rlms` and DSPy, in one run on this machine.

Measures, for each contender: cold start (until a trivial cell has run), start from a
warm pool (ours only), the round trip of a trivial cell, the time to load a 1/10/100 MB
string context, the per-cell time with that context loaded, and peak memory (host RSS
increase and worker RSS). Every contender runs in its own child process, one per phase,
so a crash or a hang in one cannot spoil the others and peak memory is clean.

    python benchmarks/repl.py                 # full run (a few minutes)
    python benchmarks/repl.py --quick         # smoke run: small contexts, few repetitions
    python benchmarks/repl.py --json out.json # also write every number to a file
    python benchmarks/repl.py --only ours,rlms

Needs: the project (`pip install -e .`), `rlms`, `dspy` (3.4.x), `deno` (PyPI), `psutil`,
`rich`. A contender that is missing or cannot start here is reported with its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    Recorder,
    Timing,
    amedian_time,
    child_pids,
    condense_error,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    machine_info,
    make_text,
    median_time,
    peak_rss,
    print_table,
    reset_peak_rss,
    rss,
    run_child,
    write_json,
)

TRIVIAL = "x = 1"
MB = 1_000_000


@dataclass(frozen=True)
class Plan:
    """How much to measure: context sizes (characters) and repetitions."""

    sizes: tuple[int, ...]
    cold_reps: int
    pool_reps: int
    cell_reps: int
    ctx_cell_reps: int
    load_reps: int
    budget_s: float
    child_timeout_s: float


FULL = Plan(
    sizes=(MB, 10 * MB, 100 * MB),
    cold_reps=20,
    pool_reps=15,
    cell_reps=200,
    ctx_cell_reps=100,
    load_reps=3,
    budget_s=20.0,
    child_timeout_s=420.0,
)
QUICK = Plan(
    sizes=(MB // 10, MB, 10 * MB),
    cold_reps=3,
    pool_reps=3,
    cell_reps=30,
    ctx_cell_reps=20,
    load_reps=1,
    budget_s=5.0,
    child_timeout_s=180.0,
)


# --------------------------------------------------------------------------- contenders


class Contender:
    """One REPL implementation behind a small uniform interface.

    Methods are sync unless `is_async`, in which case they are coroutines; the harness
    times the raw call either way, so no wrapper overhead lands in the numbers.
    """

    key = ""
    label = ""
    isolation = ""
    is_async = False
    has_worker = True
    resends_inputs = False  # its RLM loop passes every input again on every iteration
    check_code = "print(len(context))"  # verifies a load; must print or return the length

    def import_(self) -> None:
        """Import the implementation (timed as import time)."""
        raise NotImplementedError

    def open(self) -> Any:
        """Create and start one REPL; return a handle."""
        raise NotImplementedError

    def load(self, handle: Any, text: str) -> Any:
        """Make `text` available to cells as `context`."""
        raise NotImplementedError

    def cell(self, handle: Any, code: str) -> Any:
        """Run one cell; raise if the cell failed."""
        raise NotImplementedError

    def cell_with_inputs(self, handle: Any, code: str, text: str) -> Any:
        """Run one cell the way the contender's RLM loop does (inputs sent again)."""
        raise NotImplementedError

    def close(self, handle: Any) -> Any:
        """Release the REPL."""
        raise NotImplementedError


def _our_isolation() -> str:
    """Our REPL's walls as they stand on this machine (bubblewrap is used only where installed)."""
    walls = "worker process + RestrictedPython; per-cell kill, empty env"
    try:
        from rlm_integrations.repl.local.isolation import _bwrap_binary
    except ImportError:  # an early build without wall 2's launcher
        return walls + ", rlimits"
    if _bwrap_binary()[0] is None:
        return walls + "; seccomp, hard rlimits (no bubblewrap here)"
    return walls + "; bubblewrap namespaces + read-only view, seccomp, hard rlimits"


class Ours(Contender):
    key = "ours"
    label = "ours: LocalREPL"
    isolation = _our_isolation()
    is_async = True
    check_code = "len(context)"

    def __init__(self) -> None:
        self.pool = False

    def import_(self) -> None:
        from rlm_integrations.repl import LocalREPL

        self.cls = LocalREPL

    def make(self, pool: bool) -> Any:
        try:
            return self.cls(cell_timeout_s=120.0, pool=pool)
        except TypeError:  # an early build without the pool switch
            return self.cls(cell_timeout_s=120.0)

    async def open(self) -> Any:
        repl = self.make(self.pool)
        await repl.start()
        return repl

    async def load(self, handle: Any, text: str) -> None:
        await handle.load("context", text)

    async def cell(self, handle: Any, code: str) -> Any:
        result = await handle.execute(code)
        if result.error:
            raise RuntimeError(f"cell failed: {result.error}")
        return result

    async def close(self, handle: Any) -> None:
        await handle.close()


class Rlms(Contender):
    key = "rlms"
    label = "rlms LocalREPL"
    isolation = "none: exec() in the host process"
    has_worker = False

    def import_(self) -> None:
        from rlm.environments.local_repl import LocalREPL

        self.cls = LocalREPL

    def open(self) -> Any:
        return self.cls()

    def load(self, handle: Any, text: str) -> None:
        handle.load_context(text)

    def cell(self, handle: Any, code: str) -> Any:
        result = handle.execute_code(code)
        if result.stderr:
            raise RuntimeError(f"cell failed: {result.stderr.strip()}")
        return result

    def close(self, handle: Any) -> None:
        handle.cleanup()


class DspyLocal(Contender):
    key = "dspy_local"
    label = "dspy.LocalInterpreter"
    isolation = "CPython subprocess, no sandbox (host files, env, network)"
    resends_inputs = True

    def import_(self) -> None:
        import dspy

        self.cls = dspy.LocalInterpreter

    def open(self) -> Any:
        interp = self.cls()
        interp.start()
        return interp

    def load(self, handle: Any, text: str) -> None:
        handle.execute("pass", variables={"context": text})

    def cell(self, handle: Any, code: str) -> Any:
        return handle.execute(code)

    def cell_with_inputs(self, handle: Any, code: str, text: str) -> Any:
        return handle.execute(code, variables={"context": text})

    def close(self, handle: Any) -> None:
        handle.shutdown()


class DspyPyodide(DspyLocal):
    key = "dspy_pyodide"
    label = "dspy.PythonInterpreter"
    isolation = "Deno + Pyodide (WebAssembly) sandbox"

    def import_(self) -> None:
        import dspy

        self.cls = dspy.PythonInterpreter

    def open(self) -> Any:
        interp = self.cls()
        try:
            interp.start()
        except Exception as error:
            raise RuntimeError(_why_deno_failed(str(error), interp)) from error
        return interp

    def cell(self, handle: Any, code: str) -> Any:
        try:
            return handle.execute(code)
        except Exception as error:
            raise RuntimeError(_why_deno_failed(str(error), handle)) from error


def _why_deno_failed(message: str, handle: Any) -> str:
    """One line saying why Deno failed; asks Deno itself when dspy's message says too little."""
    text = condense_error(message, limit=4000)
    if "Import '" not in text:  # dspy may read stdout before Deno's error reaches stderr
        with contextlib.suppress(Exception):
            probe = subprocess.run(
                list(handle.deno_command), input="", capture_output=True, text=True, timeout=60, check=False
            )
            text += " | " + condense_error(probe.stderr, limit=4000)
    url = re.search(r"Import '([^']+)' failed", text)
    if url and re.search(r"dns error|failed to lookup|error sending request", text):
        said = condense_error(message, limit=60)
        return (
            f"offline: dspy's runner.js imports {url.group(1)} at start-up and that host is unreachable "
            f"here (DNS lookup failed), so Deno exits before Pyodide loads (dspy: {said})"
        )
    return condense_error(text)


CONTENDERS: dict[str, type[Contender]] = {c.key: c for c in (Ours, Rlms, DspyLocal, DspyPyodide)}
PHASES = {"ours": ("timing", "memory", "pool", "sync")}
DEFAULT_PHASES = ("timing", "memory")


# --------------------------------------------------------------------------- child side


async def _call(c: Contender, fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    return await result if c.is_async else result


async def _timed(c: Contender, fn: Callable[..., Any], *args: Any) -> float:
    if c.is_async:
        start = time.perf_counter()
        await fn(*args)
        return time.perf_counter() - start
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


async def _repeat(c: Contender, fn: Callable[[], Any], reps: int, budget_s: float, min_reps: int = 3) -> Timing:
    if c.is_async:
        return await amedian_time(fn, reps, budget_s=budget_s, min_reps=min_reps)
    return median_time(fn, reps, budget_s=budget_s, min_reps=min_reps)


async def _cold_start(c: Contender, rec: Recorder, plan: Plan) -> bool:
    rec.step("cold_start")
    samples: list[float] = []
    spent = 0.0
    try:
        while len(samples) < plan.cold_reps and not (len(samples) >= 3 and spent > plan.budget_s):
            start = time.perf_counter()
            handle = await _call(c, c.open)
            await _call(c, c.cell, handle, TRIVIAL)
            elapsed = time.perf_counter() - start
            await _call(c, c.close, handle)
            samples.append(elapsed)
            spent += elapsed
    except Exception as error:
        rec.fail("cold_start", error)
        return False
    rec.set("cold_start", Timing.of(samples))
    rec.set("first_start", samples[0])
    return True


async def _trivial_cell(c: Contender, rec: Recorder, plan: Plan) -> None:
    rec.step("cell")
    try:
        handle = await _call(c, c.open)
        try:
            for _ in range(5):
                await _call(c, c.cell, handle, TRIVIAL)
            rec.set("cell", await _repeat(c, lambda: c.cell(handle, TRIVIAL), plan.cell_reps, plan.budget_s))
            rec.set("cell_value", await _repeat(c, lambda: c.cell(handle, "x"), plan.cell_reps, plan.budget_s))
            if isinstance(c, Ours):  # how much of the round trip is the worker running the cell
                inside = [(await c.cell(handle, TRIVIAL)).duration for _ in range(min(plan.cell_reps, 100))]
                rec.set("cell_in_worker", Timing.of(inside))
        finally:
            await _call(c, c.close, handle)
    except Exception as error:
        rec.fail("cell", error)


async def _paired(c: Contender, loaded: Any, plan: Plan) -> tuple[Timing, Timing]:
    """Time `x = 1` alternately on `loaded` and on a fresh empty REPL, so drift hits both alike."""
    empty = await _call(c, c.open)
    try:
        for handle in (loaded, empty):
            for _ in range(3):
                await _call(c, c.cell, handle, TRIVIAL)
        with_context: list[float] = []
        without: list[float] = []
        spent = 0.0
        while len(with_context) < plan.ctx_cell_reps and not (len(with_context) >= 3 and spent > plan.budget_s):
            with_context.append(await _timed(c, c.cell, loaded, TRIVIAL))
            without.append(await _timed(c, c.cell, empty, TRIVIAL))
            spent += with_context[-1] + without[-1]
        return Timing.of(with_context), Timing.of(without)
    finally:
        await _call(c, c.close, empty)


async def _contexts(c: Contender, rec: Recorder, plan: Plan) -> None:
    for size in plan.sizes:
        tag = _tag(size)
        rec.step(f"load_{tag}")
        text = make_text(size)
        gc.collect()
        handle = None
        try:
            loads: list[float] = []
            spent = 0.0
            for _ in range(plan.load_reps):
                if handle is not None:
                    await _call(c, c.close, handle)
                handle = await _call(c, c.open)
                loads.append(await _timed(c, c.load, handle, text))
                spent += loads[-1]
                if spent > plan.budget_s:
                    break
            rec.set(f"load_{tag}", Timing.of(loads))
            check = await _call(c, c.cell, handle, c.check_code)
            shown = f"{getattr(check, 'stdout', check)} {getattr(check, 'value', '')}"
            if str(size) not in shown:
                rec.fail(f"check_{tag}", f"{c.check_code} gave {shown[:80]!r}, expected {size}")
            rec.step(f"cell_{tag}")
            loaded, empty = await _paired(c, handle, plan)
            rec.set(f"cell_{tag}", loaded)
            rec.set(f"cell_empty_{tag}", empty)
            if c.resends_inputs and size == plan.sizes[-1]:
                rec.step(f"cell_inputs_{tag}")
                resend = lambda h=handle, t=text: c.cell_with_inputs(h, TRIVIAL, t)  # noqa: E731
                rec.set(f"cell_inputs_{tag}", await _repeat(c, resend, 5, plan.budget_s / 2, min_reps=2))
        except Exception as error:
            rec.fail(f"load_{tag}", error)
        finally:
            if handle is not None:
                with contextlib.suppress(Exception):
                    await _call(c, c.close, handle)


async def phase_timing(c: Contender, rec: Recorder, plan: Plan) -> None:
    if not await _cold_start(c, rec, plan):
        return
    await _trivial_cell(c, rec, plan)
    await _contexts(c, rec, plan)


async def phase_memory(c: Contender, rec: Recorder, plan: Plan) -> None:
    size = plan.sizes[-1]
    rec.set("memory_context_chars", size)
    rec.step("memory")
    text = make_text(size)
    before = child_pids()
    baseline = rss()
    exact = reset_peak_rss()
    rec.set("memory_peak_method", "VmHWM reset" if exact else "ru_maxrss (includes setup)")
    handle = await _call(c, c.open)
    try:
        await _call(c, c.cell, handle, TRIVIAL)
        workers = sorted(child_pids() - before)
        rec.set("worker_pids", workers)
        await asyncio.sleep(0.2)
        if workers:
            rec.set("worker_rss_idle", sum(rss(pid) or 0 for pid in workers))
        await _call(c, c.load, handle, text)
        for _ in range(20):
            await _call(c, c.cell, handle, TRIVIAL)
        await _call(c, c.cell, handle, "n = len(context)")
        workers = sorted(child_pids() - before)
        if workers:
            rec.set("worker_rss_peak", sum(peak_rss(pid) or 0 for pid in workers))
            rec.set("worker_rss_after", sum(rss(pid) or 0 for pid in workers))
        peak = peak_rss()
        if peak is not None and baseline is not None:
            rec.set("host_rss_increase", peak - baseline)
        after = rss()
        if after is not None and baseline is not None:
            rec.set("host_rss_retained", after - baseline)
    finally:
        await _call(c, c.close, handle)


async def _wait_quiet(timeout_s: float = 10.0) -> None:
    """Wait until no child process of ours uses CPU (pool refills done, workers idle)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = 0.0
        for pid in child_pids():
            with contextlib.suppress(psutil.Error):
                busy += psutil.Process(pid).cpu_percent(interval=0.05)
        if busy < 5.0:
            return
        await asyncio.sleep(0.05)


async def _prewarm(count: int) -> None:
    from rlm_integrations.repl import prewarm

    result = prewarm(count)
    if inspect.isawaitable(result):
        await result
    await _wait_quiet()


async def _start_and_run(c: Ours, pool: bool) -> Any:
    repl = c.make(pool)
    await repl.start()
    await c.cell(repl, TRIVIAL)
    return repl


async def phase_pool(c: Ours, rec: Recorder, plan: Plan) -> None:
    """Starts from the warm pool: one at a time, then a batch of 4 at once (beside 4 cold)."""
    rec.step("pool_default")
    # What a user gets with no prewarm: the first REPL finds the pool empty (and starts a refill).
    for name in ("default_first_start", "default_second_start"):
        start = time.perf_counter()
        repl = await _start_and_run(c, pool=True)
        rec.set(name, time.perf_counter() - start)
        await c.close(repl)
        await _wait_quiet()
    rec.step("pool")
    samples: list[float] = []
    for _ in range(plan.pool_reps):
        await _prewarm(1)  # blocks until a ready worker waits in the pool
        start = time.perf_counter()
        repl = await _start_and_run(c, pool=True)
        samples.append(time.perf_counter() - start)
        await c.close(repl)
    rec.set("pool_start", Timing.of(samples))
    for pool in (True, False):
        name = "batch4_pool" if pool else "batch4_cold"
        rec.step(name)
        if pool:
            await _prewarm(4)
        else:
            await _wait_quiet()
        start = time.perf_counter()
        repls = await asyncio.gather(*(_start_and_run(c, pool) for _ in range(4)))
        rec.set(name, time.perf_counter() - start)
        for repl in repls:
            await c.close(repl)


def phase_sync(c: Ours, rec: Recorder, plan: Plan) -> None:
    """The sync API (start_sync/execute_sync/...), run with no event loop in this thread."""
    rec.step("sync")
    repl = c.make(False)
    start = time.perf_counter()
    repl.start_sync()
    repl.execute_sync(TRIVIAL)
    rec.set("sync_cold_start", time.perf_counter() - start)
    try:

        def run() -> None:
            result = repl.execute_sync(TRIVIAL)
            if result.error:
                raise RuntimeError(result.error)

        rec.set("sync_cell", median_time(run, plan.cell_reps, budget_s=plan.budget_s, warmup=5))
        text = make_text(plan.sizes[-1])
        start = time.perf_counter()
        repl.load_sync("context", text)
        rec.set("sync_load_max", time.perf_counter() - start)
    finally:
        repl.close_sync()


def child_main(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    rec = Recorder(args.out)
    contender = CONTENDERS[args.child]()
    rec.step("import")
    start = time.perf_counter()
    try:
        contender.import_()
    except Exception as error:
        rec.fail("import", error)
        return 0
    rec.set("import", time.perf_counter() - start)
    phase = args.phase
    try:
        if phase == "sync":
            phase_sync(contender, rec, plan)  # type: ignore[arg-type]
        else:
            runner = {"timing": phase_timing, "memory": phase_memory, "pool": phase_pool}[phase]
            asyncio.run(runner(contender, rec, plan))
    except Exception as error:
        rec.fail(phase, error)
    rec.step("done")
    return 0


# --------------------------------------------------------------------------- parent side


def _median(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, dict):
        return value.get("median")
    return value if isinstance(value, int | float) else None


def _tag(size: int) -> str:
    return f"{size // 1000}k" if size < MB else f"{size // MB}M"


def _label(size: int) -> str:
    return f"{size / MB:g} MB"


def collect(keys: list[str], quick: bool, plan: Plan, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Run every (contender, phase) child and merge their outputs."""
    results: dict[str, dict[str, Any]] = {}
    for key in keys:
        merged: dict[str, Any] = {"metrics": {}, "errors": {}, "phase_errors": {}}
        for phase in PHASES.get(key, DEFAULT_PHASES):
            if phase != "timing" and "cold_start" not in merged["metrics"]:
                break  # it cannot start here: the timing phase already recorded why
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", key, "--phase", phase]
            if quick:
                argv.append("--quick")
            print(f"… {CONTENDERS[key].label}: {phase}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            data, error = run_child(argv, timeout_s)
            merged["metrics"].update(data.get("metrics", {}))
            merged["errors"].update(data.get("errors", {}))
            if error:
                merged["phase_errors"][phase] = f"{error} (during {data.get('step', 'start')})"
            print(
                f"  done in {time.perf_counter() - start:.1f} s" + (f" — {error}" if error else ""),
                file=sys.stderr,
                flush=True,
            )
        results[key] = merged
    return results


def _reason(result: dict[str, Any], *names: str) -> str | None:
    for name in names:
        if name in result["errors"]:
            return result["errors"][name]
    return None


def _status(result: dict[str, Any]) -> str:
    if "cold_start" in result["metrics"]:
        return "runs"
    reason = _reason(result, "import", "cold_start") or next(iter(result["phase_errors"].values()), "unknown")
    return f"cannot run here: {reason}"


def _targets(ours: dict[str, Any], plan: Plan) -> dict[str, tuple[str, bool | None, str]]:
    """Metric name -> (target text, passed or None when not measured, detail)."""
    m = ours["metrics"]
    out: dict[str, tuple[str, bool | None, str]] = {}

    def check(name: str, limit: float, text: str) -> None:
        value = _median(m, name)
        out[name] = (text, None if value is None else value < limit, "")

    check("cold_start", 0.150, "< 150 ms")
    check("pool_start", 0.010, "< 10 ms")
    check("cell", 0.001, "< 1 ms")
    big = 100 * MB
    if big in plan.sizes:
        check(f"load_{_tag(big)}", 0.5, "< 0.5 s")
    base, top = _median(m, f"cell_empty_{_tag(plan.sizes[-1])}"), _median(m, f"cell_{_tag(plan.sizes[-1])}")
    if base is not None and top is not None:
        ok = top <= 1.5 * base or top - base <= 1e-4
        out["growth"] = ("≤ 1.5× (or +0.1 ms)", ok, f"{top / base:.2f}×")
    else:
        out["growth"] = ("≤ 1.5× (or +0.1 ms)", None, "")
    return out


def _cell(result: dict[str, Any], name: str, kind: str) -> str:
    value = result["metrics"].get(name)
    if value is None:
        error = result["errors"].get(name)
        return f"error: {error}" if error else "—"
    if kind == "time":
        return fmt_seconds(_median(result["metrics"], name))
    if kind == "bytes":
        return fmt_bytes(value)
    return str(value)


def _rows(plan: Plan) -> list[tuple[str, str, str]]:
    top = plan.sizes[-1]
    rows = [
        ("import time (first import)", "import", "time"),
        ("cold start → first cell (median)", "cold_start", "time"),
        ("first cold start in the process", "first_start", "time"),
        ("defaults, no prewarm: 1st REPL in the process", "default_first_start", "time"),
        ("defaults, no prewarm: 2nd REPL (pool refilled)", "default_second_start", "time"),
        ("start from warm pool → first cell", "pool_start", "time"),
        ("4 REPLs at once → first cell in each, cold", "batch4_cold", "time"),
        ("4 REPLs at once → first cell in each, pool of 4", "batch4_pool", "time"),
        ("trivial cell `x = 1` round trip", "cell", "time"),
        ("cell returning a value `x`", "cell_value", "time"),
        ("  of which exec in the worker (CellResult.duration)", "cell_in_worker", "time"),
        ("trivial cell, sync API", "sync_cell", "time"),
    ]
    rows += [(f"load {_label(s)} string context", f"load_{_tag(s)}", "time") for s in plan.sizes]
    for s in plan.sizes:
        rows += [
            (f"trivial cell with {_label(s)} loaded", f"cell_{_tag(s)}", "time"),
            ("  same moment, empty REPL", f"cell_empty_{_tag(s)}", "time"),
        ]
    rows += [
        (f"cell as its RLM loop runs it ({_label(top)}, inputs re-sent)", f"cell_inputs_{_tag(top)}", "time"),
        (f"host peak RSS increase ({_label(top)} session)", "host_rss_increase", "bytes"),
        ("host RSS still held after the cells", "host_rss_retained", "bytes"),
        ("worker RSS, idle", "worker_rss_idle", "bytes"),
        (f"worker peak RSS ({_label(top)} session)", "worker_rss_peak", "bytes"),
    ]
    return rows


def _pass_text(text: str, passed: bool | None) -> str:
    if not text:
        return ""
    return f"{text}: " + ("PASS" if passed else "FAIL" if passed is False else "not measured")


def _metric_row(
    results: dict[str, dict[str, Any]], targets: dict[str, Any], label: str, name: str, kind: str
) -> list[str]:
    row = [label]
    for key, result in results.items():
        if _status(result) != "runs":
            row.append("n/a")
        elif name.startswith("worker_") and not CONTENDERS[key].has_worker:
            row.append("— (in-process)")
        else:
            row.append(_cell(result, name, kind))
        if key == "ours":
            text, passed, _ = targets.get(name, ("", None, ""))
            row.append(_pass_text(text, passed))
    return row


def _growth_row(results: dict[str, dict[str, Any]], targets: dict[str, Any], plan: Plan) -> list[str]:
    row = [f"per-cell growth: {_label(plan.sizes[-1])} loaded ÷ empty REPL (alternating)"]
    for key, result in results.items():
        base = _median(result["metrics"], f"cell_empty_{_tag(plan.sizes[-1])}")
        top = _median(result["metrics"], f"cell_{_tag(plan.sizes[-1])}")
        row.append(f"{top / base:.2f}×" if base and top else "—")
        if key == "ours":
            text, passed, _ = targets["growth"]
            row.append(_pass_text(text, passed))
    return row


def _notes(results: dict[str, dict[str, Any]], plan: Plan, info: dict[str, Any]) -> list[str]:
    notes = [
        f"machine: {info['cpu']}, {info['usable_cpus']} usable CPUs, "
        f"{(info['memory_bytes'] or 0) / 2**30:.0f} GiB RAM, {info['os']}, Python {info['python']}",
        "packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in info["packages"].items()),
        f"repetitions: cold start ≤{plan.cold_reps}, cell {plan.cell_reps}, cell with context {plan.ctx_cell_reps}, "
        f"loads ≤{plan.load_reps} (fresh REPL each); medians shown; each contender ran in its own process.",
        "MB = 10^6 characters of ASCII text; memory in MiB; host RSS increase = peak (VmHWM) minus RSS "
        "before the REPL was created (the caller's own copy of the text excluded).",
    ]
    for key, result in results.items():
        for name, error in result["errors"].items():
            if name not in {"import", "cold_start"}:
                notes.append(f"{CONTENDERS[key].label}: {name}: {error}")
        for phase, error in result["phase_errors"].items():
            notes.append(f"{CONTENDERS[key].label}: phase {phase}: {error}")
    return notes


def _main_table(
    results: dict[str, dict[str, Any]], plan: Plan, targets: dict[str, Any]
) -> tuple[list[str], list[list[str]]]:
    columns = ["metric"]
    header_rows: list[list[str]] = [["isolation"], ["status"]]
    for key, result in results.items():
        columns.append(CONTENDERS[key].label)
        header_rows[0].append(CONTENDERS[key].isolation)
        header_rows[1].append(_status(result))
        if key == "ours":
            columns.append("target (ours)")
            header_rows[0].append("")
            header_rows[1].append("")
    rows = header_rows
    for label, name, kind in _rows(plan):
        if any(name in r["metrics"] or name in r["errors"] for r in results.values()):
            rows.append(_metric_row(results, targets, label, name, kind))
    if "growth" in targets:
        rows.append(_growth_row(results, targets, plan))
    return columns, rows


def _ratio_table(results: dict[str, dict[str, Any]], plan: Plan) -> tuple[list[str], list[list[str]]]:
    others = [k for k in results if k != "ours" and _status(results[k]) == "runs"]
    columns = ["metric", *[CONTENDERS[k].label for k in others]]
    if "ours" not in results or not others:
        return columns, []
    ours = results["ours"]["metrics"]
    top = _tag(plan.sizes[-1])
    specs = [
        ("cold start", "cold_start"),
        ("trivial cell", "cell"),
        *[(f"load {_label(s)}", f"load_{_tag(s)}") for s in plan.sizes],
        (f"cell with {_label(plan.sizes[-1])} loaded", f"cell_{top}"),
    ]
    rows = [
        [label, *[fmt_ratio(_median(results[k]["metrics"], name), _median(ours, name)) for k in others]]
        for label, name in specs
    ]
    rows.append(
        [
            "host peak RSS increase",
            *[
                fmt_ratio(results[k]["metrics"].get("host_rss_increase"), ours.get("host_rss_increase"), "less", "more")
                for k in others
            ],
        ]
    )
    if any(f"cell_inputs_{top}" in results[k]["metrics"] for k in others):
        row = [f"cell as each RLM loop runs it ({_label(plan.sizes[-1])} loaded)"]
        for k in others:
            theirs = results[k]["metrics"]
            name = f"cell_inputs_{top}" if f"cell_inputs_{top}" in theirs else f"cell_{top}"
            row.append(fmt_ratio(_median(theirs, name), _median(ours, f"cell_{top}")))
        rows.append(row)
    return columns, rows


def report(results: dict[str, dict[str, Any]], plan: Plan, info: dict[str, Any], plain: bool) -> dict[str, Any]:
    """Print the measurement table and the ratio table; return both (and the targets) for JSON."""
    targets = _targets(results["ours"], plan) if "ours" in results else {}
    columns, rows = _main_table(results, plan, targets)
    print_table(
        "REPL benchmark (measured now, on this machine)", columns, rows, _notes(results, plan, info), plain=plain
    )
    ratio_columns, ratio_rows = _ratio_table(results, plan)
    if ratio_rows:
        print()
        print_table(
            "ours vs each contender (their time ÷ ours; 'N× faster' means ours is faster)",
            ratio_columns,
            ratio_rows,
            plain=plain,
        )
    return {
        "targets": {k: {"target": t, "passed": p, "detail": d} for k, (t, p, d) in targets.items()},
        "table": {"columns": columns, "rows": rows},
        "ratios": {"columns": ratio_columns, "rows": ratio_rows},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small contexts and few repetitions (smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write all results to PATH as JSON")
    parser.add_argument("--only", metavar="KEYS", help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--timeout", type=float, help="seconds allowed per contender and phase")
    parser.add_argument("--plain", action="store_true", help="plain-text tables (no rich)")
    parser.add_argument("--child", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["timing", "memory", "pool", "sync"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    plan = QUICK if args.quick else FULL
    keys = list(CONTENDERS) if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; choose from {list(CONTENDERS)}")
    info = machine_info(["rlm-integrations", "RestrictedPython", "rlms", "dspy", "deno", "psutil", "rich"])
    started = time.perf_counter()
    results = collect(keys, args.quick, plan, args.timeout or plan.child_timeout_s)
    summary = report(results, plan, info, args.plain)
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        write_json(
            args.json, {"machine": info, "plan": plan.__dict__, "quick": args.quick, "results": results, **summary}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
