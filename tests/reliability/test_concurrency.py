"""Issue 12, item 4 (and issue 11): one tree-wide bound on model calls in flight, child runs and live REPL workers."""

from __future__ import annotations

import asyncio
from typing import Any

from wire_helpers import (
    LITELLM_NOISE,
    ROOT,
    SUB,
    Wire,
    WorkerCounter,
    block,
    config,
    is_closing,
    lite,
    question_of,
    unpooled_repl,
)

from rlm_integrations import RLM
from rlm_integrations.testing import FakeOpenAIServer

pytestmark = LITELLM_NOISE


def tree_replies(parent_code: str, child_code: str, grandchild_code: str = "FINAL('leaf')") -> Any:
    def reply(body: dict[str, Any]) -> str:
        if is_closing(body):
            return "FINAL('closing')"
        if body["model"] == SUB:
            return "sub reply"
        question = question_of(body)
        if question == "Parent?":
            return block(parent_code)
        if question.startswith("Child"):
            return block(child_code)
        return block(grandchild_code)

    return reply


async def test_rlm_query_batched_honours_sub_concurrency_for_model_calls() -> None:
    wire = Wire(
        tree_replies("FINAL(rlm_query_batched(['Child ' + str(i) + '?' for i in range(12)]))", "FINAL('c')"),
        latency_s=0.05,
    )
    async with FakeOpenAIServer(wire) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), config=config(sub_concurrency=2))
        result = await asyncio.wait_for(rlm.acompletion("Parent?", "ctx"), timeout=120)
    assert result.status == "completed", result.error
    assert result.answer == ["c"] * 12
    assert wire.count == 13
    assert wire.peak == 2  # concurrent, but never more (the old engine had all 12 children call at once)


async def test_child_runs_and_their_workers_are_bounded_tree_wide() -> None:
    wire = Wire(
        tree_replies("FINAL(rlm_query_batched(['Child ' + str(i) + '?' for i in range(6)]))", "FINAL('c')"),
        latency_s=0.1,
    )
    async with FakeOpenAIServer(wire) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), repl=unpooled_repl, config=config(sub_concurrency=2))
        with WorkerCounter() as workers:
            result = await asyncio.wait_for(rlm.acompletion("Parent?", "ctx"), timeout=120)
    assert result.status == "completed", result.error
    assert 2 <= workers.peak <= 2 + 1  # the cap, plus the top-level run's own worker (the old engine: 7)


async def test_nested_children_share_the_bound_and_do_not_deadlock() -> None:
    wire = Wire(
        tree_replies(
            "FINAL(rlm_query_batched(['Child ' + str(i) + '?' for i in range(4)]))",
            "FINAL(str(rlm_query_batched(['Grandchild?'] * 3)) + str(llm_query_batched(['s'] * 4)))",
        ),
        latency_s=0.05,
    )
    async with FakeOpenAIServer(wire) as server:
        rlm = RLM(
            lite(server, ROOT),
            lite(server, SUB),
            repl=unpooled_repl,
            config=config(sub_concurrency=3, max_depth=2),
        )
        with WorkerCounter() as workers:
            result = await asyncio.wait_for(rlm.acompletion("Parent?", "ctx"), timeout=120)
    assert result.status == "completed", result.error
    assert len(result.answer) == 4
    assert all(answer.startswith("['leaf', 'leaf', 'leaf']") for answer in result.answer)
    assert wire.peak <= 3
    assert workers.peak <= 3 + 1


async def test_llm_query_batched_from_many_children_stays_under_the_cap() -> None:
    wire = Wire(
        tree_replies(
            "FINAL(rlm_query_batched(['Child ' + str(i) + '?' for i in range(5)]))",
            "FINAL(len(llm_query_batched(['s'] * 10)))",
        ),
        latency_s=0.03,
    )
    async with FakeOpenAIServer(wire) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), config=config(sub_concurrency=4))
        result = await asyncio.wait_for(rlm.acompletion("Parent?", "ctx"), timeout=120)
    assert result.status == "completed", result.error
    assert result.answer == ["10"] * 5
    assert wire.peak == 4


async def test_worker_slots_keep_room_for_deeper_children() -> None:
    from rlm_integrations.core.limits import WorkerSlots

    slots = WorkerSlots(size=2, max_depth=2)
    await slots.acquire(1)  # a depth-1 child
    second = asyncio.create_task(slots.acquire(1))
    await asyncio.sleep(0.01)
    assert not second.done()  # the last slot is kept for a depth-2 child
    await asyncio.wait_for(slots.acquire(2), 1)  # ...which gets it at once
    slots.release()
    slots.release()
    await asyncio.wait_for(second, 1)
    assert slots.held == 1 and slots.peak == 2
    assert WorkerSlots(size=1, max_depth=3).size == 3  # never fewer slots than levels
