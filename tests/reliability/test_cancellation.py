"""Issue 12, item 7 (part): a cancelled run still gives the caller its partial result, every step closed."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest
from wire_helpers import LITELLM_NOISE, ROOT, SUB, Wire, assert_every_start_closed, block, config, is_closing, lite

from rlm_integrations import RLM
from rlm_integrations.core.events import CellFinished, SubCallFinished
from rlm_integrations.errors import RunCancelled, RunInterrupted
from rlm_integrations.testing import FakeOpenAIServer, Fault

pytestmark = LITELLM_NOISE


def hang_in_a_sub_call(body: dict[str, Any]) -> str | Fault:
    if is_closing(body):
        return "FINAL('closing')"
    if body["model"] == SUB:
        return Fault.slow(120.0)
    return block("print(llm_query('this one hangs'))")


async def wait_for_requests(server: FakeOpenAIServer, count: int) -> None:
    for _ in range(2_000):
        if len(server.requests) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(server.requests)} requests arrived")


async def test_a_cancelled_acompletion_raises_run_cancelled_with_the_partial_result() -> None:
    async with FakeOpenAIServer(Wire(hang_in_a_sub_call)) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), config=config())
        task = asyncio.create_task(rlm.acompletion("q", "ctx"))
        await wait_for_requests(server, 2)  # the root's turn, then the hanging sub-call
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    assert task.cancelled()
    assert isinstance(caught.value, RunCancelled)
    result = caught.value.result
    assert result.status == "cancelled"
    assert result.iterations == 1
    assert result.usage.calls == 1  # the root turn; the cut sub-call spent nothing it could report
    assert_every_start_closed(result.trajectory)
    (cell,) = [e for e in result.trajectory.events if isinstance(e, CellFinished)]
    (sub,) = [e for e in result.trajectory.events if isinstance(e, SubCallFinished)]
    assert cell.interrupted and sub.interrupted and "cancelled" in (sub.error or "")
    assert result.trajectory.runs()[0].end is not None
    assert result.trajectory.runs()[0].end.status == "cancelled"


def test_ctrl_c_in_a_sync_completion_raises_run_interrupted_with_the_partial_result() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches only the main thread")
    with FakeOpenAIServer(Wire(hang_in_a_sub_call)) as server:
        rlm = RLM(lite(server, ROOT), lite(server, SUB), config=config())

        def interrupt_when_hanging() -> None:
            deadline = time.monotonic() + 30
            while len(server.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt_when_hanging, daemon=True).start()
        with pytest.raises(KeyboardInterrupt) as caught:
            rlm.completion("q", "ctx")
    assert isinstance(caught.value, RunInterrupted)
    result = caught.value.result
    assert result.status == "cancelled" and result.iterations == 1
    assert_every_start_closed(result.trajectory)
