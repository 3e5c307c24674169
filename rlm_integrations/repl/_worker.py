"""The worker process: runs cells for one REPL and speaks JSON lines with the host.

Started by the host as ``python -I -B -c <bootstrap>`` with an empty environment in a
scratch directory. Before it reports ready it:

- moves the protocol onto duplicated file descriptors and points fds 0 and 1 at
  /dev/null, so nothing user code writes can corrupt the protocol;
- drops network access where the OS allows it (a new network namespace);
- locks itself down (`_lockdown`): no_new_privs, no capabilities, hard limits (no file
  writes, no core files, few descriptors and processes), a seccomp filter (no new
  processes or programs, no signals to others, no limit changes, no mounts or
  namespaces, no sockets but AF_UNIX), and before the first cell a hard address-space
  limit sized from the loaded context;
- watches its parent and exits if the host goes away.

Messages (one JSON object per line; ``op`` names the kind):
host -> worker: configure, define, load, exec, get, callback_result, shutdown
worker -> host: ready, ok, result, value, callback, error

Standard library and RestrictedPython only.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import sys
import threading
import time
from typing import IO, Any

from rlm_integrations.repl._codec import encode_value
from rlm_integrations.repl._lockdown import address_space_locked, limit_address_space, lock_down
from rlm_integrations.repl._notebook import Notebook

__all__ = ["main"]

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_EXIT_PROTOCOL_BROKEN = 70
_EXIT_ORPHANED = 71
_EXIT_OUT_OF_MEMORY = 72
_ALLOWED_CALLBACK_ERRORS = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "TimeoutError": TimeoutError,
    "RuntimeError": RuntimeError,
}


class _Protocol:
    """JSON lines over the duplicated descriptors."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._reader = reader
        self._writer = writer

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        self._writer.write(data + b"\n")
        self._writer.flush()

    def receive(self) -> dict[str, Any] | None:
        line = self._reader.readline()
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message


def _take_protocol_descriptors() -> _Protocol:
    reader = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    writer = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    return _Protocol(reader, writer)


