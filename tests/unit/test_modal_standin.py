"""ModalREPL over the stand-in sandbox: the whole protocol path (start, upload, cells, callbacks,
timeouts, crashes, termination) with local subprocesses in place of Modal."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, cast

import pytest

from rlm_integrations.errors import REPLClosedError, WorkerStartError
from rlm_integrations.repl import CellResult
from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend
from rlm_integrations.repl.sandbox.backends import SandboxSpec, stage_worker_tree
from rlm_integrations.repl.sandbox.standin import StandInSandbox


@pytest.fixture
def backend():
    instance = StandInBackend()
    yield instance
    for sandbox in instance.created:
        sandbox.terminate()


@pytest.fixture
def pool():
    instance = SandboxPool(max_sandboxes=8)
    yield instance
    instance.close()


def make(backend: StandInBackend, pool: SandboxPool, **options) -> ModalREPL:
    options.setdefault("cell_timeout_s", 10.0)
    return ModalREPL(backend=backend, pool=pool, **options)


async def run_ok(repl: ModalREPL, code: str) -> CellResult:
    cell = await repl.execute(code)
    assert cell.error is None, f"{code!r} failed: {cell.error}"
    return cell


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def listing(directory: str) -> list[str] | None:
    """The names in a directory, or None if it does not exist."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return None


async def wait_until(predicate, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


# -- start, upload, cells ---------------------------------------------------------------------------


async def test_start_runs_the_worker_in_a_sandbox(backend, pool) -> None:
    async with make(backend, pool) as repl:
        assert repl.sandbox_id == backend.created[0].id
        info = repl.info
        assert info["generation"] == 1
        assert info["worker_version"]
        assert info["pid"] != os.getpid()
        assert (await run_ok(repl, "x = 40\nx + 2")).value == "42"
        assert (await run_ok(repl, "print('hi', x)")).stdout == "hi 40\n"
        assert await repl.get("x") == 40
        assert await repl.variables() == ["x"]
    assert backend.running == []


async def test_cells_keep_the_restricted_policy(backend, pool) -> None:
    async with make(backend, pool) as repl:
        cell = await repl.execute("import os\nos.getcwd()")
        assert cell.error_type == "ImportError"
        cell = await repl.execute("().__class__.__bases__")
        assert not cell.ok


async def test_unrestricted_policy_is_plain_python(backend, pool) -> None:
    async with make(backend, pool, policy="unrestricted") as repl:
        assert (await run_ok(repl, "import os\nos.getpid() > 1")).value == "True"
        assert (await run_ok(repl, "os.environ.get('HOME')")).value is None  # no environment inside


async def test_large_context_arrives_in_chunks(backend, pool) -> None:
    text = ("0123456789abcdef" * 512 + "\n") * 1000  # 8.2 MB: three upload chunks
    async with make(backend, pool) as repl:
        await repl.load("context", text)
        await repl.load("raw", b"\x00\xff" * 10)
        await repl.load("table", {"rows": [1, 2.5, None, "é"], "ok": True})
        await repl.load("empty", "")
        assert (await run_ok(repl, "len(context)")).value == str(len(text))
        assert (await run_ok(repl, "context[-18:]")).value == repr(text[-18:])
        assert (await run_ok(repl, "raw")).value == repr(b"\x00\xff" * 10)
        assert await repl.get("table") == {"rows": [1, 2.5, None, "é"], "ok": True}
        assert (await run_ok(repl, "len(empty)")).value == "0"
        # Uploaded files are removed once the worker has read them.
        assert listing(repl.info["upload_dir"]) == []


async def test_the_sandbox_has_only_the_worker_files(backend, pool) -> None:
    async with make(backend, pool) as repl:
        await run_ok(repl, "x = 1")
    staged = stage_worker_tree() / "rlm_integrations"
    files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*.py"))
    assert "core/rlm.py" not in files and "repl/local.py" not in files and "repl/modal.py" not in files
    assert "repl/worker/main.py" in files and "repl/worker/supervisor.py" in files


async def test_sync_api_across_event_loops(backend, pool) -> None:
    repl = make(backend, pool)

    def work() -> list[str | None]:
        repl.start_sync()
        repl.load_sync("context", "abc")
        values = [repl.execute_sync("len(context)").value, repl.execute_sync("context.upper()").value]
        repl.close_sync()
        return values

    assert await asyncio.to_thread(work) == ["3", "'ABC'"]
    assert backend.running == []


# -- callbacks ---------------------------------------------------------------------------------------


async def test_callbacks_are_answered_on_the_host(backend, pool) -> None:
    seen: list[str] = []

    async def llm_query(prompt: str) -> str:
        seen.append(prompt)
        await asyncio.sleep(0.01)
        return f"answer to {prompt}"

    def failing(x: int) -> int:
        raise ValueError(f"bad {x}")

    async with make(backend, pool) as repl:
        repl.register("llm_query", llm_query)
        repl.register("failing", failing)
        assert (await run_ok(repl, "llm_query('q1')")).value == "'answer to q1'"
        cell = await repl.execute("failing(3)")
        assert cell.error_type == "ValueError" and "bad 3" in (cell.error or "")
        cell = await repl.execute("try:\n    failing(4)\nexcept ValueError as e:\n    r = str(e)\nr")
        assert cell.value == "'failing() failed: bad 4'"
        # registered after the worker started: defined lazily on the next request
        repl.register("shout", lambda s: s.upper())
        assert (await run_ok(repl, "shout('x')")).value == "'X'"
    assert seen == ["q1"]


async def test_time_in_callbacks_does_not_count_against_the_limit(backend, pool) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.4)
        return x

    async with make(backend, pool, cell_timeout_s=0.5) as repl:
        repl.register("slow", slow)
        cell = await run_ok(repl, "total = 0\nfor i in range(3):\n    total += slow(i)\ntotal")
        assert cell.value == "3"


