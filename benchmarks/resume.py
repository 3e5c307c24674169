"""Resuming a run killed mid-way (`ResumableRun`, core/resume.py) over a large context.

A real `LiteLLMModel` talks to `FakeOpenAIServer` (loopback, `--delay` seconds per reply).
The scripted root model works through a `--mb` MB context in `--steps` turns; each turn's
cell scans a tenth of the context and makes `--subs` sequential `llm_query` calls on
slices of it, and the last turn answers from the variables every earlier turn made.

Measured, each from a fresh `RLM` and REPL:

1. a plain `completion` (no run directory);
2. the same run through `ResumableRun` (journal, context fingerprint, on-disk call cache);
3. a `ResumableRun` attempt stopped at step `--stop-at` (the server fails that turn, as if
   the process had died waiting for it; `max_retries=0`);
4. the resume of 3: its finished steps replayed from the record (cells run again, no
   model call), the rest live;
5. a resume of the finished run: every step replayed;
6. the context fingerprint alone (sha256 of the UTF-8 text).

The resume overhead is 4 minus the part of 1 that the remaining steps take; row 5 is its
upper bound (replaying the whole run).

    .venv/bin/python benchmarks/resume.py [--mb 100] [--delay 0.1] [--steps 6] [--subs 3] [--stop-at 4]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.core.events import IterationStarted, RunFinished
from rlm_integrations.core.resume import ResumableRun, fingerprint_context, read_journal
from rlm_integrations.lm import LiteLLMModel
from rlm_integrations.testing import FakeOpenAIServer, Fault

QUESTION = "How often does 'alpha' occur in each tenth of the context, and what do the notes say?"


def step_code(step: int, subs: int) -> str:
    """Turn `step` (from 0): count in one tenth of the context and ask about `subs` slices of it."""
    start = "counts, notes = {}, []\n" if step == 0 else ""  # later turns build on what earlier ones made
    return (
        f"```repl\n{start}"
        "tenth = len(context) // 10\n"
        f"part = context[{step} * tenth:{step + 1} * tenth]\n"
        f"counts[{step}] = part.count('alpha')\n"
        f"notes += [llm_query(f'Summarise slice {step}.{{i}}: ' + part[i * 2000:(i + 1) * 2000])"
        f" for i in range({subs})]\n"
        f"print(counts[{step}], len(notes))\n```"
    )


FINAL = "```repl\nFINAL({'counts': counts, 'notes': len(notes)})\n```"


class Script:
    """The server's replies: the root script by turn; `fail_turn` answers with an HTTP 500 while `failing`."""

    def __init__(self, steps: int, subs: int, fail_turn: int) -> None:
        self.steps, self.subs, self.fail_turn = steps, subs, fail_turn
        self.failing = False
        self.requests = 0

    def __call__(self, body: dict[str, Any]) -> str | Fault:
        self.requests += 1
        messages = body["messages"]
        if body["model"] == "sub":
            return f"a note of {len(messages[-1]['content'])} characters"
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if self.failing and turn == self.fail_turn:
            return Fault.server_error(503, "the process died here (simulated)")
        return step_code(turn, self.subs) if turn < self.steps - 1 else FINAL


