"""Resource abuse against the local REPL: each attempt ends in a clear error, the host
stays alive, and the REPL is usable afterwards (with `context` still loaded).

Timeouts are 1 s and memory limits small so the whole file stays fast.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time

import pytest

from rlm_integrations.errors import WorkerCrashedError
from rlm_integrations.repl import CellResult, LocalREPL

SECRET_VAR = "RLM_ABUSE_TEST_SECRET"
SECRET = "secret-" + secrets.token_hex(12)
CONTEXT = "abuse-test context " * 10


@pytest.fixture
def host_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_VAR, SECRET)
    return SECRET


async def _make(**options) -> LocalREPL:
    repl = LocalREPL(**options)
    await repl.start()
    await repl.load("context", CONTEXT)
    return repl


@pytest.fixture
async def fast():
    """A restricted REPL with a 1 s cell limit."""
    repl = await _make(cell_timeout_s=1.0)
    try:
        yield repl
    finally:
        await repl.close()


@pytest.fixture
async def small():
    """A restricted REPL with a 256 MB memory budget."""
    repl = await _make(cell_timeout_s=10.0, memory_limit_mb=256)
    try:
        yield repl
    finally:
        await repl.close()


@pytest.fixture
async def plain(host_secret: str):
    """An unrestricted REPL: plain Python, only the OS walls (started after the host secret is set)."""
    repl = await _make(cell_timeout_s=5.0, policy="unrestricted")
    try:
        yield repl
    finally:
        await repl.close()


async def _assert_usable(repl: LocalREPL) -> None:
    """The REPL answers, `context` is loaded, and the host process is fine."""
    cell = await repl.execute("n = len(context)\nn + 1")
    assert cell.error is None, cell.error
    assert cell.value == str(len(CONTEXT) + 1)
    assert (await repl.execute("1+1")).value == "2"
    assert os.getpid() > 0 and os.environ.get("PYTEST_CURRENT_TEST")  # still us, still running


def _assert_stopped(cell, started: float, limit: float) -> None:
    assert cell.timed_out, cell
    assert cell.restarted
    assert cell.error_type == "TimeoutError"
    assert cell.error and "limit" in cell.error.lower()
    assert cell.final is None
    elapsed = time.monotonic() - started
    assert limit * 0.9 <= elapsed < limit + 5.0, elapsed


# -- CPU: infinite loops and long C calls -------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("while True:\n    pass", id="busy_loop"),
        pytest.param(
            "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
            id="loop_swallowing_base_exception",
        ),
        pytest.param(
            "def spin():\n    while True:\n        try:\n            yield\n"
            "        except BaseException:\n            pass\n"
            "for _ in spin():\n    pass",
            id="generator_swallowing_everything",
        ),
        pytest.param("import re\nre.match('(a*)*b', 'a' * 40)", id="catastrophic_regex_c_call"),
        pytest.param("n = 10 ** 7\nx = 7 ** n\ny = x * x", id="huge_int_power_c_call"),
        pytest.param("sum(range(10 ** 13))", id="long_sum_c_call"),
    ],
)
async def test_runaway_cell_is_stopped(fast: LocalREPL, code: str) -> None:
    pid = fast.pid
    started = time.monotonic()
    cell = await fast.execute(code)
    _assert_stopped(cell, started, 1.0)
    assert fast.pid != pid, "the worker must be replaced after a timeout"
    await _assert_usable(fast)


async def test_timeout_reports_lost_variables_and_keeps_context(fast: LocalREPL) -> None:
    setup = await fast.execute("a = 1\nb = [1, 2, 3]")
    assert setup.ok, setup.error
    cell = await fast.execute("c = 3\nwhile True:\n    pass")
    assert cell.timed_out
    assert cell.lost_variables == ["a", "b"]
    assert "context" not in cell.lost_variables
    assert cell.error is not None
    assert "a" in cell.error and "b" in cell.error  # the model is told what it lost
    gone = await fast.execute("a")
    assert gone.error_type == "NameError"
    await _assert_usable(fast)


async def test_callbacks_survive_a_restart(fast: LocalREPL) -> None:
    fast.register("shout", lambda text: text.upper())
    assert (await fast.execute("shout('hi')")).value == "'HI'"
    assert (await fast.execute("while True:\n    pass")).restarted
    assert (await fast.execute("shout('again')")).value == "'AGAIN'"


async def test_time_waiting_for_a_host_callback_does_not_count(fast: LocalREPL) -> None:
    async def slow_query(prompt: str) -> str:
        await asyncio.sleep(1.5)
        return f"answer to {prompt}"

    fast.register("llm_query", slow_query)
    cell = await fast.execute("r = llm_query('q')\nprint(r)\nr")
    assert cell.ok, cell.error
    assert not cell.timed_out
    assert cell.stdout == "answer to q\n"
    assert cell.value == "'answer to q'"
    assert cell.duration < 1.0  # callback time is excluded from the cell's own duration


async def test_cell_time_still_counts_around_callbacks(fast: LocalREPL) -> None:
    fast.register("ping", lambda: "pong")
    started = time.monotonic()
    cell = await fast.execute("ping()\nwhile True:\n    pass")
    _assert_stopped(cell, started, 1.0)


# -- memory -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("s = 'x' * 10 ** 10", id="huge_string"),
        pytest.param("b = bytearray(10 ** 10)", id="huge_bytearray"),
        pytest.param("l = [0] * 10 ** 9", id="huge_list"),
        pytest.param("chunks = []\nwhile True:\n    chunks.append('x' * 10 ** 6)", id="growing_list"),
        pytest.param("d = {}\ni = 0\nwhile True:\n    d[i] = str(i) * 2000\n    i = i + 1", id="growing_dict"),
    ],
)
async def test_memory_bomb_is_stopped(small: LocalREPL, code: str) -> None:
    await small.execute("kept = 'still here'")
    cell = await small.execute(code)
    assert not cell.ok
    assert cell.error_type in ("MemoryError", "WorkerCrashed"), cell.error
    assert not cell.timed_out, "the memory limit, not the clock, should stop this"
    if cell.restarted:
        assert "kept" in cell.lost_variables
    after = await small.execute("kept")
    if after.restarted:  # a worker left at its memory ceiling may die on the next cell: it must recover
        assert after.error_type == "WorkerCrashed", after.error
    else:
        assert after.value == "'still here'", after.error
    await _assert_usable(small)


async def test_memory_limit_leaves_room_for_work(small: LocalREPL) -> None:
    cell = await small.execute("s = 'y' * (50 * 1024 * 1024)\nlen(s)")
    assert cell.ok, cell.error
    assert cell.value == str(50 * 1024 * 1024)


# -- output -----------------------------------------------------------------------------------------


async def test_output_flood_is_bounded() -> None:
    repl = await _make(cell_timeout_s=30.0, max_output_chars=10_000)
    try:
        cell = await repl.execute("for i in range(10 ** 6):\n    print(i)")
        assert cell.ok, cell.error
        total = sum(len(str(i)) + 1 for i in range(10**6))
        assert cell.output_chars == total
        assert len(cell.stdout) <= 10_000 + 200
        assert cell.stdout.startswith("0\n1\n2\n")
        assert cell.stdout.endswith("999998\n999999\n")
        # The marker says how much was cut: a number bigger than anything printed (all below 10**6).
        numbers = [int(n.replace(",", "").replace("_", "")) for n in re.findall(r"\d[\d,_]*", cell.stdout)]
        cut = [n for n in numbers if n >= 10**6]
        assert cut, "no marker saying how many characters were cut"
        assert total - 10_000 - 200 <= max(cut) <= total, cut
        await _assert_usable(repl)
    finally:
        await repl.close()


async def test_single_huge_print_is_bounded(fast: LocalREPL) -> None:
    cell = await fast.execute("print('a' * 5_000_000 + 'END')")
    assert cell.ok, cell.error
    assert cell.output_chars == 5_000_004
    assert len(cell.stdout) <= 10_000 + 200
    assert cell.stdout.endswith("END\n")
    cut = [int(n.replace(",", "").replace("_", "")) for n in re.findall(r"\d[\d,_]*", cell.stdout)]
    assert any(4_980_000 <= n <= 5_000_004 for n in cut), "no marker saying how many characters were cut"


async def test_huge_trailing_value_is_bounded(fast: LocalREPL) -> None:
    cell = await fast.execute("'b' * 3_000_000")
    assert cell.ok, cell.error
    assert cell.value is not None
    assert len(cell.value) <= 10_000 + 200


async def test_output_flood_until_timeout(fast: LocalREPL) -> None:
    started = time.monotonic()
    cell = await fast.execute("while True:\n    print('spam' * 100)")
    _assert_stopped(cell, started, 1.0)
    await _assert_usable(fast)


# -- files, environment, network, processes ---------------------------------------------------------------


async def test_open_is_not_available(fast: LocalREPL, tmp_path) -> None:
    target = tmp_path / "written.txt"
    cell = await fast.execute(f"f = open({str(target)!r}, 'w')\nf.write('data')\nf.close()")
    assert cell.error_type == "NameError"
    assert not target.exists()
    await _assert_usable(fast)


async def test_file_writes_fail_even_unrestricted(plain: LocalREPL, tmp_path) -> None:
    target = tmp_path / "written.txt"
    cell = await plain.execute(f"f = open({str(target)!r}, 'w')\nf.write('x' * 100000)\nf.close()")
    assert not cell.ok, "RLIMIT_FSIZE=0 must make the write fail"
    # FileNotFoundError: inside bubblewrap the host path is not even there.
    assert cell.error_type in ("OSError", "FileNotFoundError", "WorkerCrashed"), cell.error
    assert not target.exists() or target.stat().st_size == 0
    relative = await plain.execute("g = open('local.txt', 'w')\ng.write('y' * 100000)\ng.close()")
    assert not relative.ok
    await _assert_usable(plain)


async def test_worker_runs_in_a_scratch_directory(plain: LocalREPL) -> None:
    cell = await plain.execute("import os\nos.getcwd()")
    assert cell.ok and cell.value is not None, cell.error
    scratch = ast.literal_eval(cell.value)
    assert _real(scratch) != _real(os.getcwd())
    assert _is_dir(scratch)
    await plain.close()
    assert not _is_dir(scratch), "the scratch directory must be removed on close"


async def test_environment_is_not_inherited_restricted(host_secret: str) -> None:
    repl = await _make(cell_timeout_s=5.0)
    try:
        cell = await repl.execute(f"import os\nos.environ[{SECRET_VAR!r}]")
        assert cell.error_type == "ImportError"
        assert host_secret not in cell.stdout + (cell.value or "") + (cell.error or "")
        await _assert_usable(repl)
    finally:
        await repl.close()


async def test_environment_is_not_inherited_unrestricted(plain: LocalREPL, host_secret: str) -> None:
    cell = await plain.execute(f"import os\nprint(sorted(os.environ))\nos.environ.get({SECRET_VAR!r})")
    assert cell.ok, cell.error
    assert SECRET_VAR not in cell.stdout
    assert host_secret not in cell.stdout
    assert cell.value is None
    # Not through /proc either: the worker's own initial environment is empty.
    proc = await plain.execute("open('/proc/self/environ', 'rb').read()")
    assert proc.ok, proc.error
    assert host_secret not in (proc.value or "")
    assert SECRET_VAR not in (proc.value or "")
    await _assert_usable(plain)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import socket\nsocket.create_connection(('127.0.0.1', 80))", id="import_socket"),
        pytest.param("import subprocess\nsubprocess.run(['id'])", id="import_subprocess"),
        pytest.param("import os\nos.system('id')", id="os_system"),
        pytest.param("import urllib.request\nurllib.request.urlopen('http://127.0.0.1')", id="urllib"),
        pytest.param("import multiprocessing\nmultiprocessing.Process(target=print).start()", id="multiprocessing"),
        pytest.param("import pty\npty.spawn('sh')", id="pty"),
        pytest.param("import signal\nsignal.alarm(0)", id="signal"),
        pytest.param("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", id="resource"),
    ],
)
async def test_system_modules_are_refused(fast: LocalREPL, code: str) -> None:
    cell = await fast.execute(code)
    assert cell.error_type == "ImportError", cell.error
    assert not cell.restarted
    await _assert_usable(fast)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _net_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def _isolation_possible() -> bool:
    """Whether this OS lets an ordinary process enter a new network namespace."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    for flags in (["-n"], ["-r", "-n"]):
        try:
            done = subprocess.run(["unshare", *flags, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return True
    return False


async def test_unrestricted_worker_cannot_reach_a_host_socket(plain: LocalREPL) -> None:
    host_ns = _net_namespace()
    probe = await plain.execute("import os\nos.readlink('/proc/self/ns/net')")
    worker_ns = ast.literal_eval(probe.value) if probe.ok and probe.value else None
    isolated = host_ns is not None and worker_ns is not None and worker_ns != host_ns
    assert plain.network_isolated == isolated, "network_isolated must tell the truth"
    if not isolated:
        if _isolation_possible():
            pytest.fail("this OS allows a private network namespace, but the worker shares the host's network")
        pytest.skip("network namespace isolation is not possible on this OS; nothing to check")

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        cell = await plain.execute(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\ns.sendall(b'hello')"
        )
        assert not cell.ok, "the worker reached a socket on the host"
        assert cell.error_type in ("OSError", "ConnectionRefusedError", "TimeoutError", "ConnectionError") or (
            "Error" in (cell.error_type or "")
        ), cell.error
        with pytest.raises(BlockingIOError):
            listener.accept()
    await _assert_usable(plain)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="RLIMIT_NPROC does not bind root")
async def test_unrestricted_worker_cannot_start_processes(plain: LocalREPL) -> None:
    cell = await plain.execute("import subprocess\nsubprocess.run(['true'])")
    assert not cell.ok
    await _assert_usable(plain)


# -- crashes and the worker's own plumbing ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("raise SystemExit(0)", id="system_exit"),
        pytest.param("raise KeyboardInterrupt", id="keyboard_interrupt"),
        pytest.param("raise GeneratorExit", id="generator_exit"),
        pytest.param("raise BaseException('out')", id="base_exception"),
    ],
)
async def test_base_exceptions_stay_in_the_cell(fast: LocalREPL, code: str) -> None:
    await fast.execute("kept = 1")
    cell = await fast.execute(code)
    assert not cell.ok
    assert cell.error_type in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException")
    assert not cell.restarted
    assert (await fast.execute("kept")).value == "1"
    await _assert_usable(fast)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import os\nos._exit(3)", id="os_exit"),
        pytest.param("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", id="sigkill_self"),
        pytest.param("import ctypes\nctypes.string_at(0)", id="segfault"),
        pytest.param(
            "import os\nfor fd in range(64):\n    try:\n        os.close(fd)\n    except OSError:\n        pass",
            id="close_protocol_fds",
        ),
    ],
)
async def test_worker_crash_is_reported_and_recovered(plain: LocalREPL, code: str) -> None:
    await plain.execute("kept = 1")
    cell = await plain.execute(code)
    assert not cell.ok
    assert cell.restarted
    assert cell.error_type in ("WorkerCrashed", "TimeoutError"), cell.error
    assert cell.lost_variables == ["kept"]
    await _assert_usable(plain)