# -- timeouts, crashes, recovery --------------------------------------------------------------------


async def test_timeout_is_enforced_inside_the_sandbox(backend, pool) -> None:
    async with make(backend, pool, cell_timeout_s=0.5) as repl:
        await repl.load("context", "kept")
        await run_ok(repl, "x = 1")
        first_worker = repl.info["pid"]
        started = time.monotonic()
        cell = await repl.execute("while True:\n    pass")
        assert time.monotonic() - started < 5.0
        assert cell.timed_out and cell.restarted and cell.error_type == "TimeoutError"
        assert cell.lost_variables == ["x"]
        assert "reloaded: context" in (cell.error or "")
        # The same sandbox, a fresh worker: the supervisor killed the old one.
        assert len(backend.created) == 1
        assert repl.info["generation"] == 2
        assert await wait_until(lambda: gone(first_worker))
        assert (await run_ok(repl, "context")).value == "'kept'"
        assert (await repl.execute("x")).error_type == "NameError"


async def test_a_hung_supervisor_costs_the_whole_sandbox(backend, pool) -> None:
    async with make(backend, pool, cell_timeout_s=0.5, timeout_grace_s=0.5) as repl:
        await repl.load("context", "kept")
        await run_ok(repl, "x = 1")
        first = backend.created[0]
        worker = repl.info["pid"]
        running = asyncio.ensure_future(repl.execute("while True:\n    pass"))
        await asyncio.sleep(0.1)
        first.freeze()  # the supervisor can no longer kill the cell or answer
        cell = await asyncio.wait_for(running, 10)
        assert cell.timed_out and cell.restarted
        assert await wait_until(lambda: first.poll() is not None)
        assert await wait_until(lambda: gone(worker))
        assert len(backend.created) == 2 and repl.sandbox_id == backend.created[1].id
        assert (await run_ok(repl, "context")).value == "'kept'"
    assert pool.live == 0


async def test_a_worker_crash_restarts_it_in_the_same_sandbox(backend, pool) -> None:
    async with make(backend, pool, policy="unrestricted") as repl:
        await repl.load("context", "kept")
        await run_ok(repl, "y = 2")
        cell = await repl.execute("import os\nos._exit(3)")
        assert cell.restarted and not cell.timed_out and cell.error_type == "WorkerCrashed"
        assert "exited with code 3" in (cell.error or "")
        assert cell.lost_variables == ["y"]
        assert len(backend.created) == 1
        assert (await run_ok(repl, "context")).value == "'kept'"


