"""Wall 2 alone: hostile *unrestricted* code in the real worker, and the OS stops each attempt.

Every worker here runs with ``policy="unrestricted"`` (plain Python, no RestrictedPython),
so only the OS wall stands: bubblewrap's namespaces and file-system view, no_new_privs,
no capabilities, the seccomp filter and hard limits. Each attack also runs, unchanged,
in a plain subprocess of the test (the control) where that is meaningful: there it must
succeed, so a stopped attack proves the wall, not a broken snippet.

Tests run as root in CI; root must not help.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

import rlm_integrations
from rlm_integrations.errors import IsolationError, WorkerStartError
from rlm_integrations.repl import Isolation, LocalREPL
from rlm_integrations.repl.modal import ModalREPL, StandInBackend

PROJECT = Path(rlm_integrations.__file__).resolve().parents[1]
HOST_PID = os.getpid()
SECRET = "wall2-secret-" + os.urandom(8).hex()
ROOT = os.geteuid() == 0
HAS_PASSWD = os.path.exists("/etc/passwd")


def _has_capability(number: int) -> bool:
    """Whether this test process holds a capability (a control that needs it proves nothing without)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> number & 1)
    return False


def _user_namespaces_allowed() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return subprocess.run([unshare, "-U", "true"], capture_output=True, check=False).returncode == 0


def _ptrace_of_non_children_allowed() -> bool:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as scope:
            return scope.read().strip() == "0" or _has_capability(19)  # CAP_SYS_PTRACE
    except OSError:
        return True  # no Yama: same-user tracing is allowed


CAN_SETUID = _has_capability(7) and _has_capability(6)  # CAP_SETUID, CAP_SETGID
CAN_SYS_ADMIN = _has_capability(21)
CAN_CHROOT = _has_capability(18)
USERNS = _user_namespaces_allowed()


# -- running an attack ------------------------------------------------------------------------------


def _program(snippet: str) -> str:
    """The attack wrapped so that its outcome is a string: 'escaped' or 'stopped <error>'."""
    body = textwrap.indent(textwrap.dedent(snippet).strip(), "    ")
    return (
        "import ctypes, os, resource, signal, socket, subprocess, sys\n"
        "try:\n" + body + "\n"
        "    outcome = 'escaped'\n"
        "except BaseException as error:\n"
        "    outcome = 'stopped ' + type(error).__name__ + ': ' + str(error)\n"
    )


async def _in_worker(repl: LocalREPL | ModalREPL, snippet: str) -> str:
    cell = await repl.execute(_program(snippet) + "outcome")
    assert cell.ok, f"the worker itself failed: {cell.error}"
    outcome = ast.literal_eval(cell.value or "''")
    assert isinstance(outcome, str)
    return outcome


def _in_plain_process(snippet: str) -> str:
    """The control: the same code in an ordinary child process of the test, no sandbox."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", _program(snippet) + "print(outcome)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),
    )
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"no output (code {done.returncode}): {done.stderr[-500:]}"


async def _assert_stopped(repl: LocalREPL, snippet: str, *, control: bool = True) -> str:
    outcome = await _in_worker(repl, snippet)
    assert outcome.startswith("stopped "), f"the sandboxed worker was not stopped: {outcome}"
    if control:
        plain = _in_plain_process(snippet)
        assert plain == "escaped", f"the control did not escape, so the test proves nothing: {plain}"
    return outcome


# -- fixtures ----------------------------------------------------------------------------------------


def _bubblewrap_expected() -> bool:
    return sys.platform.startswith("linux") and shutil.which("bwrap") is not None


def _need(isolation: Isolation | None, *layers: str) -> None:
    """Skip if this OS cannot give `layers` (no bubblewrap); fail if it can and they are missing."""
    assert isolation is not None
    absent = [layer for layer in layers if not getattr(isolation, layer)]
    if not absent:
        return
    if _bubblewrap_expected():
        pytest.fail(f"bubblewrap is installed but {absent} are not in force: {isolation.missing}")
    pytest.skip(f"{absent} not available here: {isolation.missing}")


@pytest.fixture
async def wall2() -> AsyncIterator[LocalREPL]:
    """An unrestricted REPL: the OS wall alone."""
    repl = LocalREPL(policy="unrestricted", cell_timeout_s=20.0)
    await repl.start()
    await repl.load("context", "wall 2 context")
    assert (await repl.execute("1 + 1")).value == "2"  # past the first cell: every limit is in force
    try:
        yield repl
    finally:
        await repl.close()


@pytest.fixture
def secret_files(tmp_path: Path) -> Iterator[list[Path]]:
    """Root-owned (when we are root) 0600 files holding SECRET: in a temp dir and in the home directory."""
    paths = [tmp_path / "secret.txt"]
    home = Path.home()
    if os.access(home, os.W_OK):
        handle, name = tempfile.mkstemp(prefix=".rlm-wall2-", dir=home)
        os.close(handle)
        paths.append(Path(name))
    for path in paths:
        path.write_text(SECRET)
        path.chmod(0o600)
    yield paths
    for path in paths[1:]:
        path.unlink(missing_ok=True)


@pytest.fixture
def victim() -> Iterator[int]:
    """A sacrificial process of the test's own user, for attacks whose control would harm the host."""
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