async def test_stray_writes_to_stdout_do_not_corrupt_the_protocol(plain: LocalREPL) -> None:
    cell = await plain.execute(
        "import os, sys\n"
        'os.write(1, b\'{"op": "result", "stdout": "forged"}\\n\' * 50)\n'
        "os.write(2, b'noise on stderr\\n' * 50)\n"
        "sys.stdout.write('more')\n"
        "21 * 2"
    )
    assert cell.ok, cell.error
    assert cell.value == "42"
    assert "forged" not in cell.stdout
    assert (await plain.execute("1+1")).value == "2"


async def test_deep_recursion(fast: LocalREPL) -> None:
    cell = await fast.execute("def f(n):\n    return f(n + 1)\nf(0)")
    assert cell.error_type == "RecursionError"
    assert not cell.restarted
    await _assert_usable(fast)


async def test_deeply_nested_data_repr(fast: LocalREPL) -> None:
    cell = await fast.execute("a = []\nfor i in range(200000):\n    a = [a]\nrepr(a)")
    assert not cell.ok
    assert cell.error_type in ("RecursionError", "MemoryError", "WorkerCrashed"), cell.error
    await _assert_usable(fast)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("x = " + "-" * 100_000 + "1", id="deep_unary"),
        pytest.param("x = " + "-" * 400 + "1", id="unary_deep_enough_for_the_policy_compiler"),
        pytest.param("x = 1" + " + 1" * 200_000, id="long_binary_chain"),
        pytest.param("x = " + "(" * 500 + "1" + ")" * 500, id="deep_parentheses"),
        pytest.param("x = " + "[" * 100_000 + "]" * 100_000, id="deep_lists"),
    ],
)
async def test_pathological_source_is_a_cell_error(fast: LocalREPL, code: str) -> None:
    cell = await fast.execute(code)
    assert not cell.ok
    assert cell.error
    assert cell.error_type in ("SyntaxError", "RecursionError", "MemoryError", "PolicyError", "WorkerCrashed"), (
        cell.error_type,
        cell.error,
    )
    await _assert_usable(fast)


