"""Issue 12, item 3: `timeout_s` is a wall, closing request included, against a model that hangs on the wire."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from wire_helpers import LITELLM_NOISE, ROOT, SUB, Wire, assert_every_start_closed, block, config, is_closing, lite

from rlm_integrations import RLM
from rlm_integrations.core.events import LMCallFinished
from rlm_integrations.core.limits import closing_slice_s
from rlm_integrations.testing import FakeOpenAIServer, FakeREPL, Fault

pytestmark = LITELLM_NOISE

HANG = Fault.slow(120.0)


async def test_a_hanging_model_ends_at_the_wall_with_status_timeout() -> None:
    def reply(body: dict[str, Any]) -> str | Fault:
        return HANG  # every request hangs, the closing request too

    async with FakeOpenAIServer(Wire(reply)) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), repl=FakeREPL.from_config, config=config(timeout_s=4))
        started = time.monotonic()
        result = await asyncio.wait_for(rlm.acompletion("q", "ctx"), timeout=60)
        elapsed = time.monotonic() - started
    assert result.status == "timeout" and result.limit == "timeout_s"
    assert elapsed <= 4.5  # the old engine gave the closing request up to 60 s more (9 s here)
    assert result.answer is None
    assert len(server.requests) == 2  # the cut turn, then the closing request in its slice
    assert_every_start_closed(result.trajectory)
    cut = [e for e in result.trajectory.events if isinstance(e, LMCallFinished) and e.interrupted]
    assert len(cut) == 2


async def test_the_closing_request_gets_its_slice_and_its_answer_is_kept() -> None:
    def reply(body: dict[str, Any]) -> str | Fault:
        if is_closing(body):
            return "FINAL('the best it had')"
        if body["model"] == SUB:
            return HANG  # the turn's sub-call hangs past the step deadline
        return block("print(llm_query('slow'))")

    async with FakeOpenAIServer(Wire(reply)) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), repl=FakeREPL.from_config, config=config(timeout_s=2))
        started = time.monotonic()
        result = await asyncio.wait_for(rlm.acompletion("q", "ctx"), timeout=60)
        elapsed = time.monotonic() - started
    assert (result.status, result.answer) == ("timeout", "the best it had")
    step_deadline = 2 - closing_slice_s(2)
    assert step_deadline - 0.1 <= elapsed <= 2.3
    assert_every_start_closed(result.trajectory)
    kinds = [(e.kind, getattr(e, "interrupted", False)) for e in result.trajectory.events]
    assert ("sub_call_end", True) in kinds and ("cell_end", True) in kinds and ("iteration_end", True) in kinds


def test_the_closing_slice_is_a_fifth_of_the_timeout_at_most_30_s() -> None:
    assert closing_slice_s(4) == pytest.approx(0.8)
    assert closing_slice_s(1_000) == 30.0