# -- files -------------------------------------------------------------------------------------------


async def test_host_secret_files_cannot_be_read(wall2: LocalREPL, secret_files: list[Path]) -> None:
    _need(wall2.isolation, "mount_namespace")
    for path in secret_files:
        outcome = await _assert_stopped(wall2, f"data = open({str(path)!r}).read()\nassert data == {SECRET!r}")
        assert SECRET not in outcome


async def test_the_project_checkout_and_environment_are_not_visible(wall2: LocalREPL) -> None:
    _need(wall2.isolation, "mount_namespace")
    await _assert_stopped(wall2, f"assert 'pyproject.toml' in os.listdir({str(PROJECT)!r})")
    await _assert_stopped(wall2, f"open({str(PROJECT / 'pyproject.toml')!r}).read()")
    await _assert_stopped(
        wall2, f"open({str(Path(sys.prefix) / 'pyvenv.cfg')!r}).read()", control=sys.prefix != sys.base_prefix
    )
    # What the worker does see: its own scratch directory, read-only system files, and no /etc/passwd.
    await _assert_stopped(wall2, "open('/etc/passwd').read()", control=HAS_PASSWD)
    seen = await wall2.execute("import os\nsorted(os.listdir('/'))")
    assert seen.ok, seen.error
    assert set(ast.literal_eval(seen.value or "[]")) <= {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "root",
        "sbin",
        "tmp",
        "usr",
        "home",
        "work",
        "var",
        "run",
        "mnt",
        "srv",
    }
    listing = ast.literal_eval((await wall2.execute("import os\nsorted(os.listdir('/opt/rlm/lib'))")).value or "[]")
    assert set(listing) <= {"rlm_integrations", "RestrictedPython", "pyseccomp.py", "__pycache__"}, listing


async def test_host_files_cannot_be_created_truncated_or_written(wall2: LocalREPL, tmp_path: Path) -> None:
    _need(wall2.isolation, "mount_namespace")  # RLIMIT_FSIZE alone does not stop creating or truncating
    kept = tmp_path / "kept.txt"
    kept.write_text("keep me")
    created = tmp_path / "created.txt"
    await _assert_stopped(wall2, f"open({str(kept)!r}, 'w').close()")  # truncation
    kept.write_text("keep me")  # the control truncated it
    await _assert_stopped(wall2, f"f = open({str(kept)!r}, 'a')\nf.write('more')\nf.close()")
    kept.write_text("keep me")
    await _assert_stopped(wall2, f"open({str(created)!r}, 'x').close()")
    created.unlink()
    await _assert_stopped(wall2, f"os.truncate({str(kept)!r}, 0)")
    kept.write_text("keep me")
    await _assert_stopped(wall2, f"os.unlink({str(kept)!r})")
    kept.write_text("keep me")
    # The worker's own attempts left the host untouched (the controls ran after each, then restored).
    for attack in ("open({p!r}, 'w').close()", "os.truncate({p!r}, 0)", "os.unlink({p!r})"):
        await _in_worker(wall2, attack.format(p=str(kept)))
    await _in_worker(wall2, f"open({str(created)!r}, 'x').close()")
    assert kept.read_text() == "keep me"
    assert not created.exists()
    # Even in its scratch directory no byte can be written (RLIMIT_FSIZE is 0, hard).
    outcome = await _in_worker(wall2, "f = open('scratch.txt', 'w')\nf.write('x' * 1000)\nf.close()")
    assert outcome.startswith(("stopped OSError", "stopped PermissionError")), outcome


