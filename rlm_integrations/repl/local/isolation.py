"""The host's half of the OS wall: starting the worker inside bubblewrap, and reporting what holds.

When `bwrap` works on this machine, each worker starts in its own user, mount, PID,
IPC, UTS, network (and, where the kernel has it, cgroup) namespaces, as uid 65534 with
no capabilities, in a file-system view that holds only what Python needs, read-only:
``/usr`` (and the ``/lib*`` links), the interpreter's own prefix, this package,
RestrictedPython and pyseccomp at ``/opt/rlm/lib``, plus the worker's scratch directory
(its working directory) and its staging directory (where `load` puts values), both
read-only, and a private ``/proc`` and ``/dev``, also read-only. Nothing else of the host is there: not the
project checkout, not the virtual environment, not ``/etc`` or ``/root`` or ``/home``.

The worker locks itself down further either way (`worker.lockdown`), and tells the host what
it put in force; `describe` joins both halves into an `Isolation`.

``RLM_BWRAP`` in the environment names the bubblewrap binary to use; ``none`` turns the
launcher off (the worker then starts plainly and reports what is missing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import py_compile
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from rlm_integrations.repl.worker.supervisor import BOOTSTRAP, WORKER_MODULES, import_packages, worker_command

__all__ = ["Isolation", "Launch", "describe", "plan_launch", "record_refusal", "warn_if_incomplete"]

logger = logging.getLogger("rlm_integrations.repl")

SANDBOX_UID = 65534
SANDBOX_LIB = "/opt/rlm/lib"
_INSTALL_FIX = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
_USERNS_FIX = (
    "allow unprivileged user namespaces (sysctl user.max_user_namespaces=15000; on Debian "
    "kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0), "
    "or run inside a container that permits them"
)


@dataclasses.dataclass(frozen=True)
class Isolation:
    """What the OS wall holds for one worker, layer by layer (see docs/security.md).

    Each flag is True only when that layer is in force for the running worker, as the
    worker read it back from the kernel or as the launcher set it up.

    Attributes:
        launcher: ``"bubblewrap"`` when the worker was started inside bubblewrap, else ``"none"``.
        user_namespace: the worker runs in its own user namespace.
        unprivileged: the worker's uid is not 0 and it holds no effective capabilities.
        uid: the worker's uid as it sees it (65534 inside bubblewrap).
        mount_namespace: a private mount namespace with the minimal read-only file-system view.
        pid_namespace: the worker sees (and can signal) only its own sandbox's processes.
        ipc_namespace: no System V IPC or POSIX message queues shared with the host.
        uts_namespace: its own host name.
        network_namespace: no network but its own loopback.
        no_new_privs: no exec can ever grant privileges again.
        seccomp: the system-call filter is loaded (no processes, exec, ptrace, mounts,
            namespaces, limit changes, signals to others, or sockets other than AF_UNIX).
        hard_rlimits: the resource limits are hard (soft == hard); the address space is
            added, also hard, before the first cell.
        missing: one line per layer that is not in force: what, why, and how to fix it.
    """

    launcher: str
    user_namespace: bool
    unprivileged: bool
    uid: int | None
    mount_namespace: bool
    pid_namespace: bool
    ipc_namespace: bool
    uts_namespace: bool
    network_namespace: bool
    no_new_privs: bool
    seccomp: bool
    hard_rlimits: bool
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when every layer is in force."""
        return not self.missing


@dataclasses.dataclass(frozen=True)
class Launch:
    """How one worker is started: the command, and why bubblewrap is not in it (if it is not)."""

    command: list[str]
    sandboxed: bool
    reason: str = ""
    fix: str = ""
    key: tuple[str, str] | None = None


# -- finding bubblewrap ---------------------------------------------------------------------------


def _bwrap_binary() -> tuple[str | None, str, str]:
    """The bwrap binary to use, or None with the reason and the fix."""
    configured = os.environ.get("RLM_BWRAP")
    if configured is not None:
        if configured.strip().lower() in ("", "none", "0", "off"):
            return None, "bubblewrap is turned off (RLM_BWRAP=none)", "unset RLM_BWRAP"
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured, "", ""
        return None, f"RLM_BWRAP names {configured!r}, which is not an executable file", _INSTALL_FIX
    if not sys.platform.startswith("linux"):
        return None, f"bubblewrap needs Linux (this is {sys.platform})", "run on Linux, or use ModalREPL"
    found = shutil.which("bwrap") or next(
        (path for path in ("/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap") if os.access(path, os.X_OK)), None
    )
    if found is None:
        return None, "bubblewrap (bwrap) is not installed", _INSTALL_FIX
    return found, "", ""


