"""The worker process: runs cells for one REPL and speaks JSON lines with the host.

Started by the host as ``python -I -B -c <bootstrap>`` with an empty environment in a
scratch directory. Before it reports ready it:

- moves the protocol onto duplicated file descriptors and points fds 0 and 1 at
  /dev/null, so nothing user code writes can corrupt the protocol;
- drops network access where the OS allows it (a new network namespace);
- sets its own limits: no file writes (RLIMIT_FSIZE=0, SIGXFSZ ignored so a write fails
  instead of killing), no core files, few file descriptors, no new processes where the
  kernel honours RLIMIT_NPROC, and later an address-space limit (applied before the
  first cell, sized from the loaded context) and a per-cell CPU-time limit;
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
import signal
import sys
import threading
import time
from typing import IO, Any

from rlm_integrations.repl._codec import encode_value
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


def _set_static_limits() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = 64 if hard_files == resource.RLIM_INFINITY else min(64, hard_files)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


def _forbid_new_processes() -> None:
    # Honoured by the kernel for unprivileged users only; root ignores it (see docs/security.md).
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass


def _watch_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
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
        """Before a host-driven load, lift the soft limit so the load itself fits."""
        if not self._memory_limited:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        wanted = _address_space_bytes() + extra + 64 * 1024 * 1024
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(
                resource.RLIMIT_AS, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
            )

    def _apply_memory_limit(self) -> None:
        """Limit the address space before user code runs.

        Restricted cells cannot reach `resource`, so only the soft limit is set and later
        loads can lift it; unrestricted cells could, so there the limit is hard as well.
        """
        if self._memory_limited:
            return
        self._memory_limited = True
        limit = self._limit_bytes()
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard if self._restricted else limit))

    @staticmethod
    def _set_cpu_limit(seconds: float | None) -> None:
        if seconds is None:
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(used + seconds) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

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
    protocol = _take_protocol_descriptors()
    isolated = _isolate_network()
    _set_static_limits()
    _watch_parent()
    _forbid_new_processes()
    import RestrictedPython  # noqa: F401 - warm the import before reporting ready

    protocol.send({"op": "ready", "pid": os.getpid(), "network_isolated": isolated})
    try:
        Worker(protocol).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass
    os._exit(0)
