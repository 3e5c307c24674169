"""The worker's own lockdown: what it does to itself before any cell can run.

This half of the OS wall needs no launcher, so it holds in every place the worker runs:
inside bubblewrap on this machine, started plainly when bubblewrap is missing, and under
the supervisor inside a Modal sandbox. In order:

1. load the seccomp binding (pyseccomp, a ctypes binding to libseccomp) while loading
   a library is still allowed;
2. set ``no_new_privs`` (no execve can grant privileges again);
3. drop every capability (effective, permitted, inheritable, ambient, bounding), so a
   worker that still runs as root, or holds the full set a fresh user namespace gives,
   keeps none of them;
4. make the static resource limits hard (soft == hard): no file writes
   (``RLIMIT_FSIZE`` 0), no core files, few descriptors, few processes;
5. install a seccomp filter: everything is allowed except the system calls that create
   processes (threads still work), exec programs, trace or read other processes, signal
   anyone but the worker itself, raise limits, mount, change namespaces, load kernel
   code, open sockets other than ``AF_UNIX``, or otherwise reach past the process.

The address-space limit depends on the context the host loads, so it is set hard by
`limit_address_space` before the first cell; a second seccomp filter then forbids
every limit change, including that one.

Standard library and pyseccomp only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import importlib
import os
import resource
import signal
import sys
from types import ModuleType
from typing import Any

__all__ = ["Lockdown", "address_space_locked", "limit_address_space", "lock_down"]

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CLONE_THREAD = 0x00010000
# CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET
_CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
_AF_UNIX = 1
_MAX_FILES = 64
_MAX_PROCESSES = 32

_DENIED: tuple[str, ...] = (
    # new processes and programs (threads go through `clone`, filtered below)
    "fork",
    "vfork",
    "execve",
    "execveat",
    # other processes
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "process_mrelease",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "tkill",
    "kcmp",
    # identity and privileges
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
    "personality",
    # file systems and namespaces
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "quotactl",
    "swapon",
    "swapoff",
    # the kernel itself
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "acct",
    "syslog",
    "iopl",
    "ioperm",
    "keyctl",
    "add_key",
    "request_key",
    "lookup_dcookie",
    "vhangup",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    # System V IPC and POSIX message queues: memory that outlives every mapping, so no
    # RLIMIT_AS counts it (a worker held 768 MiB of detached shared memory in 92 MiB of address space)
    "shmget",
    "shmat",
    "shmctl",
    "msgget",
    "msgsnd",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "mq_open",
    "mq_timedsend",
    # io_uring runs system calls the filter would never see
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
"""System calls refused outright (EPERM)."""


class Lockdown:
    """What the lockdown put in force, reported to the host in the worker's ``ready`` message."""

    def __init__(self) -> None:
        self.no_new_privs = False
        self.capabilities_dropped = False
        self.hard_rlimits = False
        self.seccomp = False
        self.address_space_limited = False
        self.problems: list[str] = []
        self._seccomp: ModuleType | None = None

    def report(self) -> dict[str, Any]:
        """The facts, read back from the kernel where it can tell."""
        status = _proc_status()
        return {
            "uid": os.getuid(),
            "user_namespace": _in_child_user_namespace(),
            "capabilities": int(status.get("CapEff", "0"), 16) if "CapEff" in status else None,
            "no_new_privs": status.get("NoNewPrivs") == "1" if status else self.no_new_privs,
            "seccomp": self.seccomp and (status.get("Seccomp") == "2" if status else True),
            "hard_rlimits": self.hard_rlimits,
            "problems": list(self.problems),
        }


_STATE = Lockdown()


def lock_down() -> Lockdown:
    """Lock this process down (see the module docstring); failures are recorded, never raised."""
    state = _STATE
    if not sys.platform.startswith("linux"):
        state.problems.append(f"no_new_privs, seccomp: not available on {sys.platform}")
        _set_static_limits(state)
        return state
    libc = _libc()
    state._seccomp = _load_pyseccomp(state)
    if libc is not None and libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        state.no_new_privs = True
    else:
        state.problems.append("no_new_privs: prctl(PR_SET_NO_NEW_PRIVS) failed")
    state.capabilities_dropped = _drop_capabilities(libc)
    _set_static_limits(state)
    if state._seccomp is not None:
        try:
            _install_filter(state._seccomp, _base_rules, state)
            state.seccomp = True
        except OSError as error:
            state.problems.append(f"seccomp: the kernel refused the filter ({error})")
    return state


def limit_address_space(limit_bytes: int) -> None:
    """Set the address-space limit, hard, once; then forbid every further limit change and new threads."""
    state = _STATE
    if state.address_space_limited:
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    state.address_space_limited = True
    if state.seccomp and state._seccomp is not None:
        try:
            _install_filter(state._seccomp, _sealed_for_cells, state)
        except OSError as error:
            state.problems.append(f"seccomp: the second filter was refused ({error})")


def address_space_locked() -> bool:
    """True once `limit_address_space` has run (the limit can no longer move)."""
    return _STATE.address_space_limited