_refused: dict[tuple[str, str], str] = {}
_refused_lock = threading.Lock()


def plan_launch(python: str | None, scratch: str, stage: str) -> Launch:
    """The command that starts one worker: inside bubblewrap unless it is missing or refused here.

    Nothing is probed in advance (that would cost every process a sandbox start): when
    bubblewrap itself fails to set the sandbox up, the caller reports it with
    `record_refusal` and starts the worker again, plainly.
    """
    interpreter = os.path.realpath(python or sys.executable)
    _compile_worker_once()
    bwrap, reason, fix = _bwrap_binary()
    if bwrap is not None:
        key = (bwrap, interpreter)
        with _refused_lock:
            refused = _refused.get(key)
        if refused is None:
            bootstrap = BOOTSTRAP.format(roots=[SANDBOX_LIB])
            command = _bwrap_prefix(bwrap, interpreter, import_packages(), scratch, stage)
            command += [interpreter, "-I", "-S", "-B", "-c", bootstrap, json.dumps({"network_private": True})]
            return Launch(command, sandboxed=True, key=key)
        reason = f"bubblewrap cannot create the sandbox here ({refused})"
        fix = _USERNS_FIX
    plain = worker_command(python)
    return Launch(plain, sandboxed=False, reason=reason, fix=fix)


_compiled = False
_compiled_lock = threading.Lock()


def _compile_worker_once() -> None:
    """Write the worker modules' bytecode once, so no worker compiles them (it runs with -B).

    The host imports only some of them itself; without this, every worker start would
    compile the policy and notebook modules from source.
    """
    global _compiled
    with _compiled_lock:
        if _compiled:
            return
        _compiled = True
    root = Path(__file__).resolve().parents[2]
    for name in WORKER_MODULES:
        source = str(root / name)
        with contextlib.suppress(OSError, ValueError, py_compile.PyCompileError):
            cached = importlib.util.cache_from_source(source)
            if not os.path.exists(cached) or os.stat(cached).st_mtime < os.stat(source).st_mtime:
                py_compile.compile(source, cfile=cached, doraise=True)


def record_refusal(launch: Launch, stderr: str) -> bool:
    """Remember that bubblewrap refused to start `launch` (for this process); True if it did.

    Only bubblewrap's own complaint counts (a line starting ``bwrap:``): a worker that
    crashed inside a working sandbox never turns the sandbox off.
    """
    said = [line for line in stderr.splitlines() if line.startswith("bwrap:")]
    if not launch.sandboxed or launch.key is None or not said:
        return False
    with _refused_lock:
        _refused[launch.key] = said[-1]
    return True


def _interpreter_prefix(interpreter: str) -> str:
    if os.path.realpath(sys.executable) == interpreter:
        return os.path.realpath(sys.base_prefix)
    return str(Path(interpreter).parents[1])


