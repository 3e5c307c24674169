"""Long-context suite: seven RULER/OOLONG-style task families, read directly vs through an RLM.

The tasks come from ``benchmarks/longctx_suite`` (generated offline from seeds; see
benchmarks/README.md for the families, sizes, splits and scoring). Rows:

- ``direct-local`` / ``direct-local-1.5b``: the model reads the context itself, cut to its
  32K-token window (keeping the beginning), as ``niah.py``'s direct row does.
- ``rlm-local`` / ``rlm-local-1.5b``: our RLM with the embedded 0.5B model / the 1.5B option.
- ``rlms-local`` / ``dspy-local``: the ``rlms`` package and ``dspy.RLM`` with the 0.5B model
  behind llama.cpp's server, run in a child of ``--bench-python`` with ``niah.py``'s code.

``--model scripted`` replaces the model of the rlm rows with a scripted one that runs each
task's reference program (a smoke test of the plumbing; the other rows are skipped).

    python benchmarks/longctx.py --model scripted --sizes 8K,32K --tasks-per-cell 1
    python benchmarks/longctx.py --rows rlm-local,direct-local --sizes 32K,128K --split heldout --tasks-per-cell 2
    python benchmarks/longctx.py --report results.json           # the table from saved results

Each cell: mean score (exact / list / numeric partial credit), tasks, median wall time and
median tokens per task. Results go to ``--json`` (default ``longctx-results.json``),
rewritten after every task.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from longctx_suite import FAMILIES, Task, make_task, parse_size  # noqa: E402

ROOT = HERE.parent
ROWS = {
    "direct-local": ("direct", "qwen2.5-coder-0.5b"),
    "direct-local-1.5b": ("direct", "qwen2.5-coder-1.5b"),
    "rlm-local": ("rlm", "qwen2.5-coder-0.5b"),
    "rlm-local-1.5b": ("rlm", "qwen2.5-coder-1.5b"),
    "rlms-local": ("rlms", "qwen2.5-coder-0.5b"),
    "dspy-local": ("dspy", "qwen2.5-coder-0.5b"),
    "rlm-scripted": ("rlm", "scripted"),
}
DEFAULT_SIZES = "8K,32K,128K,1M"
ANSWER_TOKENS = 96
_DIRECT_PREAMBLE = "Read the following text carefully; a question about it comes at the end.\n\n"


# --------------------------------------------------------------------------- models


_MODELS: dict[str, Any] = {}


def local_model(name: str) -> Any:
    """One LocalModel per known model name in this process."""
    if name not in _MODELS:
        from rlm_integrations.lm import LocalModel

        started = time.monotonic()
        threads = int(os.environ.get("RLM_BENCH_THREADS", "0")) or None  # 1 on a loaded machine (llama.cpp spins)
        _MODELS[name] = LocalModel(model=name, n_threads=threads)
        print(f"loaded {name} in {time.monotonic() - started:.1f}s", flush=True)
    return _MODELS[name]


def _short(value: Any, limit: int = 200) -> str:
    text = str(value if value is not None else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _result(row: str, task: Task, answer: Any, wall: float, tokens: int, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "row": row,
        **task.summary(),
        "answer": _short(answer, 400),
        "score": task.score(answer),
        "wall_s": wall,
        "tokens": tokens,
        "status": status,
        **extra,
    }


def run_direct(row: str, task: Task, model_name: str) -> dict[str, Any]:
    import niah

    model = local_model(model_name)
    kept, _ = niah._fit_to_window(model, task.context, task.question)
    prompt = f"{_DIRECT_PREAMBLE}{kept}\n\n{task.question}"
    started = time.monotonic()
    try:
        reply = model.complete([{"role": "user", "content": prompt}], max_tokens=ANSWER_TOKENS)
        answer, tokens, status, error = (
            reply.text,
            reply.usage.prompt_tokens + reply.usage.completion_tokens,
            "ok",
            None,
        )
    except Exception as exc:
        answer, tokens, status, error = "", 0, "error", f"{type(exc).__name__}: {exc}"
    return _result(row, task, answer, time.monotonic() - started, tokens, status, error=error, kept_chars=len(kept))


def run_rlm(row: str, task: Task, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    from rlm_integrations import RLM, RLMConfig

    extra = {"timeout_s": args.task_timeout} if args.task_timeout else {}
    if args.model == "scripted":
        extra["max_llm_calls"] = None  # the scripted reader reads every message, however many
    config = RLMConfig(max_iterations=args.max_iterations, **extra)
    if args.model == "scripted":
        from longctx_suite.scripted import scripted_models

        root, sub = scripted_models(task)
        rlm = RLM(root, sub, config=config)
    else:
        rlm = RLM(local_model(model_name), config=config)
    started = time.monotonic()
    try:
        result = rlm.completion(task.question, task.context)
        answer, tokens, status, error = result.answer, result.usage.total_tokens, result.status, result.error
        iterations = result.iterations
        sub_calls = sum(1 for _ in result.trajectory.iter_events("sub_call_end"))
    except Exception as exc:
        answer, tokens, status, error, iterations, sub_calls = "", 0, "error", f"{type(exc).__name__}: {exc}", None, 0
    return _result(
        row,
        task,
        answer,
        time.monotonic() - started,
        tokens,
        status,
        error=error,
        iterations=iterations,
        sub_calls=sub_calls,
    )


# --------------------------------------------------------------------------- rlms / dspy rows (niah.py's code)


class _NiahShaped:
    """A suite task in the shape niah.py's competitor functions expect (`.question`, `.context(seed)`)."""

    def __init__(self, task: Task) -> None:
        self.question = task.question
        self._context = task.context

    def context(self, seed: int) -> str:
        return self._context