async def test_a_dead_sandbox_is_replaced_between_cells(backend, pool) -> None:
    async with make(backend, pool) as repl:
        await repl.load("context", "kept")
        backend.created[0].terminate()
        assert await wait_until(lambda: repl.sandbox_id is None or not cast(Any, repl._channel).alive)
        assert (await run_ok(repl, "context")).value == "'kept'"
        assert len(backend.created) == 2
    assert pool.live == 0


async def test_a_sandbox_that_dies_mid_cell_is_replaced(backend, pool) -> None:
    async with make(backend, pool) as repl:
        await repl.load("context", "kept")
        running = asyncio.ensure_future(repl.execute("while True:\n    pass"))
        await asyncio.sleep(0.3)
        backend.created[0].terminate()
        cell = await asyncio.wait_for(running, 10)
        assert cell.restarted and not cell.timed_out and cell.error_type == "WorkerCrashed"
        assert "supervisor stopped" in (cell.error or "") and "code 137" in (cell.error or "")
        assert len(backend.created) == 2
        assert (await run_ok(repl, "context")).value == "'kept'"
    assert pool.live == 0


async def test_a_supervisor_that_cannot_start_is_a_start_error(backend, pool, tmp_path) -> None:
    broken = StandInBackend(python=str(tmp_path / "no-such-python"))
    with pytest.raises(WorkerStartError, match="could not start the supervisor"):
        await make(broken, pool).start()
    assert pool.live == 0
    assert broken.running == []


async def test_a_different_worker_version_is_refused(backend, pool, tmp_path, monkeypatch) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(stage_worker_tree(), tree)
    worker = tree / "rlm_integrations" / "repl" / "worker" / "main.py"
    worker.write_text(worker.read_text() + "\n# another version\n")
    monkeypatch.setattr(StandInSandbox, "__init__", _init_with_root(StandInSandbox.__init__, str(tree)))
    with pytest.raises(WorkerStartError, match="worker version"):
        await make(backend, pool).start()
    assert backend.running == [] and pool.live == 0


def _init_with_root(original: Any, root: str) -> Any:
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.worker_root = root

    return init


# -- termination ----------------------------------------------------------------------------------


async def test_close_terminates_the_sandbox_and_its_processes(backend, pool) -> None:
    repl = make(backend, pool)
    await repl.start()
    worker, supervisor = repl.info["pid"], repl.info["supervisor_pid"]
    root = backend.created[0].root
    await repl.close()
    await repl.close()  # idempotent
    assert await wait_until(lambda: backend.running == [])
    assert await wait_until(lambda: gone(worker) and gone(supervisor))
    assert await wait_until(lambda: listing(root) is None)
    assert pool.live == 0
    with pytest.raises(REPLClosedError, match="ModalREPL"):
        await repl.execute("1")