# -- processes ---------------------------------------------------------------------------------------


async def test_host_processes_are_invisible_and_cannot_be_signalled(wall2: LocalREPL) -> None:
    _need(wall2.isolation, "pid_namespace")
    await _assert_stopped(wall2, f"os.kill({HOST_PID}, 0)")
    await _assert_stopped(wall2, f"assert os.path.exists('/proc/{HOST_PID}')")
    await _assert_stopped(wall2, f"assert b'PATH' in open('/proc/{HOST_PID}/environ', 'rb').read()")
    outcome = await _assert_stopped(wall2, f"os.kill({HOST_PID}, signal.SIGKILL)", control=False)
    assert "ProcessLookupError" in outcome or "PermissionError" in outcome, outcome
    await _assert_stopped(wall2, f"os.killpg(os.getpgid({HOST_PID}), 0)")
    # The worker sees only its own sandbox: bubblewrap's init and itself.
    pids = ast.literal_eval(
        (await wall2.execute("import os\n[p for p in os.listdir('/proc') if p.isdigit()]")).value or "[]"
    )
    assert 1 <= len(pids) <= 3, pids
    assert os.getpid() == HOST_PID  # still here


async def test_other_processes_cannot_be_signalled_even_when_visible(wall2: LocalREPL) -> None:
    # The seccomp filter allows signals to the worker itself only (bubblewrap's init is pid 1 here).
    outcome = await _in_worker(wall2, "os.kill(1, 0)")
    assert outcome.startswith(("stopped PermissionError", "stopped ProcessLookupError")), outcome
    assert await _in_worker(wall2, "os.kill(os.getpid(), 0)") == "escaped"  # itself: fine


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param("pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)", id="fork"),
        pytest.param("subprocess.run(['/bin/true'], check=True)", id="subprocess"),
        pytest.param("os.waitpid(os.posix_spawn('/bin/true', ['true'], dict()), 0)", id="posix_spawn"),
        pytest.param("os.execv('/bin/echo', ['echo', 'escaped'])", id="execv"),
        pytest.param(
            "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()\np.join()",
            id="multiprocessing",
        ),
    ],
)
async def test_no_new_processes_or_programs(wall2: LocalREPL, snippet: str) -> None:
    outcome = await _assert_stopped(wall2, snippet)
    assert "PermissionError" in outcome or "Operation not permitted" in outcome, outcome


async def test_cells_cannot_start_threads(wall2: LocalREPL) -> None:
    # Refused from the first cell on: RLIMIT_NPROC does not bind a sandbox uid mapped to host root.
    code = "import threading\nseen = []\nt = threading.Thread(target=seen.append, args=(1,))\nt.start()\nt.join()\nseen"
    cell = await wall2.execute(code)
    assert not cell.ok and "RuntimeError" in (cell.error or ""), (cell.value, cell.error)
    assert (await wall2.execute("1 + 1")).value == "2"  # the worker itself is fine


async def test_ptrace_is_refused(wall2: LocalREPL, victim: int) -> None:
    attach = (
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.ptrace(16, {pid}, None, None) != 0:\n"  # PTRACE_ATTACH
        "    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
        "libc.ptrace(17, {pid}, None, None)"  # PTRACE_DETACH
    )
    await _assert_stopped(wall2, attach.format(pid=HOST_PID), control=False)
    await _assert_stopped(wall2, attach.format(pid=victim), control=_ptrace_of_non_children_allowed())
    await _assert_stopped(wall2, f"os.pidfd_open({HOST_PID})", control=hasattr(os, "pidfd_open"))


