"""Red-team round 2 against wall 2: new routes, tried with *unrestricted* code in the real worker.

Each test runs plain Python in a `LocalREPL(policy="unrestricted")` worker (wall 1 assumed
fallen) and asserts the OS stopped it. Where the same code can run harmlessly outside the
sandbox, it runs there too (the control) and must succeed, so a stopped attempt proves the
wall and not a broken snippet. Tests run as root in CI, and several routes only open as root:
inside the sandbox uid 65534 *is* the host user who started it.

Routes that were open before this round (see docs/security.md, "Red-team round 2"):
writable ``/proc/sys`` (as host root), writable ``/proc/1/mem`` of bubblewrap's init (which
has no seccomp filter), a writable scratch directory and ``/dev`` (directories and symbolic
links are not bounded by ``RLIMIT_FSIZE``), System V shared memory held past ``RLIMIT_AS``,
and a foreign-ABI system call that killed only the cell's thread (the cell then hung).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from rlm_integrations.errors import IsolationError
from rlm_integrations.repl import LocalREPL
from rlm_integrations.repl.local import process as _process

ROOT = os.geteuid() == 0
LINUX_X86_64 = sys.platform.startswith("linux") and os.uname().machine == "x86_64"
BUBBLEWRAP = sys.platform.startswith("linux") and shutil.which("bwrap") is not None

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OS wall is Linux-only")


def _program(snippet: str) -> str:
    """The attempt wrapped so that its outcome is a string: 'escaped' or 'stopped <error>'."""
    body = textwrap.indent(textwrap.dedent(snippet).strip(), "    ")
    return (
        "import ctypes, os, resource, signal, sys\n"
        "try:\n" + body + "\n"
        "    outcome = 'escaped'\n"
        "except BaseException as error:\n"
        "    outcome = 'stopped ' + type(error).__name__ + ': ' + str(error)\n"
    )


async def _in_worker(repl: LocalREPL, snippet: str) -> str:
    cell = await repl.execute(_program(snippet) + "outcome")
    assert cell.ok, f"the worker itself failed: {cell.error}"
    outcome = ast.literal_eval(cell.value or "''")
    assert isinstance(outcome, str)
    return outcome


def _in_plain_process(snippet: str, cwd: str | None = None) -> str:
    """The control: the same code in an ordinary child process of the test, no sandbox."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", _program(snippet) + "print(outcome)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or tempfile.gettempdir(),
    )
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"no output (code {done.returncode}): {done.stderr[-500:]}"


def _assert_control_escapes(snippet: str, cwd: str | None = None) -> None:
    plain = _in_plain_process(snippet, cwd)
    assert plain == "escaped", f"the control did not escape, so the test proves nothing: {plain}"


@pytest.fixture
async def wall2() -> AsyncIterator[LocalREPL]:
    """An unrestricted REPL, past its first cell (every limit in force), inside bubblewrap."""
    if not BUBBLEWRAP:
        pytest.skip("bubblewrap is not installed here")
    repl = LocalREPL(policy="unrestricted", cell_timeout_s=20.0, pool=False)
    await repl.start()
    isolation = repl.isolation
    assert isolation is not None and isolation.complete, isolation and isolation.missing
    await repl.load("context", "round 2")
    assert (await repl.execute("1 + 1")).value == "2"
    try:
        yield repl
    finally:
        await repl.close()


@pytest.fixture
def victim() -> Iterator[int]:
    """A sacrificial process of the test's own user (the control's target)."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


# -- /proc: host sysctls and bubblewrap's init ------------------------------------------------------

# Writes back the value it reads: harmless where it succeeds (the control), yet a real write.
_SYSCTL_WRITE = """
path = '/proc/sys/kernel/printk_ratelimit'
value = open(path).read()
with open(path, 'w') as file:
    file.write(value)