async def test_cancellation_mid_cell_terminates_the_sandbox(backend, pool) -> None:
    repl = make(backend, pool)
    await repl.start()
    worker = repl.info["pid"]
    task = asyncio.ensure_future(repl.execute("while True:\n    pass"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: backend.running == [])
    assert await wait_until(lambda: gone(worker))
    assert pool.live == 0
    await repl.close()


async def test_close_during_a_cell(backend, pool) -> None:
    repl = make(backend, pool)
    await repl.start()
    running = asyncio.ensure_future(repl.execute("while True:\n    pass"))
    await asyncio.sleep(0.2)
    await repl.close()
    with pytest.raises(REPLClosedError):
        await asyncio.wait_for(running, 5)
    assert await wait_until(lambda: backend.running == [])


async def test_an_abandoned_repl_ends_its_sandbox(backend, pool) -> None:
    repl = make(backend, pool)
    await repl.start()
    del repl
    import gc

    gc.collect()
    assert await wait_until(lambda: backend.running == [])


# -- attaching --------------------------------------------------------------------------------------


async def test_attach_to_an_existing_sandbox(backend, pool) -> None:
    spec = make(backend, pool).spec
    existing = backend.create(spec)
    async with make(backend, pool, sandbox_id=existing.id) as repl:
        assert repl.sandbox_id == existing.id
        await repl.load("context", "abc")
        assert (await run_ok(repl, "context * 2")).value == "'abcabc'"
        supervisor = repl.info["supervisor_pid"]
    # Not ours: left running, but our supervisor and worker are gone.
    assert existing.poll() is None
    assert await wait_until(lambda: gone(supervisor))
    assert pool.live == 0
    # Two REPLs attached to one sandbox have separate namespaces.
    async with make(backend, pool, sandbox_id=existing.id) as a, make(backend, pool, sandbox_id=existing.id) as b:
        await run_ok(a, "x = 'a'")
        assert (await b.execute("x")).error_type == "NameError"
    existing.terminate()


async def test_attach_to_a_missing_sandbox(backend, pool) -> None:
    with pytest.raises(WorkerStartError, match="could not attach"):
        await make(backend, pool, sandbox_id="sb-nope").start()


# -- the stand-in's own rules ---------------------------------------------------------------------


def _spec(**fields) -> SandboxSpec:
    base: dict[str, Any] = {
        "app_name": "t",
        "python_version": "3.11",
        "packages": (),
        "cpu": 1.0,
        "memory_mb": 512,
        "timeout_s": 60,
        "idle_timeout_s": None,
        "region": None,
    }
    base.update(fields)
    return SandboxSpec(**base)


async def test_stand_in_honours_lifetime_and_idle_timeout(backend) -> None:
    short = backend.create(_spec(timeout_s=1))
    idle = backend.create(_spec(idle_timeout_s=1))
    process = idle.exec("sleep", "1.5")
    assert await wait_until(lambda: short.poll() is not None, 3)
    assert idle.poll() is None  # a running exec is activity
    assert await wait_until(lambda: process.poll() is not None, 3)
    ended = time.monotonic()
    assert await wait_until(lambda: idle.poll() is not None, 3)
    assert time.monotonic() - ended > 0.5  # idle counts from the end of the last exec
    with pytest.raises(RuntimeError, match="terminated"):
        idle.exec("true")


def test_supervisor_exits_when_the_host_stays_away(tmp_path) -> None:
    import subprocess
    import sys

    root = stage_worker_tree()
    bootstrap = (
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        "from rlm_integrations.repl.worker.supervisor import main; main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-I", "-B", "-c", bootstrap, json.dumps({"idle_timeout_s": 0.5})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"TMPDIR": str(tmp_path)},
    )
    assert process.stdin is not None and process.stdout is not None  # both are pipes
    ready = json.loads(process.stdout.readline())
    assert ready["op"] == "ready"
    started = time.monotonic()
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert gone(ready["pid"]) or _wait_gone(ready["pid"])
    assert list(tmp_path.iterdir()) == []
    process.stdin.close()
    process.stdout.close()


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_sandboxes_still_held_at_exit_are_terminated(tmp_path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "terminated"
    code = (
        "import asyncio\n"
        "from rlm_integrations.repl.sandbox.standin import StandInSandbox\n"
        "from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend\n"
        "original = StandInSandbox.terminate\n"
        "def terminate(self, *args):\n"
        f"    open({str(marker)!r}, 'a').write(self.id + '\\n')\n"
        "    original(self, *args)\n"
        "StandInSandbox.terminate = terminate\n"
        "async def main():\n"
        "    repl = ModalREPL(backend=StandInBackend(), pool=SandboxPool(max_sandboxes=2))\n"
        "    await repl.start()\n"
        "    print(repl.sandbox_id, repl.info['pid'], repl.info['supervisor_pid'], flush=True)\n"
        "    globals()['kept'] = repl  # never closed\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    sandbox_id, worker, supervisor = result.stdout.split()
    assert marker.read_text().split() == [sandbox_id]
    assert _wait_gone(int(worker)) and _wait_gone(int(supervisor))
