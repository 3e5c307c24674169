"""Helpers shared by the benchmark scripts: timing, peak memory, child runs, tables.

Nothing here imports the package under test, so a benchmark can measure import time
and isolate each contender in its own process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Timing",
    "amedian_time",
    "child_pids",
    "condense_error",
    "fmt_bytes",
    "fmt_ratio",
    "fmt_seconds",
    "machine_info",
    "make_text",
    "median_time",
    "peak_rss",
    "print_table",
    "reset_peak_rss",
    "rss",
    "run_child",
    "write_json",
]


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Summary of repeated wall-clock measurements, in seconds."""

    median: float
    minimum: float
    p90: float
    maximum: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        """Summarise a non-empty list of samples."""
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), ordered[0], p90, ordered[-1], len(ordered))

    def to_dict(self) -> dict[str, float]:
        """Plain dict for JSON output."""
        return asdict(self)


def _enough(done: int, reps: int, min_reps: int, spent: float, budget_s: float | None) -> bool:
    if done >= reps:
        return True
    return budget_s is not None and done >= min_reps and spent >= budget_s


def median_time(
    fn: Callable[[], object],
    reps: int,
    *,
    budget_s: float | None = None,
    min_reps: int = 3,
    warmup: int = 0,
) -> Timing:
    """Time `fn()` up to `reps` times (fewer once `budget_s` is spent, never fewer than `min_reps`)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    while not _enough(len(samples), reps, min_reps, spent, budget_s):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        samples.append(elapsed)
        spent += elapsed
    return Timing.of(samples)


async def amedian_time(
    fn: Callable[[], Awaitable[object]],
    reps: int,
    *,
    budget_s: float | None = None,
    min_reps: int = 3,
    warmup: int = 0,
) -> Timing:
    """Async twin of `median_time`: times `await fn()`."""
    for _ in range(warmup):
        await fn()
    samples: list[float] = []
    spent = 0.0
    while not _enough(len(samples), reps, min_reps, spent, budget_s):
        start = time.perf_counter()
        await fn()
        elapsed = time.perf_counter() - start
        samples.append(elapsed)
        spent += elapsed
    return Timing.of(samples)


# --------------------------------------------------------------------------- memory


def _status_field(pid: int | None, field: str) -> int | None:
    """A `kB` field of /proc/PID/status, in bytes (None where unavailable)."""
    path = f"/proc/{pid if pid is not None else 'self'}/status"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def rss(pid: int | None = None) -> int | None:
    """Current resident set size of a process (this one by default), in bytes."""
    value = _status_field(pid, "VmRSS")
    if value is None:
        with contextlib.suppress(Exception):
            import psutil

            return int(psutil.Process(pid).memory_info().rss)
    return value


def peak_rss(pid: int | None = None) -> int | None:
    """High-water mark of the resident set size (VmHWM) of a process, in bytes."""
    value = _status_field(pid, "VmHWM")
    if value is None and pid is None:
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return value


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux `clear_refs`); True if it worked."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_pids() -> set[int]:
    """Process ids of every live descendant of this process."""
    try:
        import psutil
    except ImportError:
        return set()
    with contextlib.suppress(Exception):
        return {child.pid for child in psutil.Process().children(recursive=True)}
    return set()


# --------------------------------------------------------------------------- data


def make_text(n_chars: int, seed: int = 0) -> str:
    """Deterministic ASCII prose-like text of exactly `n_chars` characters.

    Built from one ~1 MB block of numbered lines of pseudo-random words, repeated, with a
    single allocation for the result (no transient double copy).
    """
    import random

    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(5000)]
    lines: list[str] = []
    size = 0
    line_no = 0
    while size < min(n_chars, 1_000_000):
        line = f"{line_no}: " + " ".join(rng.choices(vocabulary, k=rng.randint(5, 18))) + ".\n"
        lines.append(line)
        size += len(line)
        line_no += 1
    block = "".join(lines)
    whole, rest = divmod(n_chars, len(block))
    return "".join([block] * whole + [block[:rest]])


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """Describe this machine and the versions of `packages` (None where not installed)."""
    total = None
    with contextlib.suppress(OSError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# --------------------------------------------------------------------------- child processes

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def condense_error(text: str, limit: int = 300) -> str:
    """One readable line from a long error: no ANSI colours, no download progress, capped."""
    text = _ANSI.sub("", text)
    text = re.sub(r"Download \S+\s*", "", text)
    parts = [line.strip() for line in text.splitlines() if line.strip()]
    parts = [line for line in parts if not line.startswith(("Stack backtrace", "0: <unknown>"))]
    joined = " | ".join(parts)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def write_json(path: str | Path, data: object) -> None:
    """Write JSON atomically (write a sibling file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def run_child(
    argv: Sequence[str], timeout_s: float, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], str | None]:
    """Run `argv + ["--out", FILE]` in a fresh process and return (what it wrote to FILE, error).

    The child is expected to rewrite FILE with its partial results as it goes, so a
    crash or a timeout still returns everything measured before it. `error` is None
    when the child exited 0, else a one-line reason.
    """
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [*argv, "--out", str(out)]
        error: str | None = None
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
            if proc.returncode != 0:
                error = f"exit {proc.returncode}: " + condense_error(proc.stderr[-4000:] or proc.stdout[-4000:])
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout_s:g} s"
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(out.read_text())
        return data, error