# -- many REPLs at once --------------------------------------------------------------------------------


async def test_eight_concurrent_repls_do_not_cross_talk() -> None:
    repls = [LocalREPL(cell_timeout_s=10.0) for _ in range(8)]

    async def session(index: int, repl: LocalREPL) -> tuple[int, list[CellResult]]:
        await repl.start()
        await repl.load("context", f"context-{index}")
        repl.register("whoami", lambda i=index: f"host-{i}")
        cells = [
            await repl.execute(f"mine = {index}\nprint('marker-{index}')"),
            await repl.execute("total = 0\nfor i in range(20000):\n    total = total + i\ntotal"),
            await repl.execute(f"print('again-{index}', mine, context, whoami())\nmine * 1000"),
        ]
        return index, cells

    try:
        results = await asyncio.gather(*(session(i, r) for i, r in enumerate(repls)))
        pids = {repl.pid for repl in repls}
        assert len(pids) == 8, "each REPL needs its own worker"
        for index, cells in results:
            first, middle, last = cells
            assert first.ok and middle.ok and last.ok, (first.error, middle.error, last.error)
            assert first.stdout == f"marker-{index}\n"
            assert middle.value == str(sum(range(20000)))
            assert last.stdout == f"again-{index} {index} context-{index} host-{index}\n"
            assert last.value == str(index * 1000)
            assert await repls[index].get("mine") == index
    finally:
        await asyncio.gather(*(repl.close() for repl in repls))