# -- limits ------------------------------------------------------------------------------------------


async def test_limits_are_hard(wall2: LocalREPL) -> None:
    code = (
        "import resource\n"
        "names = ['RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CORE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC']\n"
        "[(n, resource.getrlimit(getattr(resource, n))) for n in names]"
    )
    cell = await wall2.execute(code)
    assert cell.ok, cell.error
    for name, (soft, hard) in ast.literal_eval(cell.value or "[]"):
        assert soft == hard, (name, soft, hard)
        assert hard != -1, f"{name} is unlimited"


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        ("RLIMIT_AS", resource.RLIM_INFINITY),
        ("RLIMIT_NOFILE", 4096),
        ("RLIMIT_FSIZE", 1 << 30),
        ("RLIMIT_CPU", 5),
    ],
)
async def test_no_limit_can_be_changed(wall2: LocalREPL, limit: str, value: int) -> None:
    before = (await wall2.execute(f"import resource\nresource.getrlimit(resource.{limit})")).value
    # The control: an ordinary process can, when the host's own hard limit allows the value.
    hard = resource.getrlimit(getattr(resource, limit))[1]
    control = hard == resource.RLIM_INFINITY or (value != resource.RLIM_INFINITY and value <= hard)
    await _assert_stopped(wall2, f"resource.setrlimit(resource.{limit}, ({value}, {value}))", control=control)
    assert (await wall2.execute(f"import resource\nresource.getrlimit(resource.{limit})")).value == before


# -- network -----------------------------------------------------------------------------------------


async def test_no_network_not_even_the_hosts_loopback(wall2: LocalREPL) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(5)
        port = listener.getsockname()[1]
        connect = f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hello')\ns.close()"
        outcome = await _in_worker(wall2, connect)
        assert outcome.startswith("stopped "), outcome
        assert _in_plain_process(connect) == "escaped"
        accepted, _ = listener.accept()  # the control's connection, and only that one
        accepted.close()
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    for family in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
        kind = "SOCK_RAW" if family in ("AF_NETLINK", "AF_PACKET") else "SOCK_STREAM"
        outcome = await _in_worker(wall2, f"socket.socket(socket.{family}, socket.{kind}).close()")
        assert outcome.startswith("stopped "), (family, outcome)
    assert await _in_worker(wall2, "a, b = socket.socketpair()\na.close()\nb.close()") == "escaped"


# -- privileges, mounts, namespaces ------------------------------------------------------------------


async def test_no_privileges_and_no_new_ones(wall2: LocalREPL) -> None:
    cell = await wall2.execute(
        "import os\n"
        "lines = open('/proc/self/status').read().splitlines()\n"
        "fields = dict(line.split(':\\t', 1) for line in lines if ':\\t' in line)\n"
        "(os.getuid(), int(fields['CapEff'], 16), int(fields['CapPrm'], 16), fields['NoNewPrivs'], fields['Seccomp'])"
    )
    assert cell.ok, cell.error
    uid, effective, permitted, no_new_privs, seccomp = ast.literal_eval(cell.value or "()")
    assert effective == 0 and permitted == 0, "the worker must hold no capabilities"
    assert no_new_privs == "1"
    assert seccomp == "2"
    isolation = wall2.isolation
    assert isolation is not None
    if isolation.launcher == "bubblewrap":
        assert uid == 65534
    await _assert_stopped(wall2, "os.setuid(0)\nos.setgid(0)", control=ROOT and CAN_SETUID)
    await _assert_stopped(wall2, "os.setgroups([0])", control=ROOT and CAN_SETUID)


_UNSHARE = (
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.unshare(0x10000000 | 0x00020000) != 0:\n"  # CLONE_NEWUSER | CLONE_NEWNS
    "    raise OSError(ctypes.get_errno(), 'unshare: ' + os.strerror(ctypes.get_errno()))\n"
)


