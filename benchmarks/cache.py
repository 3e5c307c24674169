"""The call cache: a first run against a slow model server vs its cached reruns.

A real `LiteLLMModel` talks to `FakeOpenAIServer` (on this process's loopback, its own
thread) that waits `--delay` seconds (200 ms by default) before each reply. The root
model writes four turns that each make four sequential `llm_query` calls, then answers:
21 model calls. The same run is then repeated with the cache on: in memory (the same
`RLM`) and on disk (a new `RLM` object over the same directory). Reported: wall time,
requests the server received, and what usage says was spent and replayed.

    .venv/bin/python benchmarks/cache.py [--delay 0.2] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.lm import LiteLLMModel
from rlm_integrations.testing import FakeOpenAIServer

TURNS = 4
CALLS_PER_TURN = 4


def reply(body: dict[str, Any]) -> str:
    """The root script by turn (assistant messages so far); the sub-model echoes its prompt."""
    messages = body["messages"]
    if body["model"] == "sub":
        return f"note on {messages[-1]['content']}"
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if turn < TURNS:
        return (
            "```repl\n"
            f"notes = [llm_query('part {turn}-' + str(i)) for i in range({CALLS_PER_TURN})]\n"
            "print(len(notes))\n```"
        )
    return "```repl\nFINAL('done')\n```"


async def timed(rlm: RLM) -> tuple[float, RLMResult]:
    began = time.perf_counter()
    result = await rlm.acompletion("Summarise the parts.", "some context")
    return time.perf_counter() - began, result


async def main(delay: float, repeats: int) -> None:
    rows: list[tuple[str, float, int, int, int]] = []
    async with FakeOpenAIServer(reply, latency_s=delay) as server:
        options: dict[str, Any] = {"api_base": server.api_base, "api_key": "sk-bench", "timeout_s": 30.0}

        def rlm(cache: str) -> RLM:
            models = LiteLLMModel("openai/root", **options), LiteLLMModel("openai/sub", **options)
            return RLM(*models, config=RLMConfig(cache=cache, max_iterations=TURNS + 2))

        with tempfile.TemporaryDirectory() as directory:
            for label, cache in (("memory", "memory"), ("disk", directory)):
                first = rlm(cache)
                sent = len(server.requests)
                seconds, result = await timed(first)
                assert result.answer == "done", result
                rows.append((f"{label}: first run", seconds, len(server.requests) - sent, result.usage.calls, 0))
                reruns = []
                for _ in range(repeats):
                    again = first if cache == "memory" else rlm(cache)  # disk: a new RLM over the same directory
                    sent = len(server.requests)
                    seconds, result = await timed(again)
                    assert result.answer == "done" and len(server.requests) == sent, result
                    reruns.append(seconds)
                rows.append(
                    (
                        f"{label}: rerun (median of {repeats})",
                        statistics.median(reruns),
                        0,
                        0,
                        result.usage.cached_calls,
                    )
                )
    print(f"model delay {delay * 1000:.0f} ms, {TURNS + 1} root turns + {TURNS * CALLS_PER_TURN} sub-calls")
    print(f"{'run':<28}{'seconds':>10}{'requests':>10}{'calls':>8}{'cached':>8}")
    for name, seconds, requests, calls, cached in rows:
        print(f"{name:<28}{seconds:>10.3f}{requests:>10}{calls:>8}{cached:>8}")
    for index in (0, 2):
        print(f"{rows[index][0].split(':')[0]} speed-up: {rows[index][1] / rows[index + 1][1]:.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the server waits per reply")
    parser.add_argument("--repeats", type=int, default=3, help="cached reruns to time")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.delay, arguments.repeats))
