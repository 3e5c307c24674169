"""Needle in a haystack, RULER style: one magic number hidden in generated prose.

Our own single-needle task (after RULER's ``niah_single``): a seeded generator writes
prose from a fixed vocabulary and hides one sentence,
``The special magic number for <word> is <7 digits>.``, at a depth that is spread evenly
over the tasks of a size (task i of N sits at depth (i + 0.5) / N). The question is
``What is the special magic number for <word>?``; an answer is correct when the
7-digit number appears in it as a whole number. Sizes: 32K, 128K, 512K and 2M characters.

Rows (all with the same model, Qwen2.5-Coder-0.5B-Instruct Q4_K_M through llama.cpp on CPU):

- ``direct``: the model reads the context itself. The context is cut to what fits its
  32K-token window, less room for the question and the answer, keeping the beginning,
  as a user would have to. Above the window the needle may be cut off; that is the point.
- ``rlm``: our RLM, ``RLM(LocalModel(), config=RLMConfig(max_iterations=6))``.
- ``rlms`` / ``dspy``: the same model behind llama.cpp's OpenAI-compatible server on
  127.0.0.1, driving the ``rlms`` package (``rlm.RLM``, 6 iterations) and ``dspy.RLM``
  (6 iterations, ``dspy.LocalInterpreter``). These run in a child process of the
  interpreter given by ``--bench-python`` (default ``.venv-bench/bin/python``, which has
  ``rlms``, ``dspy`` and ``llama-cpp-python[server]``). A row that cannot run says why.

Reported per row and size: accuracy, median wall time per task and median tokens per task
(prompt plus completion, every model call of the task). The model is loaded once per process.

    python benchmarks/niah.py                               # every row, 20 tasks per size
    python benchmarks/niah.py --quick                       # smoke run: rlm row, 32K and 128K, 1 task
    python benchmarks/niah.py --rows rlm --tasks 5 --json rlm.json
    python benchmarks/niah.py --rows direct --sizes 32K,128K --tasks 2 --json direct.json
    python benchmarks/niah.py --report rlm.json direct.json  # one table from saved results

Needs: the project with its ``[local]`` extra (the verified model is fetched into the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"32K": 32_000, "128K": 128_000, "512K": 512_000, "2M": 2_000_000}
ROWS = ("direct", "rlm", "rlms", "dspy")
ROW_LABELS = {
    "direct": "model read directly (cut to its 32K-token window)",
    "rlm": "our RLM (max_iterations=6)",
    "rlms": "rlms (rlm.RLM) via llama.cpp server",
    "dspy": "dspy.RLM via llama.cpp server",
}
MAX_ITERATIONS = 6
N_CTX = 32_768
ANSWER_TOKENS = 32

# Filler vocabulary and needle keys are disjoint, so the key word occurs only in the needle.
_FILLER = (
    "river stone market lantern orchard harbor meadow signal copper violet winter garden engine "
    "ledger candle bridge thunder saddle mirror quarry willow beacon the a of and under over "
    "quietly slowly bright old new small heavy across beside morning evening travelers merchants "
    "carried watched built painted followed remembered village tower road field letter window "
    "song story crowd shadow glass iron wheel basket"
).split()
_KEYS = (
    "falcon pepper glacier tulip walrus saffron cobalt pelican juniper marble otter velvet "
    "hazelnut compass lagoon tangerine sparrow basalt cricket mango oyster quartz raven "
    "sequoia thimble umbrella vulture wombat yarrow zephyr anchovy bramble cactus dolphin"
).split()


# --------------------------------------------------------------------------- task generator


@dataclass(frozen=True)
class Task:
    size_label: str
    index: int
    chars: int
    depth: float
    key: str
    number: str
    question: str

    def context(self, seed: int) -> str:
        return make_context(self, seed)


def make_task(size_label: str, index: int, n_tasks: int, seed: int) -> Task:
    """Task `index` of `n_tasks` at a size: its key, number and needle depth (seeded)."""
    rng = random.Random(f"niah-{seed}-{size_label}-{index}")
    key = rng.choice(_KEYS)
    number = str(rng.randrange(1_000_000, 10_000_000))
    depth = (index + 0.5) / n_tasks
    question = f"What is the special magic number for {key}?"
    return Task(size_label, index, SIZES[size_label], depth, key, number, question)


def make_context(task: Task, seed: int) -> str:
    """Generated prose of `task.chars` characters with the needle sentence at `task.depth`."""
    rng = random.Random(f"haystack-{seed}-{task.size_label}-{task.index}")
    needle = f"The special magic number for {task.key} is {task.number}. "
    target = task.chars - len(needle)
    parts: list[str] = []
    size = 0
    while size < target:
        words = [rng.choice(_FILLER) for _ in range(rng.randint(6, 16))]
        sentence = " ".join(words).capitalize() + (". " if rng.random() < 0.85 else "; ")
        if rng.random() < 0.15:
            sentence += "\n\n"
        parts.append(sentence)
        size += len(sentence)
    text = "".join(parts)[:target]
    # Put the needle at a sentence boundary near the requested depth.
    at = int(task.depth * len(text))
    boundary = text.rfind(". ", 0, at)
    at = boundary + 2 if boundary >= 0 else 0
    return text[:at] + needle + text[at:]


def is_correct(answer: Any, number: str) -> bool:
    return number in re.findall(r"\d+", str(answer if answer is not None else ""))


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    row: str
    size: str
    index: int
    depth: float
    expected: str
    answer: str
    correct: bool
    wall_s: float
    tokens: int
    status: str = "completed"
    iterations: int | None = None
    needle_in_view: bool | None = None
    error: str | None = None


def _short(value: Any, limit: int = 200) -> str:
    text = str(value if value is not None else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- our rows


_MODEL: Any = None


def local_model() -> Any:
    """The one LocalModel of this process."""
    global _MODEL
    if _MODEL is None:
        from rlm_integrations.lm import LocalModel

        started = time.monotonic()
        _MODEL = LocalModel()
        print(f"loaded {_MODEL.name} from {_MODEL.path} in {time.monotonic() - started:.1f}s", flush=True)
    return _MODEL


_DIRECT_PREAMBLE = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards.\n\n"
)


def _fit_to_window(model: Any, context: str, question: str) -> tuple[str, int]:
    """The longest beginning of `context` whose prompt fits the window with room for the answer."""
    llama = model._llama
    overhead = len(llama.tokenize((_DIRECT_PREAMBLE + "\n\n" + question).encode(), add_bos=False, special=False))
    budget = N_CTX - ANSWER_TOKENS - overhead - 64  # chat template markers and a margin
    head = context[: budget * 8]  # generated prose never packs more than 8 characters into a token
    tokens = llama.tokenize(head.encode(), add_bos=False, special=False)
    if len(tokens) <= budget and len(head) == len(context):
        return context, len(tokens)
    kept = llama.detokenize(tokens[:budget]).decode("utf-8", "ignore")
    return kept, min(budget, len(tokens))


def run_direct(task: Task, seed: int, timeout_s: float | None) -> Result:
    model = local_model()
    context = task.context(seed)
    kept, _ = _fit_to_window(model, context, task.question)
    needle = f"The special magic number for {task.key} is {task.number}."
    prompt = f"{_DIRECT_PREAMBLE}{kept}\n\n{task.question} Answer with the number only."
    started = time.monotonic()
    try:
        reply = model.complete([{"role": "user", "content": prompt}], max_tokens=ANSWER_TOKENS)
        answer, tokens, error, status = (
            reply.text,
            reply.usage.prompt_tokens + reply.usage.completion_tokens,
            None,
            "completed",
        )
    except Exception as exc:
        answer, tokens, error, status = "", 0, f"{type(exc).__name__}: {exc}", "error"
    wall = time.monotonic() - started
    return Result(
        "direct",
        task.size_label,
        task.index,
        task.depth,
        task.number,
        _short(answer),
        is_correct(answer, task.number),
        wall,
        tokens,
        status,
        None,
        needle in kept,
        error,
    )


def run_rlm(task: Task, seed: int, timeout_s: float | None) -> Result:
    from rlm_integrations import RLM, RLMConfig

    model = local_model()
    extra = {"timeout_s": timeout_s} if timeout_s else {}
    rlm = RLM(model, config=RLMConfig(max_iterations=MAX_ITERATIONS, **extra))
    context = task.context(seed)
    started = time.monotonic()
    try:
        result = rlm.completion(task.question, context)
        answer, tokens, status, iterations, error = (
            result.answer,
            result.usage.total_tokens,
            result.status,
            result.iterations,
            result.error,
        )
    except Exception as exc:
        answer, tokens, status, iterations, error = "", 0, "error", None, f"{type(exc).__name__}: {exc}"
    wall = time.monotonic() - started
    return Result(
        "rlm",
        task.size_label,
        task.index,
        task.depth,
        task.number,
        _short(answer),
        is_correct(answer, task.number),
        wall,
        tokens,
        status,
        iterations,
        None,
        error,
    )


# --------------------------------------------------------------------------- competitor rows (child side)


def _child_rlms(task: Task, seed: int, base_url: str) -> dict[str, Any]:
    from rlm import RLM

    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "local", "base_url": base_url, "api_key": "sk-local"},
        environment="local",
        max_iterations=MAX_ITERATIONS,
        sampling_args={"temperature": 0.0, "max_tokens": 768},
    )
    result = rlm.completion(task.context(seed), root_prompt=task.question)
    usage = result.usage_summary
    return {
        "answer": result.response,
        "tokens": usage.total_input_tokens + usage.total_output_tokens,
        "status": "completed" if not result.error else "error",
        "error": result.error,
    }


def _child_dspy(task: Task, seed: int, base_url: str) -> dict[str, Any]:
    import dspy

    lm = dspy.LM("openai/local", api_base=base_url, api_key="sk-local", temperature=0.0, max_tokens=768, cache=False)
    dspy.configure(lm=lm)
    module = dspy.RLM(
        "context, question -> answer", max_iters=MAX_ITERATIONS, interpreter_factory=dspy.LocalInterpreter
    )
    prediction = module(context=task.context(seed), question=task.question)
    tokens = 0
    for entry in lm.history:
        usage = entry.get("usage") or {}
        tokens += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    trajectory = getattr(prediction, "trajectory", None)
    return {
        "answer": prediction.answer,
        "tokens": tokens,
        "status": "completed",
        "iterations": len(trajectory) if isinstance(trajectory, list) else None,
    }


def child_main(args: argparse.Namespace) -> int:
    """One competitor task in this process; prints one JSON line."""
    size, index, n_tasks = args.child_task.split(":")
    task = make_task(size, int(index), int(n_tasks), args.seed)
    fn = {"rlms": _child_rlms, "dspy": _child_dspy}[args.child]
    started = time.monotonic()
    try:
        out = fn(task, args.seed, args.base_url)
    except BaseException as exc:
        out = {"answer": "", "tokens": 0, "status": "error", "error": _condense(exc)}
    out["wall_s"] = time.monotonic() - started
    print("NIAH-RESULT " + json.dumps(out, default=str), flush=True)
    return 0


def _condense(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = re.sub(r"\s+", " ", text)
    return text[:400]


# --------------------------------------------------------------------------- competitor rows (parent side)


class Server:
    """llama.cpp's OpenAI-compatible server for the same GGUF, on 127.0.0.1."""

    def __init__(self, python: str, model_path: str, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log.open("w")
        try:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    model_path,
                    "--n_ctx",
                    str(N_CTX),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--model_alias",
                    "local",
                ],
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
        except OSError:
            self.log.close()
            raise
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode} (log: {log})")
            try:
                urllib.request.urlopen(f"{self.base_url}/models", timeout=5).read()
                return
            except OSError:
                time.sleep(1)
        self.close()
        raise RuntimeError(f"llama.cpp server did not start in 300 s (log: {log})")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def run_competitor(row: str, task: Task, n_tasks: int, args: argparse.Namespace, server: Server) -> Result:
    cmd = [
        args.bench_python,
        str(Path(__file__).resolve()),
        "--child",
        row,
        "--child-task",
        f"{task.size_label}:{task.index}:{n_tasks}",
        "--seed",
        str(args.seed),
        "--base-url",
        server.base_url,
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.task_timeout or None)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("NIAH-RESULT ")]
        if lines:
            out = json.loads(lines[-1][len("NIAH-RESULT ") :])
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            out = {"answer": "", "tokens": 0, "status": "error", "error": " | ".join(tail)[:400]}
    except subprocess.TimeoutExpired:
        out = {"answer": "", "tokens": 0, "status": "timeout", "error": f"over {args.task_timeout} s"}
    wall = out.get("wall_s", time.monotonic() - started)
    answer = out.get("answer", "")
    return Result(
        row,
        task.size_label,
        task.index,
        task.depth,
        task.number,
        _short(answer),
        is_correct(answer, task.number),
        wall,
        int(out.get("tokens") or 0),
        out.get("status", "completed"),
        out.get("iterations"),
        None,
        out.get("error"),
    )