def context_text(megabytes: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    line = " ".join(words[(i * 7919) % len(words)] for i in range(200)) + "\n"
    size = megabytes * 1_000_000
    return (line * (size // len(line) + 1))[:size]


Row = tuple[str, float, float, float, int, int, str]


async def timed(label: str, rows: list[Row], run: Any, script: Script) -> RLMResult:
    """Run, and add a row: wall time, its start (REPL start and context load) and loop parts, requests, replays."""
    before = script.requests
    began = time.perf_counter()
    result: RLMResult = await run
    seconds = time.perf_counter() - began
    events = list(result.trajectory.iter_events())
    start = events[0].at
    first = next((e.at for e in events if isinstance(e, IterationStarted)), start)
    end = next(e.at for e in reversed(events) if isinstance(e, RunFinished) and e.run_id == events[0].run_id)
    cached = result.usage.cached_calls
    rows.append((label, seconds, first - start, end - first, script.requests - before, cached, result.status))
    return result


async def main_async(args: argparse.Namespace) -> None:
    context = context_text(args.mb)
    script = Script(args.steps, args.subs, args.stop_at)
    rows: list[Row] = []
    async with FakeOpenAIServer(script, latency_s=args.delay) as server:
        options: dict[str, Any] = {"api_base": server.api_base, "api_key": "sk-bench", "timeout_s": 60.0}

        def rlm() -> RLM:
            models = [LiteLLMModel(f"openai/{name}", max_retries=0, **options) for name in ("root", "sub")]
            return RLM(*models, config=RLMConfig(cell_timeout_s=120.0, context_preview_chars=200))

        await rlm().acompletion("warm-up: say hi", "x")  # the HTTP client's first use, outside the rows
        with tempfile.TemporaryDirectory() as folder:
            plain = await timed("plain completion", rows, rlm().acompletion(args.question, context), script)
            full = await timed(
                "ResumableRun, not stopped",
                rows,
                ResumableRun(rlm(), Path(folder) / "full").acompletion(args.question, context),
                script,
            )
            script.failing = True
            stopped = await timed(
                f"attempt stopped at step {args.stop_at + 1}",
                rows,
                ResumableRun(rlm(), Path(folder) / "stopped").acompletion(args.question, context),
                script,
            )
            script.failing = False
            resumed = await timed(
                f"resume: {args.stop_at} steps replayed, {args.steps - args.stop_at} live",
                rows,
                ResumableRun(rlm(), Path(folder) / "stopped").acompletion(args.question, context),
                script,
            )
            replayed = await timed(
                "resume of the finished run (all replayed)",
                rows,
                ResumableRun(rlm(), Path(folder) / "full").acompletion(args.question, context),
                script,
            )
            journal = read_journal(Path(folder) / "stopped")
    began = time.perf_counter()
    fingerprint_context(context)
    fingerprint_s = time.perf_counter() - began

    assert stopped.status == "error", stopped.status
    for result in (full, resumed, replayed):
        assert result.answer == plain.answer, (result.answer, plain.answer)
    assert journal is not None and journal.attempts[-1].diverged_at is None

    print(
        f"\nResume over a {args.mb} MB context: {args.steps} steps, {args.subs} sub-calls each, "
        f"{args.delay * 1000:.0f} ms per model reply"
    )
    print("(start: REPL start and context load, which every run pays; loop: the turns, cells and calls)")
    print(f"{'':46} {'total s':>8} {'start s':>8} {'loop s':>8} {'requests':>9} {'replayed':>9}  status")
    for label, seconds, start, loop, requests, cached, status in rows:
        print(f"{label:46} {seconds:8.2f} {start:8.2f} {loop:8.2f} {requests:9d} {cached:9d}  {status}")
    print(f"{'fingerprint of the context (sha256)':46} {fingerprint_s:8.2f}")
    loops = {label: loop for label, _, _, loop, *_ in rows}
    plain_loop, replay_loop = loops["plain completion"], loops["resume of the finished run (all replayed)"]
    print(
        f"replaying all {args.steps} steps takes {replay_loop:.2f} s of loop against {plain_loop:.2f} s live "
        f"({plain_loop / max(replay_loop, 1e-9):.0f}x less); a resume costs that, the fingerprint and the start "
        "that any run pays"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=100, help="context size in MB")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds per model reply")
    parser.add_argument("--steps", type=int, default=6, help="root turns (the last one answers)")
    parser.add_argument("--subs", type=int, default=3, help="llm_query calls per turn")
    parser.add_argument("--stop-at", type=int, default=4, help="steps finished before the stop")
    parser.add_argument("--question", default=QUESTION, help="the question (its words are probed in the context)")
    args = parser.parse_args()
    if not 0 < args.stop_at < args.steps:
        parser.error("--stop-at must be between 1 and --steps - 1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