# --------------------------------------------------------------------------- formatting


def fmt_seconds(value: float | None) -> str:
    """Human-friendly duration: µs, ms or s with 2–3 significant figures."""
    if value is None:
        return "—"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs" if value >= 1e-5 else f"{value * 1e6:.1f} µs"
    if value < 1.0:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def fmt_bytes(value: float | None) -> str:
    """Bytes as MiB (or KiB below 1 MiB)."""
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024 * 1024:
        return f"{sign}{value / 1024:.0f} KiB"
    return f"{sign}{value / (1024 * 1024):.1f} MiB"


def fmt_ratio(theirs: float | None, ours: float | None, better: str = "faster", worse: str = "slower") -> str:
    """`theirs / ours` as "N× faster" (ours better) or "N× slower" (ours worse)."""
    if theirs is None or ours is None or ours <= 0 or theirs <= 0:
        return "—"
    ratio = theirs / ours
    word = better if ratio >= 1 else worse
    ratio = max(ratio, 1 / ratio)
    return f"{ratio:,.0f}× {word}" if ratio >= 100 else f"{ratio:.3g}× {word}"


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str] = (),
    *,
    plain: bool = False,
) -> None:
    """Print a table with rich if available (and not `plain`), else as aligned text."""
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain:
        table = Table(title=title, show_lines=False, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, overflow="fold", no_wrap=i == 0, max_width=None if i == 0 else 30)
        for row in rows:
            table.add_row(*row)
        console = Console(width=max(160, Console().width))
        console.print(table)
        for note in notes:
            console.print(note, highlight=False, markup=False)
        return
    import textwrap

    def cells(row: Sequence[str], first_width: int) -> list[list[str]]:
        return [textwrap.wrap(str(c), first_width if i == 0 else 30) or [""] for i, c in enumerate(row)]

    first = max(len(str(r[0])) for r in [columns, *rows])
    table = [cells(columns, first), *(cells(r, first) for r in rows)]
    widths = [max(len(line) for row in table for line in row[i]) for i in range(len(columns))]
    print(title)
    for index, row in enumerate(table):
        for depth in range(max(len(c) for c in row)):
            parts = [(c[depth] if depth < len(c) else "").ljust(w) for c, w in zip(row, widths, strict=True)]
            print(" | ".join(parts).rstrip())
        if index == 0:
            print("-+-".join("-" * w for w in widths))
    for note in notes:
        print(note)


class Recorder:
    """A child's results, rewritten to its output file after every change: a crash keeps what was measured."""

    def __init__(self, path: str, *, error_limit: int = 300) -> None:
        self.path = path
        self.error_limit = error_limit
        self.data: dict[str, Any] = {"metrics": {}, "errors": {}, "step": "starting"}
        self.flush()

    def flush(self) -> None:
        write_json(self.path, self.data)

    def step(self, name: str) -> None:
        self.data["step"] = name
        self.flush()

    def set(self, name: str, value: Any) -> None:
        to_dict = getattr(value, "to_dict", None)
        self.data["metrics"][name] = to_dict() if callable(to_dict) else value
        self.flush()

    def fail(self, name: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.data["errors"][name] = condense_error(text, limit=self.error_limit)
        self.flush()