async def test_no_mounts_and_no_namespaces(wall2: LocalREPL, tmp_path: Path) -> None:
    await _assert_stopped(wall2, _UNSHARE, control=USERNS)
    # A mount: the control first enters its own namespaces, so it never touches the host's mounts.
    mount = (
        f"if libc.mount(b'none', {str(tmp_path).encode()!r}, b'tmpfs', 0, None) != 0:\n"
        "    raise OSError(ctypes.get_errno(), 'mount: ' + os.strerror(ctypes.get_errno()))\n"
    )
    outcome = await _in_worker(wall2, "libc = ctypes.CDLL(None, use_errno=True)\n" + mount)
    assert outcome.startswith(("stopped OSError", "stopped PermissionError")), outcome
    if USERNS:
        assert _in_plain_process(_UNSHARE + mount) == "escaped"
    setns = (
        "fd = os.open('/proc/self/ns/uts', os.O_RDONLY)\n"
        "if ctypes.CDLL(None, use_errno=True).setns(fd, 0) != 0:\n"
        "    raise OSError(ctypes.get_errno(), 'setns: ' + os.strerror(ctypes.get_errno()))\n"
    )
    await _assert_stopped(wall2, setns, control=CAN_SYS_ADMIN)
    chroot = "os.chroot('/')"
    await _assert_stopped(wall2, chroot, control=CAN_CHROOT)


# -- reporting and refusing --------------------------------------------------------------------------


async def test_isolation_reports_every_layer(wall2: LocalREPL) -> None:
    isolation = wall2.isolation
    assert isinstance(isolation, Isolation)
    assert isolation.no_new_privs and isolation.seccomp and isolation.hard_rlimits
    assert isolation.unprivileged and isolation.user_namespace
    if not _bubblewrap_expected():
        pytest.skip(f"bubblewrap is not installed here: {isolation.missing}")
    assert isolation.launcher == "bubblewrap"
    assert isolation.complete, isolation.missing
    assert isolation.missing == ()
    assert isolation.uid == 65534
    assert all((isolation.mount_namespace, isolation.pid_namespace, isolation.ipc_namespace, isolation.uts_namespace))
    assert isolation.network_namespace
    with pytest.raises(AttributeError):
        isolation.seccomp = False  # type: ignore[misc]  # the point: mypy knows the field is read-only too
    assert LocalREPL().isolation is None  # nothing is in force before start


async def test_without_bubblewrap_the_gaps_are_reported_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RLM_BWRAP", "none")
    caplog.set_level(logging.WARNING, logger="rlm_integrations.repl")
    from rlm_integrations.repl.local import isolation as _isolation

    monkeypatch.setattr(_isolation, "_warned", set())
    repl = LocalREPL(policy="unrestricted", pool=False, cell_timeout_s=20.0)
    try:
        await repl.start()
        isolation = repl.isolation
        assert isolation is not None
        assert isolation.launcher == "none"
        assert not isolation.mount_namespace and not isolation.pid_namespace
        assert not isolation.complete
        assert any(line.startswith("mount_namespace:") and "RLM_BWRAP" in line for line in isolation.missing)
        # The worker's own lockdown holds without bubblewrap (and so inside Modal).
        assert isolation.seccomp and isolation.no_new_privs and isolation.hard_rlimits
        outcome = await _in_worker(repl, "pid = os.fork()\nif pid == 0:\n    os._exit(0)")
        assert outcome.startswith("stopped PermissionError"), outcome
        warnings = [r for r in caplog.records if "NOT in force" in r.getMessage()]
        assert len(warnings) == 1 and "mount_namespace" in warnings[0].getMessage()
        # Once per process, not once per worker.
        second = LocalREPL(policy="unrestricted", pool=False)
        await second.start()
        await second.close()
        assert len([r for r in caplog.records if "NOT in force" in r.getMessage()]) == 1
    finally:
        await repl.close()