"""


async def test_host_sysctls_cannot_be_written(wall2: LocalREPL) -> None:
    # As root, uid 65534 inside is host uid 0, which the kernel lets write every /proc/sys
    # file it owns (core_pattern included: root code execution on the host).
    outcome = await _in_worker(wall2, _SYSCTL_WRITE)
    assert outcome.startswith("stopped OSError") and "Read-only file system" in outcome, outcome
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/proc/sys/vm/swappiness"):
        outcome = await _in_worker(wall2, f"with open({path!r}, 'w') as f:\n    f.write(open({path!r}).read())")
        assert outcome.startswith("stopped "), (path, outcome)
    if ROOT:
        _assert_control_escapes(_SYSCTL_WRITE)


def _poke_mem(pid: str) -> str:
    """Open another process's memory read-write and write back the first bytes of its first mapping."""
    return f"""
    start = int(open('/proc/{pid}/maps').readline().split('-')[0], 16)
    fd = os.open('/proc/{pid}/mem', os.O_RDWR)
    try:
        data = os.pread(fd, 8, start)
        assert os.pwrite(fd, data, start) == 8
    finally:
        os.close(fd)
    """


async def test_bubblewraps_init_memory_cannot_be_written(wall2: LocalREPL, victim: int) -> None:
    # pid 1 in the sandbox is bubblewrap's init: same uid as the worker, dumpable, and
    # without the worker's seccomp filter or limits. Writing its memory would run code there.
    status = await wall2.execute("open('/proc/1/status').read()")
    assert "Seccomp:\t0" in ast.literal_eval(status.value or "''")  # the reason it matters
    outcome = await _in_worker(wall2, _poke_mem("1"))
    assert outcome.startswith("stopped OSError") and "Read-only file system" in outcome, outcome
    outcome = await _in_worker(wall2, _poke_mem("self"))
    assert outcome.startswith("stopped OSError"), outcome
    _assert_control_escapes(_poke_mem(str(victim)))  # a plain process of the same user can