async def test_a_timeout_in_one_repl_does_not_disturb_another() -> None:
    stuck = await _make(cell_timeout_s=1.0)
    busy = await _make(cell_timeout_s=10.0)
    try:
        await busy.execute("x = 'busy'")
        spin, work = await asyncio.gather(
            stuck.execute("while True:\n    pass"),
            busy.execute("y = sum(range(10 ** 5))\nx + str(y)"),
        )
        assert spin.timed_out
        assert work.ok and work.value == repr("busy" + str(sum(range(10**5))))
        assert not work.restarted
    finally:
        await stuck.close()
        await busy.close()


# -- cancellation, closing, strange output ------------------------------------------------------------


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers kill(0): look at its state
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


async def test_cancelled_execute_leaves_the_repl_usable(fast: LocalREPL) -> None:
    pid = fast.pid
    assert pid is not None
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(fast.execute("while True:\n    pass"), 0.3)
    await asyncio.sleep(0.2)
    assert _process_gone(pid), "a cancelled cell must not leave its worker spinning"
    await _assert_usable(fast)


async def test_close_during_a_running_cell() -> None:
    repl = await _make(cell_timeout_s=30.0)
    pid = repl.pid
    assert pid is not None
    running = asyncio.ensure_future(repl.execute("while True:\n    pass"))
    await asyncio.sleep(0.3)
    await repl.close()
    try:
        outcome = await asyncio.wait_for(running, 10.0)
    except Exception as error:  # a REPLError is fine; hanging is not
        assert "REPL" in type(error).__name__ or "Worker" in type(error).__name__, repr(error)
    else:
        assert not outcome.ok
    assert _process_gone(pid)