# --------------------------------------------------------------------------- table


def summarize(results: list[dict[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in ROWS:
        cells = [ROW_LABELS[row]]
        seen = False
        for size in SIZES:
            mine = [r for r in results if r["row"] == row and r["size"] == size]
            if not mine:
                cells.append("not run")
                continue
            seen = True
            ok = sum(r["correct"] for r in mine)
            wall = statistics.median(r["wall_s"] for r in mine)
            counted = [r["tokens"] for r in mine if r["tokens"] or r["status"] == "completed"]
            tokens = f"{statistics.median(counted) / 1000:.1f}K tok" if counted else "tokens n/a"
            cell = f"{ok}/{len(mine)} ({100 * ok / len(mine):.0f}%), {wall:.0f} s, {tokens}"
            for status in ("error", "timeout"):
                count = sum(r["status"] == status for r in mine)
                if count:
                    cell += f", {count} {status}{'s' if count > 1 else ''}"
            cells.append(cell)
        if seen:
            rows.append(cells)
    return rows


def print_markdown(results: list[dict[str, Any]]) -> None:
    header = ["row", *(f"{s} chars" for s in SIZES)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in summarize(results):
        print("| " + " | ".join(cells) + " |")
    print("\nEach cell: correct/tasks (accuracy), median wall time per task, median tokens per task.")
    errors = [r for r in results if r.get("error")]
    for r in errors[:12]:
        print(f"  {r['row']} {r['size']} #{r['index']}: {r['status']}: {_short(r['error'], 300)}")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=20, help="tasks per size (default 20)")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma list of 32K,128K,512K,2M")
    p.add_argument("--rows", default=",".join(ROWS), help="comma list of direct,rlm,rlms,dspy")
    p.add_argument("--json", type=Path, help="write every task's result here (kept up to date as it runs)")
    p.add_argument("--quick", action="store_true", help="smoke run: rlm row, 32K and 128K, 1 task each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--task-timeout",
        type=float,
        default=0,
        help="seconds per task, 0 for none (rlm: RLMConfig.timeout_s; rlms/dspy: the child is killed; direct: ignored)",
    )
    p.add_argument(
        "--bench-python",
        default=str(ROOT / ".venv-bench" / "bin" / "python"),
        help="interpreter with rlms, dspy and llama-cpp-python[server] for the competitor rows",
    )
    p.add_argument("--report", nargs="+", type=Path, help="print one table from saved --json files and exit")
    p.add_argument("--child", choices=("rlms", "dspy"), help=argparse.SUPPRESS)
    p.add_argument("--child-task", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.sizes, args.rows = 1, "32K,128K", "rlm"
    return args


def _view_note(in_view: bool | None) -> str:
    if in_view is None:
        return ""
    return ", needle in view" if in_view else ", needle cut off"


def run_row(row: str, sizes: list[str], args: argparse.Namespace, record: Any) -> None:
    """Every task of one row; the competitor rows get their own llama.cpp server."""
    server = None
    if row in ("rlms", "dspy"):
        try:
            from rlm_integrations.lm.model_store import QWEN_CODER_05B, ensure_model

            log = Path(os.environ.get("TMPDIR", "/tmp")) / f"niah-llama-server-{row}-{os.getpid()}.log"
            server = Server(args.bench_python, str(ensure_model(QWEN_CODER_05B)), log)
        except Exception as exc:
            for size in sizes:
                for i in range(args.tasks):
                    task = make_task(size, i, args.tasks, args.seed)
                    error = f"server did not start: {_condense(exc)}"
                    record(Result(row, size, i, task.depth, task.number, "", False, 0.0, 0, "error", error=error))
            return
    try:
        for size in sizes:
            for i in range(args.tasks):
                task = make_task(size, i, args.tasks, args.seed)
                if row == "direct":
                    record(run_direct(task, args.seed, args.task_timeout))
                elif row == "rlm":
                    record(run_rlm(task, args.seed, args.task_timeout))
                else:
                    assert server is not None
                    record(run_competitor(row, task, args.tasks, args, server))
    finally:
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.report:
        results = [r for path in args.report for r in json.loads(path.read_text())["results"]]
        print_markdown(results)
        return 0
    sizes = [s.strip().upper() for s in args.sizes.split(",") if s.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [s for s in sizes if s not in SIZES] + [r for r in rows if r not in ROWS]
    if bad:
        print(f"unknown size or row: {', '.join(bad)}", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "seed": args.seed,
        "tasks_per_size": args.tasks,
        "results": [],
    }
    started_all = time.monotonic()

    def record(result: Result) -> None:
        doc["results"].append(asdict(result))
        mark = "ok " if result.correct else "BAD"
        print(
            f"[{time.monotonic() - started_all:7.0f}s] {mark} {result.row:6} {result.size:>4} #{result.index} "
            f"depth {result.depth:.2f} expected {result.expected} got {result.answer!r:.80} "
            f"({result.wall_s:.0f} s, {result.tokens} tok, {result.status}"
            f"{_view_note(result.needle_in_view)})",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(doc, indent=1, default=str))

    for row in rows:
        run_row(row, sizes, args, record)
    print()
    print_markdown(doc["results"])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