def _plain_workers() -> set[int]:
    """This test process's worker children that were started without bubblewrap."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            command = child.cmdline()
            if child.status() != psutil.STATUS_ZOMBIE and "rlm_integrations.repl.worker.main" in " ".join(command):
                if not any(part.endswith("bwrap") for part in command[:1]) and child.ppid() == os.getpid():
                    found.add(child.pid)
    return found


@pytest.mark.parametrize(
    ("setting", "fix"),
    [("none", "unset RLM_BWRAP"), ("/nonexistent/bwrap", "apt-get install bubblewrap")],
)
async def test_require_isolation_refuses_a_worker_with_gaps(
    monkeypatch: pytest.MonkeyPatch, setting: str, fix: str
) -> None:
    monkeypatch.setenv("RLM_BWRAP", setting)
    before = _plain_workers()
    repl = LocalREPL(require_isolation=True, pool=False)
    with pytest.raises(IsolationError) as caught:
        await repl.start()
    assert isinstance(caught.value, WorkerStartError)
    message = str(caught.value)
    assert "mount_namespace" in message and "pid_namespace" in message
    assert fix in message
    assert caught.value.missing and all(isinstance(line, str) for line in caught.value.missing)
    assert repl.isolation is None
    await asyncio.sleep(0.3)
    assert _plain_workers() - before == set(), "the refused worker must be stopped"
    await repl.close()


_REFUSING_BWRAP = """#!/bin/sh
echo called >> "$(dirname "$0")/calls"
echo "bwrap: No permissions to creating new namespace, likely because the kernel does not allow" >&2
exit 1
"""


async def test_a_bubblewrap_that_refuses_is_reported_and_not_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(_REFUSING_BWRAP)
    fake.chmod(0o755)
    monkeypatch.setenv("RLM_BWRAP", str(fake))
    async with LocalREPL(policy="unrestricted", pool=False) as repl:  # falls back to a plain start
        assert (await repl.execute("6 * 7")).value == "42"
        isolation = repl.isolation
        assert isolation is not None and isolation.launcher == "none"
        assert any("No permissions to creating new namespace" in line for line in isolation.missing)
        assert any("unprivileged user namespaces" in line for line in isolation.missing)  # the fix
        assert isolation.seccomp  # the worker's own lockdown still holds
    async with LocalREPL(pool=False) as again:
        assert again.isolation is not None and again.isolation.launcher == "none"
    assert (tmp_path / "calls").read_text().count("called") == 1, "a refusing bubblewrap is tried once per process"
    with pytest.raises(IsolationError, match="No permissions to creating new namespace"):
        await LocalREPL(pool=False, require_isolation=True).start()


async def test_require_isolation_runs_when_every_layer_holds() -> None:
    if not _bubblewrap_expected():
        pytest.skip("bubblewrap is not installed here")
    async with LocalREPL(require_isolation=True, policy="unrestricted") as repl:
        assert repl.isolation is not None and repl.isolation.complete
        assert (await repl.execute("6 * 7")).value == "42"


# -- killing from outside ----------------------------------------------------------------------------


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)  # psutil ships no types
        return children
    return []


def _all_gone(processes: list[psutil.Process], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        if not alive:
            return True
        time.sleep(0.05)
    return False


async def test_the_hosts_kill_reaches_the_worker_inside_the_pid_namespace_every_time() -> None:
    for _ in range(4):
        repl = LocalREPL(policy="unrestricted", pool=False, cell_timeout_s=0.5)
        await repl.start()
        launched = repl.pid
        assert launched is not None
        inside = _descendants(launched)
        if repl.isolation is not None and repl.isolation.pid_namespace:
            assert any("python" in p.name() for p in inside), inside
        spin = await repl.execute("while True:\n    pass")  # killed from outside by the wall-clock limit
        assert spin.timed_out
        assert _all_gone([psutil.Process(launched), *inside] if psutil.pid_exists(launched) else inside, 5.0)
        replacement = repl.pid
        assert replacement is not None and replacement != launched
        survivors = _descendants(replacement)
        await repl.close()
        assert _all_gone(survivors, 5.0), "a worker outlived close()"


_HOST = """
import asyncio, sys
from rlm_integrations.repl import LocalREPL
async def main():
    repl = LocalREPL(policy="unrestricted", pool=False, cell_timeout_s=None)
    await repl.start()
    print(repl.pid, flush=True)
    await repl.execute("while True:\\n    pass")