async def test_proc_1_root_leads_only_back_into_the_sandbox(wall2: LocalREPL, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("round-2-secret")
    snippet = f"assert open('/proc/1/root{secret}').read() == 'round-2-secret'"
    outcome = await _in_worker(wall2, snippet)
    assert outcome.startswith("stopped FileNotFoundError"), outcome
    listing = ast.literal_eval((await wall2.execute("import os\nsorted(os.listdir('/proc/1/root'))")).value or "[]")
    assert "work" not in listing and "home" not in listing, listing
    _assert_control_escapes(f"assert open('/proc/{os.getpid()}/root{secret}').read() == 'round-2-secret'")


# -- the host's disk and memory ---------------------------------------------------------------------

# RLIMIT_FSIZE (0, hard, in the worker) bounds file bytes, not directories or symbolic links:
# a symbolic link with a long target takes a disk block of its own.
_GROW_DISK = """
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
os.mkdir('grown')
os.symlink('x' * 300, 'link')
os.mkfifo('fifo')
"""


async def test_the_scratch_directory_cannot_grow_the_hosts_disk(wall2: LocalREPL, tmp_path: Path) -> None:
    scratch = Path(wall2._channel.worker.scratch_dir)  # type: ignore[union-attr]
    outcome = await _in_worker(wall2, _GROW_DISK.replace("resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))\n", ""))
    assert outcome.startswith("stopped OSError") and "Read-only file system" in outcome, outcome
    outcome = await _in_worker(wall2, "os.mkdir('/dev/grown')")
    assert outcome.startswith("stopped OSError"), outcome
    assert os.listdir(scratch) == []
    # The control, under the same file-size limit: the limit alone does not stop any of it.
    _assert_control_escapes(_GROW_DISK, cwd=str(tmp_path))
    assert (tmp_path / "grown").is_dir() and (tmp_path / "link").is_symlink()
    # The devices a program needs still work.
    devices = await wall2.execute("open('/dev/null', 'w').write('x'), len(open('/dev/urandom', 'rb').read(8))")
    assert devices.value == "(1, 8)", devices.error


# Attach, touch and detach System V segments: they keep their memory with no mapping left.
_SHM_HOLD = """
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
size = 96 << 20
budget = resource.getrlimit(resource.RLIMIT_AS)[0]
if budget == resource.RLIM_INFINITY:
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
    budget = 512 << 20
segments = []
try:
    while len(segments) * size <= budget:
        ident = libc.shmget(0, size, 0o600 | 0o1000)
        if ident < 0:
            raise OSError(ctypes.get_errno(), 'shmget')
        segments.append(ident)
        address = libc.shmat(ident, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), 'shmat')
        ctypes.memset(address, 1, size)
        libc.shmdt(ctypes.c_void_p(address))
finally:
    for ident in segments:
        libc.shmctl(ident, 0, None)  # IPC_RMID: the control leaves nothing behind
"""


async def test_shared_memory_cannot_hold_memory_past_the_address_space_limit(wall2: LocalREPL) -> None:
    outcome = await _in_worker(wall2, _SHM_HOLD)
    assert outcome.startswith("stopped PermissionError"), outcome
    for call in ("msgget(0, 0o1600)", "semget(0, 1, 0o1600)"):
        snippet = f"libc = ctypes.CDLL(None, use_errno=True)\nif libc.{call} < 0:\n"
        snippet += "    raise OSError(ctypes.get_errno(), 'refused')\n"
        outcome = await _in_worker(wall2, snippet)
        assert outcome.startswith("stopped PermissionError"), (call, outcome)
    # The control: a plain process under a 512 MiB address-space limit holds more than that.
    _assert_control_escapes(_SHM_HOLD)


async def test_memfd_cannot_grow_past_the_file_size_limit(wall2: LocalREPL) -> None:
    for grow in ("os.ftruncate(fd, 1 << 30)", "os.posix_fallocate(fd, 0, 1 << 28)", "os.write(fd, b'x' * 4096)"):
        outcome = await _in_worker(wall2, f"fd = os.memfd_create('x')\ntry:\n    {grow}\nfinally:\n    os.close(fd)")
        assert outcome.startswith("stopped OSError") and "File too large" in outcome, (grow, outcome)


# -- system calls ------------------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX_X86_64, reason="x32 and i386 system calls exist on x86-64 only")
@pytest.mark.parametrize(
    "snippet",
    [
        # x32: the fork system call with __X32_SYSCALL_BIT set
        pytest.param("ctypes.CDLL(None).syscall(0x40000000 + 57)", id="x32"),
        # i386 through int 0x80, from an executable page: mov eax, 2 (fork); int 0x80; ret
        pytest.param(
            "import mmap\n"
            "page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "page.write(bytes.fromhex('b802000000cd80c3'))\n"
            "ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()",
            id="int80",
        ),
    ],
)
async def test_a_foreign_abi_system_call_ends_the_worker_at_once(snippet: str) -> None:
    if not BUBBLEWRAP:
        pytest.skip("bubblewrap is not installed here")
    # No cell limit: before the fix only the cell's thread died, and the cell never answered.
    async with LocalREPL(policy="unrestricted", cell_timeout_s=None, pool=False) as repl:
        assert (await repl.execute("1")).ok
        started = time.monotonic()
        cell = await asyncio.wait_for(repl.execute("import ctypes\n" + snippet), 30)
        assert time.monotonic() - started < 15
        assert not cell.ok and cell.restarted and cell.error_type == "WorkerCrashed", cell.error
        assert not cell.timed_out
        assert (await repl.execute("6 * 7")).value == "42"  # the fresh worker serves


_RAW_CLONE = """
libc = ctypes.CDLL(None, use_errno=True)
child = libc.syscall(56, {flags}, 0, 0, 0, 0)  # clone(flags, new stack 0: like fork)
if child == 0:
    os._exit(0)
if child < 0:
    raise OSError(ctypes.get_errno(), 'clone')
os.waitpid(child, 0)
"""


@pytest.mark.skipif(not LINUX_X86_64, reason="system call numbers are x86-64's")
@pytest.mark.parametrize(
    "flags",
    [
        pytest.param("17", id="sigchld"),  # SIGCHLD: a plain fork through the raw system call
        pytest.param("0x100 | 17", id="clone_vm_sigchld_no_thread"),  # CLONE_VM, no CLONE_THREAD
        pytest.param("0x00400000 | 17", id="clone_parent"),  # a sibling of the worker, child of init
    ],
)
async def test_raw_clone_without_clone_thread_is_refused(wall2: LocalREPL, flags: str) -> None:
    outcome = await _in_worker(wall2, _RAW_CLONE.format(flags=flags))
    assert outcome.startswith("stopped PermissionError"), outcome
    if flags == "17":
        _assert_control_escapes(_RAW_CLONE.format(flags=flags))


async def test_the_limits_of_bubblewraps_init_cannot_be_changed(wall2: LocalREPL) -> None:
    for snippet in (
        "resource.prlimit(1, resource.RLIMIT_NOFILE, (4096, 4096))",
        "resource.prlimit(1, resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))",
        "resource.prlimit(0, resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))",
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))",  # even lowering, after the first cell
    ):
        outcome = await _in_worker(wall2, snippet)
        assert outcome.startswith(("stopped PermissionError", "stopped ValueError")), (snippet, outcome)


