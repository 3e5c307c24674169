"""Scaling out on the stand-in: many RLM runs from one host, a limit on sandboxes in flight, safe reuse."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from engine_helpers import block, question_of, turn_of

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend


@pytest.fixture
def backend():
    instance = StandInBackend()
    yield instance
    for sandbox in instance.created:
        sandbox.terminate()


def factory(backend: StandInBackend, pool: SandboxPool, **options):
    def make(config: RLMConfig) -> ModalREPL:
        return ModalREPL(
            backend=backend,
            pool=pool,
            cell_timeout_s=config.cell_timeout_s,
            max_output_chars=config.max_output_chars,
            **options,
        )

    return make


async def wait_until(predicate, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


class Peak:
    """Watches a pool and remembers how many sandboxes were alive at once."""

    def __init__(self, backend: StandInBackend) -> None:
        self.backend = backend
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(self.backend.running))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def test_concurrent_runs_respect_the_limit(backend) -> None:
    pool = SandboxPool(max_sandboxes=3)

    def reply(messages):
        if turn_of(messages) == 0:
            return block("n = len(context)\nanswer = llm_query('size ' + str(n))")
        return block(f"FINAL(answer + ' / {question_of(messages)}')")

    rlm = RLM(
        ScriptedLM(reply, name="root"),
        ScriptedLM(lambda m: m[-1]["content"].upper(), name="sub"),
        repl=factory(backend, pool),
        config=RLMConfig(cell_timeout_s=20),
    )
    peak = Peak(backend)
    results = await asyncio.gather(*(rlm.acompletion(f"run {i}?", context="x" * (i + 1)) for i in range(8)))
    assert peak.stop() <= 3
    assert pool.peak_live <= 3
    for i, result in enumerate(results):
        assert result.status == "completed", result.error
        assert result.answer == f"SIZE {i + 1} / run {i}?"
    assert pool.created == 8 and pool.reused == 0
    assert await wait_until(lambda: backend.running == [] and pool.live == 0)


async def test_reuse_gives_a_fresh_namespace(backend) -> None:
    pool = SandboxPool(max_sandboxes=2, keep_idle=1)
    try:
        async with ModalREPL(backend=backend, pool=pool) as first:
            await first.load("context", "secret")
            assert (await first.execute("leftover = 'from run 1'")).ok
            sandbox, worker = first.sandbox_id, first.info["pid"]
        assert pool.idle == 1 and backend.running[0].id == sandbox
        async with ModalREPL(backend=backend, pool=pool) as second:
            assert second.sandbox_id == sandbox
            assert second.info["pid"] != worker
            assert (await second.execute("leftover")).error_type == "NameError"
            assert (await second.execute("context")).error_type == "NameError"
            assert await second.variables() == []
        assert pool.created == 1 and pool.reused == 1
    finally:
        pool.close()
    assert await wait_until(lambda: backend.running == [] and pool.live == 0)


async def test_unrestricted_and_different_sandboxes_are_not_reused(backend) -> None:
    pool = SandboxPool(max_sandboxes=2, keep_idle=2)
    try:
        async with ModalREPL(backend=backend, pool=pool, policy="unrestricted") as repl:
            assert (await repl.execute("1")).ok
        assert pool.idle == 0 and await wait_until(lambda: backend.running == [])
        async with ModalREPL(backend=backend, pool=pool, cpu=2.0) as repl:
            assert (await repl.execute("1")).ok
        assert pool.idle == 1
        async with ModalREPL(backend=backend, pool=pool, cpu=1.0) as repl:  # another spec: a new sandbox
            assert (await repl.execute("1")).ok
            assert pool.idle == 1
        assert pool.created == 3 and pool.reused == 0
        # Full (two live, both idle): a third spec evicts an idle sandbox instead of waiting.
        async with ModalREPL(backend=backend, pool=pool, cpu=0.5) as repl:
            assert (await repl.execute("1")).ok
            assert pool.live == 2
    finally:
        pool.close()
    assert await wait_until(lambda: backend.running == [] and pool.live == 0)


async def test_a_dead_parked_sandbox_is_not_reused(backend) -> None:
    pool = SandboxPool(max_sandboxes=2, keep_idle=1)
    try:
        async with ModalREPL(backend=backend, pool=pool) as repl:
            assert (await repl.execute("1")).ok
        backend.created[0].terminate()
        async with ModalREPL(backend=backend, pool=pool) as repl:
            assert (await repl.execute("1")).ok
            assert repl.sandbox_id == backend.created[1].id
        assert pool.reused == 0
    finally:
        pool.close()
    assert await wait_until(lambda: pool.live == 0)


async def test_child_runs_do_not_deadlock_a_full_pool(backend) -> None:
    pool = SandboxPool(max_sandboxes=1)

    def reply(messages):
        if question_of(messages) == "child question":
            return block("FINAL('from child ' + context)")
        if turn_of(messages) == 0:
            return block("r = rlm_query('child question', context='c1')")
        return block("FINAL(r)")

    rlm = RLM(ScriptedLM(reply), repl=factory(backend, pool), config=RLMConfig(cell_timeout_s=20, max_depth=1))
    result = await asyncio.wait_for(rlm.acompletion("parent?", context="p"), 30)
    assert result.status == "completed", result.error
    assert result.answer == "from child c1"
    assert len(backend.created) == 2
    assert await wait_until(lambda: backend.running == [] and pool.live == 0)


def test_threads_with_their_own_event_loops_share_one_limit(backend) -> None:
    """The `dspy.Evaluate` shape: threads, each calling the blocking API (a fresh loop per call)."""
    pool = SandboxPool(max_sandboxes=2)
    rlm = RLM(
        ScriptedLM(lambda m: block("FINAL(len(context))")),
        repl=factory(backend, pool),
        config=RLMConfig(cell_timeout_s=20),
    )
    answers: dict[int, object] = {}

    def work(i: int) -> None:
        answers[i] = rlm.completion("how long?", context="y" * i).answer

    peak = Peak(backend)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert peak.stop() <= 2
    assert answers == {i: i for i in range(6)}
    deadline = time.monotonic() + 5
    while (backend.running or pool.live) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.running == [] and pool.live == 0


async def test_a_cancelled_waiter_gives_up_its_place(backend) -> None:
    pool = SandboxPool(max_sandboxes=1)
    async with ModalREPL(backend=backend, pool=pool) as holder:
        assert (await holder.execute("1")).ok
        waiting = asyncio.ensure_future(ModalREPL(backend=backend, pool=pool).start())
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert len(backend.created) == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    async with ModalREPL(backend=backend, pool=pool) as later:
        assert (await later.execute("2")).value == "2"
    assert await wait_until(lambda: backend.running == [] and pool.live == 0)