def child_main(args: argparse.Namespace) -> int:
    import niah

    family, size, split, index = args.child_task.split(":")
    task = make_task(family, size, split, int(index))
    fn = {"rlms": niah._child_rlms, "dspy": niah._child_dspy}[args.child]
    started = time.monotonic()
    try:
        out = fn(_NiahShaped(task), 0, args.base_url)
    except BaseException as exc:
        out = {"answer": "", "tokens": 0, "status": "error", "error": niah._condense(exc)}
    out["wall_s"] = time.monotonic() - started
    print("LONGCTX-RESULT " + json.dumps(out, default=str), flush=True)
    return 0


def run_competitor(row: str, kind: str, task: Task, args: argparse.Namespace, server: Any) -> dict[str, Any]:
    import subprocess

    cmd = [args.bench_python, str(Path(__file__).resolve()), "--child", kind, "--base-url", server.base_url]
    cmd += ["--child-task", f"{task.family}:{task.size}:{task.split}:{task.index}"]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.task_timeout or None, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("LONGCTX-RESULT ")]
        if lines:
            out = json.loads(lines[-1][len("LONGCTX-RESULT ") :])
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            out = {"answer": "", "tokens": 0, "status": "error", "error": " | ".join(tail)[:400]}
    except subprocess.TimeoutExpired:
        out = {"answer": "", "tokens": 0, "status": "timeout", "error": f"over {args.task_timeout} s"}
    return _result(
        row,
        task,
        out.get("answer", ""),
        float(out.get("wall_s", time.monotonic() - started)),
        int(out.get("tokens") or 0),
        out.get("status", "completed"),
        error=out.get("error"),
    )


# --------------------------------------------------------------------------- table