# -- the host's kill ---------------------------------------------------------------------------------


async def test_a_worker_that_leaves_the_hosts_process_group_still_dies() -> None:
    if not BUBBLEWRAP:
        pytest.skip("bubblewrap is not installed here")
    repl = LocalREPL(policy="unrestricted", pool=False, cell_timeout_s=1.0)
    await repl.start()
    launched = repl.pid
    assert launched is not None
    inside = psutil.Process(launched).children(recursive=True)
    assert inside
    cell = await repl.execute("import os\nos.setsid()\nwhile True:\n    pass")
    assert cell.timed_out, cell.error
    deadline = time.monotonic() + 5
    alive = inside
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        await asyncio.sleep(0.05)
    with contextlib.suppress(Exception):
        await repl.close()
    assert not alive, f"survived the host's kill: {alive}"


# -- the protocol pipe -------------------------------------------------------------------------------


async def test_a_worker_that_stops_reading_never_blocks_the_hosts_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker stops itself (a signal to itself is allowed) once its cell has answered; the
    # next request is larger than the pipe holds. Before the fix the host's event loop blocked
    # in that write for good: no timeout, no cancellation, no other task ran.
    monkeypatch.setattr(_process, "SEND_TIMEOUT_S", 2.0)
    repl = LocalREPL(policy="unrestricted", cell_timeout_s=5.0, pool=False)
    await repl.start()
    try:
        # (no thread: cells may not start one; a timer signal fires while the worker waits for a request)
        stop = "import os, signal\n"
        stop += "signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGSTOP))\n"
        stop += "signal.setitimer(signal.ITIMER_REAL, 0.3)\n1"
        assert (await repl.execute(stop)).ok
        launched = repl.pid
        assert launched is not None
        await asyncio.sleep(1.0)
        stopped = [psutil.Process(launched), *psutil.Process(launched).children(recursive=True)]
        assert any(p.status() == psutil.STATUS_STOPPED for p in stopped), [p.status() for p in stopped]
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.1)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        cell = await asyncio.wait_for(repl.execute("x = 1\n" + "#" * 400_000 + "\nx"), 30)
        ticker.cancel()
        assert time.monotonic() - started < 15
        assert ticks >= 10, f"the event loop was blocked ({ticks} ticks)"
        assert not cell.ok and cell.restarted and cell.error_type == "WorkerCrashed", cell.error
        assert (await repl.execute("6 * 7")).value == "42"
    finally:
        await repl.close()


# -- without bubblewrap: what is reported, and what still holds --------------------------------------


