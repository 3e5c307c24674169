"""Sessions: a follow-up question in a session vs a fresh run, and checkpoint/resume overhead.

Part 1. A real `LiteLLMModel` talks to `FakeOpenAIServer` (loopback, `--delay` seconds per
reply). The scripted root model answers a question about the context by first building an
index: one `llm_query` per chunk of the context (`--chunks` sub-calls), then looking the
answer up. If its first message says an earlier question in the session created `index`,
it looks the answer up at once. Measured: the follow-up asked in a session (after a first
ask built the index) vs the same question as a fresh `completion` on the same context:
wall time, model calls and tokens.

Part 2. A session over a `--mb` MB context with a few plain variables: the time to save the
checkpoint, its size, the time to load it (read and sha256 check), and the first ask after
loading (new REPL: context and variables loaded back) vs the first ask of a fresh session.

    .venv/bin/python benchmarks/session.py [--delay 0.1] [--chunks 16] [--mb 100]
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

from rlm_integrations import RLM, RLMResult, RLMSession
from rlm_integrations.lm import LiteLLMModel, ScriptedLM
from rlm_integrations.testing import FakeOpenAIServer

BUILD = (
    "```repl\n"
    "size = len(context) // {chunks} + 1\n"
    "parts = [context[i:i + size] for i in range(0, len(context), size)]\n"
    "notes = llm_query_batched(['List the topics in: ' + p for p in parts])\n"
    "index = {{n.split()[-1]: i for i, n in enumerate(notes)}}\n"
    "print(len(index))\n```"
)
ANSWER = "```repl\nFINAL(index.get('topic-7'))\n```"


def reply(chunks: int) -> Any:
    def answer(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if body["model"] == "sub":
            text = messages[-1]["content"]
            return f"topics: topic-{text.count('x') % 97}"  # a deterministic "summary" of the chunk
        first = next(m["content"] for m in messages if m["role"] == "user")
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if "variables it created:" in first and "index" in first.split("variables it created:", 1)[1]:
            return ANSWER  # an earlier ask built the index: reuse it
        return BUILD.format(chunks=chunks) if turns == 0 else ANSWER

    return answer


def context_text(chars: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "x", "xx", "epsilon", "zeta"]
    return " ".join(words[(i * 7919) % len(words)] for i in range(chars // 3))[:chars]


def row(label: str, seconds: float, result: RLMResult) -> tuple[str, float, int, int]:
    return label, seconds, result.usage.calls, result.usage.total_tokens


async def follow_up(delay: float, chunks: int) -> None:
    context = context_text(400_000)
    async with FakeOpenAIServer(reply(chunks), latency_s=delay) as server:
        options: dict[str, Any] = {"api_base": server.api_base, "api_key": "sk-bench", "timeout_s": 60.0}
        rlm = RLM(LiteLLMModel("openai/root", **options), LiteLLMModel("openai/sub", **options))
        question = "Which chunk talks about topic-7?"
        async with rlm.session(context) as session:  # first, so it also pays the client's warm-up
            await session.aask("Build an index of the topics in each chunk.")
            began = time.perf_counter()
            follow = await session.aask(question)
            follow_s = time.perf_counter() - began
        began = time.perf_counter()
        fresh = await rlm.acompletion(question, context)
        fresh_s = time.perf_counter() - began
    assert follow.answer == fresh.answer, (follow.answer, fresh.answer)
    rows = [row("fresh run", fresh_s, fresh), row("session follow-up", follow_s, follow)]
    print(f"\nFollow-up vs fresh run ({chunks} chunks, {delay * 1000:.0f} ms per model reply, 400,000 chars)")
    print(f"{'':20} {'time s':>8} {'calls':>6} {'tokens':>9}")
    for label, seconds, calls, tokens in rows:
        print(f"{label:20} {seconds:8.3f} {calls:6d} {tokens:9,d}")
    print(
        f"follow-up is {fresh_s / follow_s:.1f}x faster, {fresh.usage.total_tokens / follow.usage.total_tokens:.1f}x "
        f"fewer tokens, {fresh.usage.calls / follow.usage.calls:.1f}x fewer calls"
    )


async def resume(megabytes: int) -> None:
    context = context_text(megabytes * 1_000_000)
    make = "```repl\nwords = context[:100000].split()\ncounts = {w: words.count(w) for w in set(words)}\nFINAL(1)\n```"
    use = "```repl\nFINAL(len(context))\n```"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "session.rlm"
        async with RLM(ScriptedLM([make, use])).session(context) as session:
            began = time.perf_counter()
            await session.aask("Count the words.")
            fresh_first = time.perf_counter() - began
            began = time.perf_counter()
            await session.asave(path)
            save_s = time.perf_counter() - began
        size = path.stat().st_size
        began = time.perf_counter()
        loaded = await asyncio.to_thread(RLMSession.load, path, RLM(ScriptedLM(["```repl\nFINAL(len(counts))\n```"])))
        load_s = time.perf_counter() - began
        async with loaded:
            began = time.perf_counter()
            result = await loaded.aask("How many distinct words?")
            resumed_first = time.perf_counter() - began
        assert result.ok, result.error
    print(f"\nCheckpoint of a {megabytes} MB context (plus a dict of word counts)")
    print(f"save                       {save_s:8.3f} s   file {size / 1e6:,.1f} MB")
    print(f"load (read, sha256 check)  {load_s:8.3f} s")
    print(f"first ask, fresh session   {fresh_first:8.3f} s   (starts the REPL, loads the context)")
    print(f"first ask after load       {resumed_first:8.3f} s   (starts the REPL, loads context and variables)")
    print(f"resume overhead (load + first ask - fresh first ask): {load_s + resumed_first - fresh_first:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds per model reply")
    parser.add_argument("--chunks", type=int, default=16, help="sub-calls that build the index")
    parser.add_argument("--mb", type=int, default=100, help="context size for the checkpoint part, in MB")
    args = parser.parse_args()
    asyncio.run(follow_up(args.delay, args.chunks))
    asyncio.run(resume(args.mb))


if __name__ == "__main__":
    main()