# -- the pieces ---------------------------------------------------------------------------------


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _load_pyseccomp(state: Lockdown) -> ModuleType | None:
    """Import pyseccomp without the subprocesses `ctypes.util.find_library` would start."""
    known = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}
    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        soname = known.get(name)
        if soname is not None:
            with contextlib.suppress(OSError):
                ctypes.CDLL(soname)
                return soname
        return original(name)

    ctypes.util.find_library = find_library
    try:
        return importlib.import_module("pyseccomp")
    except ImportError as error:
        state.problems.append(f"seccomp: pyseccomp is not installed ({error}); pip install pyseccomp")
    except (OSError, RuntimeError) as error:
        state.problems.append(f"seccomp: libseccomp could not be loaded ({error}); apt-get install libseccomp2")
    finally:
        ctypes.util.find_library = original
    return None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities(libc: Any) -> bool:
    """Empty every capability set this process holds. True if none is left in effect."""
    if libc is None:
        return False
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            last = int(file.read())
    except (OSError, ValueError):
        last = 40
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for capability in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # needs CAP_SETPCAP; harmless without
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    libc.capset(ctypes.byref(header), data)
    return int(_proc_status().get("CapEff", "1"), 16) == 0


def _set_static_limits(state: Lockdown) -> None:
    """Every limit but the address space, hard (soft == hard)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    wanted = {
        resource.RLIMIT_FSIZE: 0,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NOFILE: _MAX_FILES,
        resource.RLIMIT_NPROC: _MAX_PROCESSES,
    }
    hard_everywhere = True
    for limit, value in wanted.items():
        _, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            hard_everywhere = False
    if not hard_everywhere:
        state.problems.append("hard_rlimits: the kernel refused a limit")
    state.hard_rlimits = hard_everywhere


def _base_rules(seccomp: ModuleType, rule: Any) -> None:
    eperm = seccomp.ERRNO(errno.EPERM)
    arg, ne, masked_eq = seccomp.Arg, seccomp.NE, seccomp.MASKED_EQ
    me = os.getpid()
    for name in _DENIED:
        rule(eperm, name)
    # Threads keep working (CLONE_THREAD); processes and namespaces do not.
    rule(eperm, "clone", arg(0, masked_eq, _CLONE_THREAD, 0))
    for flag in _CLONE_NAMESPACE_FLAGS:
        rule(eperm, "clone", arg(0, masked_eq, flag, flag))
    rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # glibc then falls back to clone, filtered above
    # Signals only to this process.
    rule(eperm, "kill", arg(0, ne, me))
    rule(eperm, "tgkill", arg(0, ne, me))
    rule(eperm, "rt_sigqueueinfo", arg(0, ne, me))
    rule(eperm, "rt_tgsigqueueinfo", arg(0, ne, me))
    # Limits: read freely; write only the address space (set once, hard, before the first cell).
    rule(eperm, "setrlimit", arg(0, ne, resource.RLIMIT_AS))
    rule(eperm, "prlimit64", arg(2, ne, 0), arg(1, ne, resource.RLIMIT_AS))
    rule(eperm, "prlimit64", arg(2, ne, 0), arg(0, ne, 0))  # another process's limits
    # Sockets: local pairs only (the protocol never needs one; the network namespace covers the rest).
    rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", arg(0, ne, _AF_UNIX))
    rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socketpair", arg(0, ne, _AF_UNIX))


def _sealed_for_cells(seccomp: ModuleType, rule: Any) -> None:
    """What no cell may do: change a limit, or start a thread.

    The worker's own threads (the parent watchdog) run before the first cell, and cells have
    no use for threads (host callbacks are answered by the host). Threads must be refused
    here because RLIMIT_NPROC does not bind a sandbox uid that maps to host root: without
    this rule one cell could start thousands of threads, each a pid on the host.
    """
    eperm = seccomp.ERRNO(errno.EPERM)
    rule(eperm, "setrlimit")
    rule(eperm, "prlimit64", seccomp.Arg(2, seccomp.NE, 0))
    rule(eperm, "clone")
    rule(seccomp.ERRNO(errno.ENOSYS), "clone3")


def _install_filter(seccomp: ModuleType, rules: Any, state: Lockdown) -> None:
    """Build a default-allow filter from `rules` and load it into every thread of the process.

    System calls from another ABI (x32, i386 on x86-64) kill the whole process. (libseccomp's
    default kills only the calling thread, which left the worker alive with its cell never
    answering: a hang until the host's clock, forever with ``cell_timeout_s=None``.)
    """
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    flt.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # the parent watchdog thread already runs

    def rule(action: int, name: str, *args: Any) -> None:
        try:
            flt.add_rule(action, name, *args)
        except ValueError:
            pass  # a system call this architecture does not have
        except OSError as error:
            state.problems.append(f"seccomp: the rule for {name} was refused ({error})")

    rules(seccomp, rule)
    flt.load()


def _proc_status() -> dict[str, str]:
    try:
        with open("/proc/self/status") as file:
            lines = file.read().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _in_child_user_namespace() -> bool | None:
    """True when this process's uids are mapped (it is not in the initial user namespace)."""
    try:
        with open("/proc/self/uid_map") as file:
            mapping = file.read().split()
    except OSError:
        return None
    return mapping != ["0", "0", "4294967295"]