async def test_without_bubblewrap_the_report_says_when_the_worker_is_host_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Started plainly, the worker's own user namespace maps no uid: it reads uid 65534, yet
    # the kernel still sees the host's uid. Run by root, it wrote /proc/sys (the control below).
    monkeypatch.setenv("RLM_BWRAP", "none")
    async with LocalREPL(policy="unrestricted", pool=False, cell_timeout_s=20.0) as repl:
        assert (await repl.execute("1")).ok
        isolation = repl.isolation
        assert isolation is not None and isolation.launcher == "none" and not isolation.complete
        wrote = await _in_worker(repl, _SYSCTL_WRITE)
        if ROOT:
            assert not isolation.unprivileged
            assert any(line.startswith("unprivileged:") and "host root" in line for line in isolation.missing)
        if wrote == "escaped":  # whatever the host: a worker that can write /proc/sys is never called unprivileged
            assert not isolation.unprivileged, isolation
        # The worker's own lockdown holds here too, the new denials included.
        outcome = await _in_worker(repl, _SHM_HOLD)
        assert outcome.startswith("stopped PermissionError"), outcome
    if ROOT:
        with pytest.raises(IsolationError, match="host root"):
            await LocalREPL(pool=False, require_isolation=True).start()


async def test_without_bubblewrap_links_planted_in_scratch_are_not_followed_on_close(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Without the read-only view the worker can plant links in its scratch directory; the
    # host's removal of that directory on close must remove the links, not what they name.
    monkeypatch.setenv("RLM_BWRAP", "none")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "canary.txt").write_text("still here")
    repl = LocalREPL(policy="unrestricted", pool=False, cell_timeout_s=20.0)
    await repl.start()
    scratch = repl._channel.worker.scratch_dir  # type: ignore[union-attr]
    plant = f"os.symlink({str(kept)!r}, 'dir-link')\nos.symlink({str(kept / 'canary.txt')!r}, 'file-link')"
    outcome = await _in_worker(repl, plant)
    assert outcome == "escaped", outcome  # the links are there (no view to stop them)
    assert "dir-link" in os.listdir(scratch)
    await repl.close()
    assert os.path.basename(scratch) not in os.listdir(os.path.dirname(scratch))
    assert (kept / "canary.txt").read_text() == "still here"


# -- open: threads are bounded only by the address space when the host is root ------------------------

_THREADS = """
import threading
threading.stack_size(65536)
gate = threading.Event()
started = []
try:
    for _ in range(300):
        thread = threading.Thread(target=gate.wait)
        thread.start()
        started.append(thread)
finally:
    gate.set()
    for thread in started:
        thread.join()
"""


async def test_a_worker_cannot_start_hundreds_of_threads(wall2: LocalREPL) -> None:
    outcome = await _in_worker(wall2, _THREADS)
    assert outcome.startswith("stopped "), outcome
    _assert_control_escapes(_THREADS)


# -- held: kept as regression tests ------------------------------------------------------------------


async def test_abstract_unix_sockets_of_the_host_are_out_of_reach(wall2: LocalREPL) -> None:
    import socket

    name = "\0rlm-redteam-" + os.urandom(6).hex()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(4)
    try:
        snippet = f"import socket\nclient = socket.socket(socket.AF_UNIX)\nclient.connect({name!r})\nclient.close()"
        outcome = await _in_worker(wall2, snippet)
        assert outcome.startswith("stopped ConnectionRefusedError"), outcome  # its own, empty namespace
        _assert_control_escapes(snippet)
    finally:
        server.close()


async def test_posix_message_queues_are_refused(wall2: LocalREPL) -> None:
    snippet = (
        "librt = ctypes.CDLL('librt.so.1', use_errno=True)\n"
        "queue = librt.mq_open(b'/rlm-redteam', 0o102, 0o600, None)\n"  # O_RDWR | O_CREAT
        "if queue < 0:\n    raise OSError(ctypes.get_errno(), 'mq_open')\n"
        "librt.mq_close(queue)\nlibrt.mq_unlink(b'/rlm-redteam')"
    )
    outcome = await _in_worker(wall2, snippet)
    assert outcome.startswith("stopped PermissionError"), outcome
    _assert_control_escapes(snippet)