async def test_close_kills_the_workers_children(plain: LocalREPL) -> None:
    cell = await plain.execute("import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nchild.pid")
    if not cell.ok:
        pytest.skip(f"the worker cannot start processes here: {cell.error}")
    assert cell.value is not None
    child = int(cell.value)
    worker = plain.pid
    assert worker is not None
    await plain.close()
    await asyncio.sleep(0.2)
    assert _process_gone(worker)
    assert _process_gone(child), "a process started by a cell outlived its REPL"


async def test_timeout_kills_the_workers_children() -> None:
    repl = await _make(cell_timeout_s=1.0, policy="unrestricted")
    try:
        cell = await repl.execute("import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nchild.pid")
        if not cell.ok:
            pytest.skip(f"the worker cannot start processes here: {cell.error}")
        assert cell.value is not None
        child = int(cell.value)
        spin = await repl.execute("while True:\n    pass")
        assert spin.timed_out
        await asyncio.sleep(0.2)
        assert _process_gone(child), "a process started by a cell outlived the timeout"
    finally:
        await repl.close()


async def test_lone_surrogates_and_control_characters_in_output(fast: LocalREPL) -> None:
    cell = await fast.execute("print('\\ud800 \\x00 \\r \\x1b[2J end')\n'\\udfff'")
    assert cell.ok, cell.error
    assert cell.stdout == "\ud800 \x00 \r \x1b[2J end\n"
    assert cell.value == repr("\udfff")
    await _assert_usable(fast)