def _isolate_network() -> bool:
    """Enter a fresh network namespace (no interfaces but a down loopback). True on success."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    # A user namespace first, even for root: inside it the worker has no capabilities over
    # the host (it cannot read the host's /proc/<pid>/environ or raise its hard limits).
    for flags in (_CLONE_NEWUSER | _CLONE_NEWNET, _CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True
    return False


def _launch_settings() -> dict[str, Any]:
    """What the launcher tells the worker (``argv[1]``, JSON): e.g. that its network is already private."""
    if len(sys.argv) < 2:
        return {}
    try:
        settings = json.loads(sys.argv[1])
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def _watch_parent(hangup_fd: int) -> None:
    """Exit when the host is gone, even in the middle of a cell.

    Two signs, because neither works everywhere: the parent changes (not inside a PID
    namespace, where the parent is the sandbox's own init), and the host's end of the
    protocol pipe closes (``hangup_fd`` is a duplicate of its read end).
    """
    parent = os.getppid()
    poller = select.poll()
    poller.register(hangup_fd, 0)  # POLLHUP and POLLERR are always reported

    def watch() -> None:
        while True:
            if poller.poll(500) or os.getppid() != parent:
                os._exit(_EXIT_ORPHANED)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _address_space_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        pages = int(statm.read().split()[0])
    return pages * resource.getpagesize()


class Worker:
    """Serves one host: a notebook plus the protocol loop around it."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol
        self._notebook: Notebook | None = None
        self._memory_limit_mb: int | None = None
        self._memory_limited = False
        self._loaded_bytes = 0
        self._restricted = True

    # -- callbacks into the host --------------------------------------------------------------
    def _call_host(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            self._protocol.send({"op": "callback", "name": name, "args": list(args), "kwargs": kwargs})
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{name}() arguments must be JSON-compatible (str, numbers, lists, dicts): {error}"
            ) from None
        reply = self._protocol.receive()
        notebook = self._notebook
        if notebook is not None:
            notebook.callback_seconds += time.perf_counter() - started
        if reply is None:
            os._exit(_EXIT_PROTOCOL_BROKEN)
        if reply.get("ok"):
            return reply.get("value")
        error_class = _ALLOWED_CALLBACK_ERRORS.get(reply.get("error_type", ""), RuntimeError)
        raise error_class(reply.get("error") or f"{name}() failed")

    # -- message handlers -------------------------------------------------------------------
    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "configure":
            self._notebook = Notebook(
                restricted=message.get("policy", "restricted") == "restricted",
                max_output_chars=int(message.get("max_output_chars", 10_000)),
                call_host=self._call_host,
            )
            self._memory_limit_mb = message.get("memory_limit_mb")
            self._restricted = message.get("policy", "restricted") == "restricted"
            return {"op": "ok"}
        notebook = self._notebook
        if notebook is None:
            return {"op": "error", "error": "worker not configured"}
        if op == "define":
            for name in message["names"]:
                notebook.define_callback(name)
            return {"op": "ok"}
        if op == "load":
            notebook.namespace[message["name"]] = self._read_value(message)
            return {"op": "ok", "variables": notebook.variables()}
        if op == "exec":
            self._apply_memory_limit()
            self._set_cpu_limit(message.get("cpu_limit_s"))
            return notebook.run(message["code"])
        if op == "get":
            name = message["name"]
            if name not in notebook.namespace or name not in notebook.variables():
                return {"op": "error", "error": f"no variable named {name!r}"}
            return {"op": "value", **encode_value(notebook.namespace[name])}
        if op == "variables":
            return {"op": "ok", "variables": notebook.variables()}
        return {"op": "error", "error": f"unknown op {op!r}"}

    def _read_value(self, message: dict[str, Any]) -> Any:
        size = os.path.getsize(message["path"])
        self._make_room(3 * size)
        with open(message["path"], "rb") as source:
            data = source.read()
        kind = message["format"]
        if kind == "bytes":
            value: Any = data
        elif kind == "str":
            value = data.decode("utf-8", "surrogatepass")
        else:
            value = json.loads(data)
        del data
        self._loaded_bytes += size
        if self._memory_limited:
            self._memory_limited = False
            self._apply_memory_limit()
        return value

    def _limit_bytes(self) -> int:
        budget_mb = self._memory_limit_mb if self._memory_limit_mb is not None else 2048
        # Room for the loaded context: code that splits or copies it needs a few times its size.
        return _address_space_bytes() + budget_mb * 1024 * 1024 + 2 * self._loaded_bytes

    def _make_room(self, extra: int) -> None:
        """Before a host-driven load: refuse, clearly, a value that cannot fit under the hard limit.

        Before the first cell there is no address-space limit yet (it is sized then, with
        room for what was loaded); after it, the limit is hard and no load can lift it.
        """
        if not address_space_locked():
            return
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        needed = _address_space_bytes() + extra
        if hard != resource.RLIM_INFINITY and needed > hard:
            raise ValueError(
                f"the value needs about {extra // (1024 * 1024)} MiB of working memory, more than is left under "
                f"the worker's hard memory limit ({hard // (1024 * 1024)} MiB, fixed when the first cell ran); "
                "load large values before running cells, or raise memory_limit_mb"
            )

    def _apply_memory_limit(self) -> None:
        """Limit the address space, hard, before user code runs; after that no limit can change."""
        if self._memory_limited:
            return
        self._memory_limited = True
        limit_address_space(self._limit_bytes())

    @staticmethod
    def _set_cpu_limit(seconds: float | None) -> None:
        """Nothing: the worker can no longer change its limits once locked down.

        A per-cell RLIMIT_CPU would need the worker to raise its own soft limit before each
        cell, which is the very change the lockdown forbids. The cell's wall-clock limit,
        enforced from outside by killing the worker (the host locally, the supervisor in a
        sandbox), is the time limit.
        """
        del seconds

    def serve(self) -> None:
        while True:
            try:
                message = self._protocol.receive()
            except MemoryError:
                # The namespace holds so much that not even a request fits: exit, so the host
                # restarts a fresh worker and reports which variables were lost.
                os._exit(_EXIT_OUT_OF_MEMORY)
            if message is None or message.get("op") == "shutdown":
                return
            try:
                reply = self.handle(message)
            except MemoryError:
                os._exit(_EXIT_OUT_OF_MEMORY)
            except Exception as error:
                reply = {"op": "error", "error": f"{type(error).__name__}: {error}"}
            try:
                self._protocol.send(reply)
            except MemoryError:
                try:
                    self._protocol.send({"op": "error", "error": "result too large for the worker's memory limit"})
                except MemoryError:
                    os._exit(_EXIT_PROTOCOL_BROKEN)


def main() -> None:
    """Entry point of the worker process."""
    settings = _launch_settings()
    hangup_fd = os.dup(0)
    protocol = _take_protocol_descriptors()
    isolated = bool(settings.get("network_private")) or _isolate_network()
    lockdown = lock_down()
    _watch_parent(hangup_fd)
    import RestrictedPython  # noqa: F401 - warm the import before reporting ready

    protocol.send({"op": "ready", "pid": os.getpid(), "network_isolated": isolated, "isolation": lockdown.report()})
    try:
        Worker(protocol).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass
    os._exit(0)