def _bwrap_prefix(
    bwrap: str, interpreter: str, packages: list[tuple[str, str]], scratch: str | None, stage: str | None
) -> list[str]:
    """The bwrap command and its options, up to (not including) the command to run inside."""
    args = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--cap-drop",
        "ALL",
        "--hostname",
        "rlm-worker",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    prefix = _interpreter_prefix(interpreter)
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    args += ["--ro-bind-try", "/etc/localtime", "/etc/localtime"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for name, path in packages:
        if os.path.isdir(path):
            args += ["--ro-bind", path, f"{SANDBOX_LIB}/{name}"]
            continue
        args += ["--ro-bind", path, f"{SANDBOX_LIB}/{os.path.basename(path)}"]
        cached = importlib.util.cache_from_source(path)  # a single-file module's bytecode sits beside it
        if os.path.isfile(cached):
            args += ["--ro-bind", cached, f"{SANDBOX_LIB}/__pycache__/{os.path.basename(cached)}"]
    if stage is not None:
        args += ["--ro-bind", stage, stage]
    if scratch is not None:
        # Read-only too: with RLIMIT_FSIZE at 0 no file could hold a byte, but directories and
        # symbolic links are not files, and they would fill the host's disk (round 2 of the red team).
        args += ["--ro-bind", scratch, scratch, "--chdir", scratch]
    # The whole view read-only, /proc and /dev included. Inside, uid 65534 is the host user who
    # started the worker: when that is root, the kernel grants it the owner's write access to every
    # file in /proc/sys (core_pattern, ...) and bubblewrap's init's /proc/1/mem is writable (its
    # own uid, and it has no seccomp filter). A read-only /proc refuses every such write.
    args += ["--remount-ro", "/proc", "--remount-ro", "/dev", "--remount-ro", "/"]
    return args


# -- what holds ----------------------------------------------------------------------------------


def describe(info: dict[str, Any], launch: Launch) -> Isolation:
    """Join what the launcher set up with what the worker reported in its ``ready`` message."""
    report = info.get("isolation")
    if not isinstance(report, dict):
        report = {}
    raw_problems = report.get("problems")
    problems = [p for p in raw_problems if isinstance(p, str)] if isinstance(raw_problems, list) else []
    missing: list[str] = []
    sandboxed = launch.sandboxed
    if not sandboxed:
        for layer in ("mount_namespace", "pid_namespace", "ipc_namespace", "uts_namespace"):
            missing.append(f"{layer}: {launch.reason}; fix: {launch.fix}")
    user_namespace = report.get("user_namespace") is True
    if not user_namespace:
        missing.append(f"user_namespace: the worker shares the host's user namespace; fix: {_INSTALL_FIX}")
    uid = report.get("uid") if type(report.get("uid")) is int else None
    capabilities = report.get("capabilities") if type(report.get("capabilities")) is int else None
    unprivileged = uid is not None and uid != 0 and capabilities == 0
    if not unprivileged:
        missing.append(
            f"unprivileged: the worker runs as uid {uid} with capabilities {capabilities!r}; fix: {_INSTALL_FIX}"
        )
    elif not sandboxed and os.geteuid() == 0:
        # Started plainly by root, the worker's own user namespace maps no uid: it *reads* 65534
        # (the overflow uid), but the kernel still sees host root, owner of /proc/sys and of
        # every root-owned file (red-team round 2: it wrote kernel.core_pattern).
        unprivileged = False
        missing.append(
            f"unprivileged: the worker runs as host root (its uid {uid} is only the overflow uid of an "
            f"unmapped user namespace; it can write /proc/sys and root-owned files); fix: {_INSTALL_FIX}"
        )
    network = info.get("network_isolated") is True
    if not network:
        missing.append(f"network_namespace: the worker shares the host's network; fix: {_USERNS_FIX}")
    for layer in ("no_new_privs", "seccomp", "hard_rlimits"):
        if report.get(layer) is not True:
            why = "; ".join(p for p in problems if p.startswith(layer)) or "the worker did not report it"
            missing.append(f"{layer}: {why}")
    return Isolation(
        launcher="bubblewrap" if sandboxed else "none",
        user_namespace=user_namespace,
        unprivileged=unprivileged,
        uid=uid,
        mount_namespace=sandboxed,
        pid_namespace=sandboxed,
        ipc_namespace=sandboxed,
        uts_namespace=sandboxed,
        network_namespace=network,
        no_new_privs=report.get("no_new_privs") is True,
        seccomp=report.get("seccomp") is True,
        hard_rlimits=report.get("hard_rlimits") is True,
        missing=tuple(missing),
    )


_warned: set[tuple[str, ...]] = set()
_warned_lock = threading.Lock()


def warn_if_incomplete(isolation: Isolation) -> None:
    """Log a warning, once per process for each distinct set of missing layers."""
    if isolation.complete:
        return
    with _warned_lock:
        if isolation.missing in _warned:
            return
        _warned.add(isolation.missing)
    logger.warning(
        "the REPL worker's OS isolation is incomplete; these layers are NOT in force:\n  %s\n"
        "Pass LocalREPL(require_isolation=True) to refuse to run like this (see docs/security.md).",
        "\n  ".join(isolation.missing),
    )