def table(results: list[dict[str, Any]]) -> str:
    rows = list(dict.fromkeys(r["row"] for r in results))
    cells = list(dict.fromkeys((r["family"], r["size"]) for r in results))
    lines = ["| family | size | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
    for family, size in cells:
        out = []
        for row in rows:
            mine = [r for r in results if r["row"] == row and r["family"] == family and r["size"] == size]
            if not mine:
                out.append("not run")
                continue
            score = statistics.mean(r["score"] for r in mine)
            wall = statistics.median(r["wall_s"] for r in mine)
            tokens = statistics.median(r["tokens"] for r in mine)
            bad = sum(r["status"] not in ("ok", "completed") for r in mine)
            note = f", {bad} not completed" if bad else ""
            out.append(f"{100 * score:.0f}% ({len(mine)}), {wall:.0f} s, {tokens / 1000:.1f}K tok{note}")
        lines.append(f"| {family} | {size} | " + " | ".join(out) + " |")
    overall = []
    for row in rows:
        mine = [r["score"] for r in results if r["row"] == row]
        overall.append(f"{100 * statistics.mean(mine):.0f}% ({len(mine)})")
    lines.append("| **all** | | " + " | ".join(overall) + " |")
    lines.append("")
    lines.append("Each cell: mean score, (tasks), median wall time per task, median tokens per task.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="rlm-local,direct-local", help=f"comma list of {', '.join(ROWS)}")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma list of sizes: 8K,32K,128K,512K,1M,2M or e.g. 64K")
    p.add_argument("--split", default="heldout", choices=("train", "heldout"))
    p.add_argument("--tasks-per-cell", type=int, default=3)
    p.add_argument("--first-index", type=int, default=0, help="index of the first task of each cell")
    p.add_argument("--model", default="local", choices=("local", "scripted"))
    p.add_argument("--max-iterations", type=int, default=6)
    p.add_argument("--task-timeout", type=float, default=0, help="seconds per task (rlm: RLMConfig.timeout_s)")
    p.add_argument("--json", type=Path, default=Path("longctx-results.json"))
    p.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--report", nargs="+", type=Path, help="print the table from saved --json files and exit")
    p.add_argument("--child", choices=("rlms", "dspy"), help=argparse.SUPPRESS)
    p.add_argument("--child-task", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _start_server(row: str, model_name: str, args: argparse.Namespace) -> Any:
    """llama.cpp's server for the rlms / dspy rows (niah.py's), or None with a printed reason."""
    import niah

    from rlm_integrations.lm.model_store import ensure_model, model_spec

    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"longctx-llama-server-{row}-{os.getpid()}.log"
    try:
        return niah.Server(args.bench_python, str(ensure_model(model_spec(model_name))), log)
    except Exception as exc:
        print(f"{row}: server did not start ({exc}); row skipped", flush=True)
        return None


def run_row(
    row: str, families: list[str], sizes: list[str], args: argparse.Namespace, doc: dict[str, Any], t0: float
) -> None:
    """Every task of one row, appended to `doc` and written to `--json` as it goes."""
    kind, model_name = ROWS[row]
    server = None
    if kind in ("rlms", "dspy"):
        server = _start_server(row, model_name, args)
        if server is None:
            return
    try:
        for family in families:
            for size in sizes:
                for index in range(args.first_index, args.first_index + args.tasks_per_cell):
                    task = make_task(family, size, args.split, index)
                    if kind == "direct":
                        result = run_direct(row, task, model_name)
                    elif kind == "rlm":
                        result = run_rlm(row, task, model_name, args)
                    else:
                        result = run_competitor(row, kind, task, args, server)
                    doc["results"].append(result)
                    args.json.write_text(json.dumps(doc, indent=1, default=str))
                    print(
                        f"[{time.monotonic() - t0:6.0f}s] {row} {task.task_id} score {result['score']:.2f} "
                        f"gold {_short(task.gold, 60)} got {result['answer']!r:.80} "
                        f"({result['wall_s']:.0f} s, {result['tokens']} tok, {result['status']})",
                        flush=True,
                    )
    finally:
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.report:
        print(table([r for path in args.report for r in json.loads(path.read_text())["results"]]))
        return 0
    rows, families, sizes = _split_list(args.rows), _split_list(args.families), _split_list(args.sizes)
    bad = [r for r in rows if r not in ROWS] + [f for f in families if f not in FAMILIES]
    try:
        for size in sizes:
            parse_size(size)
    except ValueError as error:
        bad.append(str(error))
    if bad:
        print(f"unknown row, family or size: {', '.join(bad)}", file=sys.stderr)
        return 2
    if args.model == "scripted":
        skipped = [r for r in rows if ROWS[r][0] != "rlm"]
        if skipped:
            print(f"--model scripted runs only the rlm rows; skipping {', '.join(skipped)}", flush=True)
        rows = ["rlm-scripted"]
    doc: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "python": sys.version.split()[0]},
        "split": args.split,
        "model": args.model,
        "results": [],
    }
    started_all = time.monotonic()
    for row in rows:
        run_row(row, families, sizes, args, doc, started_all)
    print()
    print(table(doc["results"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
