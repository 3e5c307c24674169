"""The host's half of the OS wall: starting the worker inside bubblewrap, and reporting what holds.

When `bwrap` works on this machine, each worker starts in its own user, mount, PID,
IPC, UTS, network (and, where the kernel has it, cgroup) namespaces, as uid 65534 with
no capabilities, in a file-system view that holds only what Python needs, read-only:
``/usr`` (and the ``/lib*`` links), the interpreter's own prefix, this package,
RestrictedPython and pyseccomp at ``/opt/rlm/lib``, plus the worker's scratch directory
(writable, though the worker's file-size limit is 0) and its staging directory
(read-only, where `load` puts values). Nothing else of the host is there: not the
project checkout, not the virtual environment, not ``/etc`` or ``/root`` or ``/home``.

The worker locks itself down further either way (`_lockdown`), and tells the host what
it put in force; `describe` joins both halves into an `Isolation`.

``RLM_BWRAP`` in the environment names the bubblewrap binary to use; ``none`` turns the
launcher off (the worker then starts plainly and reports what is missing).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from rlm_integrations.repl._supervisor import _BOOTSTRAP, _import_packages, _import_roots

__all__ = ["Isolation", "Launch", "describe", "plan_launch", "warn_if_incomplete"]

logger = logging.getLogger("rlm_integrations.repl")

SANDBOX_UID = 65534
SANDBOX_LIB = "/opt/rlm/lib"
_PROBE_TIMEOUT_S = 10.0
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


_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str, python: str) -> tuple[bool, str]:
    """Run the interpreter once inside the same namespaces and view; (works, why not)."""
    command = [*_bwrap_prefix(bwrap, python, [], None, None), python, "-I", "-S", "-B", "-c", "pass"]
    try:
        done = subprocess.run(command, capture_output=True, env={}, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"{type(error).__name__}: {error}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return False, said[-1] if said else f"bwrap exited with code {done.returncode}"
    return True, ""


def plan_launch(python: str | None, scratch: str, stage: str) -> Launch:
    """The command that starts one worker: inside bubblewrap when it works here, plainly otherwise."""
    interpreter = os.path.realpath(python or sys.executable)
    bwrap, reason, fix = _bwrap_binary()
    if bwrap is not None:
        with _probe_lock:
            works, why = _probe(bwrap, interpreter)
        if works:
            packages = _import_packages()
            bootstrap = _BOOTSTRAP.format(roots=[SANDBOX_LIB])
            command = _bwrap_prefix(bwrap, interpreter, packages, scratch, stage)
            command += [interpreter, "-I", "-S", "-B", "-c", bootstrap, json.dumps({"network_private": True})]
            return Launch(command, sandboxed=True)
        reason = f"bubblewrap cannot create the sandbox here ({why})"
        fix = _USERNS_FIX
    plain = [python or sys.executable, "-I", "-B", "-c", _BOOTSTRAP.format(roots=_import_roots())]
    return Launch(plain, sandboxed=False, reason=reason, fix=fix)


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
        target = f"{SANDBOX_LIB}/{name}" if os.path.isdir(path) else f"{SANDBOX_LIB}/{os.path.basename(path)}"
        args += ["--ro-bind", path, target]
    if stage is not None:
        args += ["--ro-bind", stage, stage]
    if scratch is not None:
        args += ["--bind", scratch, scratch, "--chdir", scratch]
    args += ["--remount-ro", "/"]
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