@pytest.mark.parametrize("limit", ["RLIMIT_FSIZE", "RLIMIT_AS"])
async def test_unrestricted_cell_cannot_lift_its_limits(plain: LocalREPL, limit: str) -> None:
    cell = await plain.execute(
        "import resource\n"
        f"soft, hard = resource.getrlimit(resource.{limit})\n"
        "try:\n"
        f"    resource.setrlimit(resource.{limit}, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "    lifted = True\n"
        "except (ValueError, OSError):\n"
        "    lifted = False\n"
        "(hard != resource.RLIM_INFINITY, lifted)"
    )
    assert cell.ok, cell.error
    assert cell.value == "(True, False)", "the worker's OS limits must be hard limits it cannot raise"


async def test_get_of_a_value_whose_repr_hangs_is_bounded_and_recovers() -> None:
    # Only unrestricted code can define __repr__; the host must still never wait forever on `get`.
    repl = LocalREPL(cell_timeout_s=1.0, policy="unrestricted")
    async with repl:
        await repl.load("context", "abc")
        cell = await repl.execute(
            "class Slow:\n    def __repr__(self):\n        while True:\n            pass\nx = Slow()"
        )
        assert cell.ok, cell.error
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError, match="did not answer"):
            await repl.get("x")
        assert time.monotonic() - started < 5
        after = await repl.execute("len(context)")
        assert after.value == "3"  # a fresh worker, with the context reloaded