asyncio.run(main())
"""


def test_a_worker_whose_host_dies_mid_cell_exits() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(PROJECT), "RLM_REPL_POOL_SIZE": "0"}
    with subprocess.Popen([sys.executable, "-c", _HOST], stdout=subprocess.PIPE, text=True, env=env) as host:
        try:
            assert host.stdout is not None
            launched = int(host.stdout.readline())
            time.sleep(1.0)  # the cell is spinning now
            workers = [p for p in _descendants(launched) if "python" in p.name()] or [psutil.Process(launched)]
            host.send_signal(signal.SIGKILL)
            host.wait()
            assert _all_gone(workers, 5.0), "the worker kept running after its host died"
        finally:
            host.kill()


# -- inside the Modal stand-in: no bubblewrap, the worker's own lockdown -----------------------------


async def test_the_lockdown_holds_under_the_sandbox_supervisor() -> None:
    backend = StandInBackend()
    try:
        async with ModalREPL(backend=backend, policy="unrestricted", cell_timeout_s=20.0) as repl:
            await repl.execute("1")
            outcome = await _in_worker(repl, "pid = os.fork()\nif pid == 0:\n    os._exit(0)")
            assert outcome.startswith("stopped PermissionError"), outcome
            outcome = await _in_worker(repl, "resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))")
            assert outcome.startswith("stopped "), outcome
            status = await repl.execute("open('/proc/self/status').read()")
            text = ast.literal_eval(status.value or "''")
            assert "NoNewPrivs:\t1" in text and "Seccomp:\t2" in text and "CapEff:\t0000000000000000" in text
    finally:
        for sandbox in backend.created:
            sandbox.terminate()


# -- reporting a missing seccomp layer ---------------------------------------------------------------


def test_a_missing_seccomp_binding_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_integrations.repl.worker import lockdown as _lockdown

    def no_module(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(_lockdown, "importlib", types.SimpleNamespace(import_module=no_module))
    state = _lockdown.Lockdown()
    assert _lockdown._load_pyseccomp(state) is None
    assert state.problems == [
        "seccomp: pyseccomp is not installed (No module named 'pyseccomp'); pip install pyseccomp"
    ]


def test_isolation_names_each_missing_layer_from_the_workers_report() -> None:
    from rlm_integrations.repl.local.isolation import Launch, describe

    ready = {
        "op": "ready",
        "pid": 7,
        "network_isolated": True,
        "isolation": {
            "uid": 0,
            "user_namespace": False,
            "capabilities": 0x3FF,
            "no_new_privs": True,
            "seccomp": False,
            "hard_rlimits": True,
            "problems": ["seccomp: libseccomp could not be loaded (x); apt-get install libseccomp2"],
        },
    }
    launch = Launch(
        ["python"], sandboxed=False, reason="bubblewrap (bwrap) is not installed", fix="apt-get install bubblewrap"
    )
    isolation = describe(ready, launch)
    assert not isolation.complete and not isolation.unprivileged and not isolation.seccomp
    layers = {line.split(":", 1)[0] for line in isolation.missing}
    assert layers == {
        "mount_namespace",
        "pid_namespace",
        "ipc_namespace",
        "uts_namespace",
        "user_namespace",
        "unprivileged",
        "seccomp",
    }
    assert any("apt-get install libseccomp2" in line for line in isolation.missing)
    # A report with the wrong types never counts as a layer in force.
    forged = describe({"op": "ready", "network_isolated": "yes", "isolation": {"seccomp": 1, "uid": "0"}}, launch)
    assert not forged.seccomp and not forged.network_namespace and forged.uid is None
