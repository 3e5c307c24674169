"""What `OpenTelemetryObserver` costs per iteration: the same runs with the observer off and on.

Each run takes `TURNS` root turns (a cell that measures the context, then `FINAL` on the
last turn) against a scripted model with no latency, with real worker REPLs, so a turn
is as short as it gets and the observer's share is the largest it can be. With a real
model (hundreds of milliseconds a call) the share is far smaller.

- off: `RLM(...)` with no observer;
- on: the same with `OpenTelemetryObserver` on a private `TracerProvider` whose
  `BatchSpanProcessor` feeds an in-memory exporter (the production shape: the observer
  only starts and ends spans; the processor's thread exports).

Also measured: the observer alone, replaying one run's recorded events (microseconds per event).
Target: under 5 % per iteration (medians, interleaved repetitions).

    python benchmarks/otel_overhead.py            # 7 repetitions
    python benchmarks/otel_overhead.py --quick    # 3 repetitions
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from _common import fmt_seconds, machine_info, print_table, write_json

RUNS = 8
TURNS = 5
TARGET_OVERHEAD = 0.05


def reply(messages: list[dict[str, str]]) -> str:
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if turn >= TURNS - 1:
        return "```repl\nFINAL(len(context))\n```"
    return f"```repl\nn{turn} = len(context)\nprint(n{turn})\n```"


def make_observer() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rlm_integrations.otel import OpenTelemetryObserver

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return OpenTelemetryObserver(provider), (provider, exporter)


async def batch(observers: list[Any]) -> tuple[float, list[Any]]:
    """Wall seconds per iteration of `RUNS` sequential runs, and the results."""
    from rlm_integrations import RLM
    from rlm_integrations.lm import ScriptedLM

    rlm = RLM(ScriptedLM(reply), observers=observers)
    results = []
    began = time.perf_counter()
    for i in range(RUNS):
        results.append(await rlm.acompletion("How long is the context?", "x" * (100 + i)))
    wall = time.perf_counter() - began
    assert [r.answer for r in results] == [100 + i for i in range(RUNS)], [r.answer for r in results]
    assert all(r.iterations == TURNS for r in results)
    return wall / (RUNS * TURNS), results


def replay_cost(events: list[Any], reps: int = 200) -> float:
    """Seconds per event for the observer alone, replaying one run's events into a fresh observer."""
    samples = []
    for _ in range(reps):
        observer, (provider, _) = make_observer()
        began = time.perf_counter()
        for event in events:
            observer(event)
        samples.append((time.perf_counter() - began) / len(events))
        provider.shutdown()
    return statistics.median(samples)


async def main_async(reps: int) -> dict[str, Any]:
    from rlm_integrations.repl import prewarm

    prewarm(1)
    await batch([])  # warm-up: imports, first workers
    observer, (provider, exporter) = make_observer()
    await batch([observer])
    off: list[float] = []
    on: list[float] = []
    for _ in range(reps):  # interleaved, so both see the same machine noise
        off.append((await batch([]))[0])
        per_iteration, results = await batch([observer])
        on.append(per_iteration)
    provider.force_flush()
    spans_per_run = len(exporter.get_finished_spans()) / ((reps + 1) * RUNS)
    events = list(results[0].trajectory.events)
    return {
        "off_s": statistics.median(off),
        "on_s": statistics.median(on),
        "off_range": [min(off), max(off)],
        "on_range": [min(on), max(on)],
        "spans_per_run": spans_per_run,
        "events_per_run": len(events),
        "observer_s_per_event": replay_cost(events),
    }


def report(data: dict[str, Any], plain: bool) -> bool:
    overhead = (data["on_s"] - data["off_s"]) / data["off_s"]
    passed = overhead < TARGET_OVERHEAD
    rows = [
        ["observer off", fmt_seconds(data["off_s"]), " – ".join(fmt_seconds(x) for x in data["off_range"]), "—", ""],
        [
            "observer on (BatchSpanProcessor)",
            fmt_seconds(data["on_s"]),
            " – ".join(fmt_seconds(x) for x in data["on_range"]),
            f"{overhead:+.1%}",
            f"{'PASS' if passed else 'FAIL'} (< {TARGET_OVERHEAD:.0%})",
        ],
    ]
    info = machine_info(["opentelemetry-sdk"])
    notes = [
        f"{RUNS} sequential runs × {TURNS} root turns, scripted model with no latency, real worker REPLs; "
        "wall per iteration, medians of interleaved repetitions.",
        f"{data['spans_per_run']:.0f} spans and {data['events_per_run']} events per run; the observer alone "
        f"(replaying a run's events): {data['observer_s_per_event'] * 1e6:.1f} µs per event.",
        f"machine: {info['cpu']}, {info['usable_cpus']} usable CPUs, Python {info['python']}, "
        f"opentelemetry-sdk {info['packages']['opentelemetry-sdk']}",
    ]
    print_table(
        "OpenTelemetryObserver overhead per iteration",
        ["contender", "wall per iteration", "range", "overhead", "target"],
        rows,
        notes,
        plain=plain,
    )
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per contender")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--plain", action="store_true", help="plain-text table")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    data = asyncio.run(main_async(reps))
    if args.json:
        write_json(args.json, {"otel_overhead": data})
    return 0 if report(data, args.plain) else 1


if __name__ == "__main__":
    raise SystemExit(main())
