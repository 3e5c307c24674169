"""Benchmark `RLMRunnable.abatch` against calling the core directly, with a fake 200 ms model.

16 RLM runs, each two root turns (measure the context in a cell, then `FINAL`), against
a fake chat model that answers after 200 ms. Each run therefore needs at least 0.4 s of
model time, and with `max_concurrency` c the batch needs at least ceil(16 / c) × 0.4 s:
the ideal. Three contenders, all with real worker REPLs:

- core: `RLM(ScriptedLM(latency_s=0.2)).acompletion`, 16 calls under an
  `asyncio.Semaphore(c)`: the engine with no LangChain anywhere;
- langchain: `RLMRunnable(model=ScriptedChatModel(latency_s=0.2)).abatch(inputs,
  {"max_concurrency": c})`: chat-model calls, config machinery, the run-tree tracer and
  custom events (with no handler attached they cost little);
- langchain + tracer: the same with a LangChain tracer attached that records the whole
  run tree in memory (what LangSmith's tracer does before it uploads, in a background
  thread; like it, the tracer runs inline on the event loop);
- chat model: `RLMChatModel(model=ScriptedChatModel(latency_s=0.2)).abatch(conversations,
  ...)`, each conversation a question and the context as a long message: the message
  split, the chat-model run around the RLM run and the `AIMessage` built from the output.

Targets: the LangChain layer costs under 10 % over the core, and the chat model under 5 %
over `RLMRunnable` (medians of the batch wall time).

    python benchmarks/langchain_batch.py            # 5 repetitions per contender
    python benchmarks/langchain_batch.py --quick    # 2 repetitions
    python benchmarks/langchain_batch.py --json out.json --plain
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import Timing, fmt_seconds, machine_info, print_table, write_json

RUNS = 16
LATENCY_S = 0.2
TURNS = 2
TARGET_OVERHEAD = 0.10
TARGET_CHAT_OVERHEAD = 0.05


def reply_text(last_user: str, first_turn: bool) -> str:
    if first_turn:
        return "```repl\nn = len(context)\nprint(n)\n```"
    return "```repl\nFINAL(n)\n```"


def core_reply(messages: list[dict[str, str]]) -> str:
    return reply_text(messages[-1]["content"], first_turn=len(messages) <= 2)


def chat_reply(messages: list[Any]) -> str:
    return reply_text(str(messages[-1].text), first_turn=len(messages) <= 2)


def inputs() -> list[dict[str, Any]]:
    return [{"query": "How long is the context?", "context": "x" * (1000 + i)} for i in range(RUNS)]


def conversations() -> list[list[Any]]:
    from langchain_core.messages import HumanMessage

    return [[HumanMessage(item["query"]), HumanMessage(item["context"])] for item in inputs()]


async def run_core(concurrency: int) -> list[Any]:
    from rlm_integrations import RLM
    from rlm_integrations.lm import ScriptedLM

    rlm = RLM(ScriptedLM(core_reply, latency_s=LATENCY_S))
    slots = asyncio.Semaphore(concurrency)

    async def one(item: dict[str, Any]) -> Any:
        async with slots:
            return (await rlm.acompletion(item["query"], item["context"])).answer

    return list(await asyncio.gather(*(one(item) for item in inputs())))


async def run_langchain(concurrency: int, *, traced: bool = False) -> list[Any]:
    from langchain_core.tracers.base import BaseTracer

    from rlm_integrations.langchain import RLMRunnable, ScriptedChatModel

    class InMemoryTracer(BaseTracer):
        run_inline = True  # as LangSmith's LangChainTracer: called on the loop, not via a thread pool

        def __init__(self) -> None:
            super().__init__()
            self.roots: list[Any] = []

        def _persist_run(self, run: Any) -> None:
            self.roots.append(run)

    rlm = RLMRunnable(model=ScriptedChatModel(replies=chat_reply, latency_s=LATENCY_S))
    config: dict[str, Any] = {"max_concurrency": concurrency}
    tracer = InMemoryTracer() if traced else None
    if tracer is not None:
        config["callbacks"] = [tracer]
    outputs = await rlm.abatch(inputs(), config)  # type: ignore[arg-type]
    if tracer is not None:
        assert len(tracer.roots) == RUNS
    return [out.answer for out in outputs]


async def run_chat_model(concurrency: int) -> list[Any]:
    from rlm_integrations.langchain import RLMChatModel, ScriptedChatModel

    chat = RLMChatModel(model=ScriptedChatModel(replies=chat_reply, latency_s=LATENCY_S), context_threshold_chars=500)
    replies = await chat.abatch(conversations(), {"max_concurrency": concurrency})  # type: ignore[arg-type]
    return [int(str(reply.content)) for reply in replies]


async def measure(make: Callable[[], Awaitable[list[Any]]]) -> tuple[float, float]:
    """Wall time and host CPU time (this process, all its threads; not the REPL workers) of one batch."""
    expected = [1000 + i for i in range(RUNS)]
    began, cpu = time.perf_counter(), time.process_time()
    answers = await make()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert answers == expected, answers
    return wall, cpu


async def main_async(reps: int) -> dict[str, Any]:
    from rlm_integrations.repl import prewarm

    prewarm(1)
    await run_core(RUNS)  # warm-up: imports, first workers
    await run_langchain(RUNS)
    await run_chat_model(RUNS)
    results: dict[str, Any] = {}
    for concurrency in (4, 16):
        ideal = math.ceil(RUNS / concurrency) * TURNS * LATENCY_S
        contenders: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "core": lambda c=concurrency: run_core(c),
            "langchain": lambda c=concurrency: run_langchain(c),
            "langchain + tracer": lambda c=concurrency: run_langchain(c, traced=True),
            "chat model": lambda c=concurrency: run_chat_model(c),
        }
        walls: dict[str, list[float]] = {name: [] for name in contenders}
        cpus: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(reps):  # interleaved, so every contender sees the same machine noise
            for name, make in contenders.items():
                wall, cpu = await measure(make)
                walls[name].append(wall)
                cpus[name].append(cpu)
        results[str(concurrency)] = {
            "ideal_s": ideal,
            "timings": {name: Timing.of(samples).to_dict() for name, samples in walls.items()},
            "host_cpu": {name: Timing.of(samples).to_dict() for name, samples in cpus.items()},
        }
    return results


def report(results: dict[str, Any], plain: bool) -> bool:
    rows: list[list[str]] = []
    passed = True
    for concurrency, data in results.items():
        ideal = data["ideal_s"]
        core = data["timings"]["core"]["median"]
        core_cpu = data["host_cpu"]["core"]["median"]
        runnable = data["timings"]["langchain"]["median"]
        for name, timing in data["timings"].items():
            wall = timing["median"]
            cpu = data["host_cpu"][name]["median"]
            overhead = (wall - core) / core
            verdict = ""
            if name == "chat model":
                ok = (wall - runnable) / runnable < TARGET_CHAT_OVERHEAD
                passed = passed and ok
                verdict = (
                    f"{'PASS' if ok else 'FAIL'} ({(wall - runnable) / runnable:+.1%} vs langchain,"
                    f" < {TARGET_CHAT_OVERHEAD:.0%})"
                )
            elif name != "core":
                ok = overhead < TARGET_OVERHEAD
                passed = passed and (ok or name != "langchain")
                verdict = f"{'PASS' if ok else 'FAIL'} (< {TARGET_OVERHEAD:.0%})"
            rows.append(
                [
                    f"c={concurrency}: {name}",
                    fmt_seconds(wall),
                    f"{fmt_seconds(timing['minimum'])} – {fmt_seconds(timing['maximum'])}",
                    fmt_seconds(ideal),
                    f"{ideal / wall:.0%}",
                    "—" if name == "core" else f"{overhead:+.1%}",
                    "—" if name == "core" else f"{(wall - core) / RUNS * 1e3:+.1f} ms",
                    f"{cpu / RUNS * 1e3:.2f} ms"
                    + ("" if name == "core" else f" ({(cpu - core_cpu) / RUNS * 1e3:+.2f})"),
                    verdict,
                ]
            )
    info = machine_info(["langchain-core", "langgraph"])
    notes = [
        f"{RUNS} runs × {TURNS} root turns, fake model latency {LATENCY_S * 1e3:.0f} ms; "
        f"ideal = ceil({RUNS}/c) × {TURNS} × {LATENCY_S:g} s; efficiency = ideal ÷ wall; "
        "overhead = (wall − core wall) ÷ core wall, medians. Host CPU: this process only (the REPL workers "
        "are separate processes), in brackets the difference to the core: the LangChain layer's own cost.",
        f"machine: {info['cpu']}, {info['usable_cpus']} usable CPUs, Python {info['python']}, "
        f"langchain-core {info['packages']['langchain-core']}, langgraph {info['packages']['langgraph']}",
    ]
    print_table(
        "RLMRunnable.abatch vs the core",
        [
            "contender",
            "wall (median)",
            "range",
            "ideal",
            "efficiency",
            "overhead vs core",
            "wall per run",
            "host CPU per run",
            "target",
        ],
        rows,
        notes,
        plain=plain,
    )
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per contender")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--plain", action="store_true", help="plain-text table instead of rich")
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    results = asyncio.run(main_async(reps))
    passed = report(results, args.plain)
    if args.json:
        write_json(args.json, {"results": results, "machine": machine_info(["langchain-core", "langgraph"])})
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
