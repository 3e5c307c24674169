"""The worker process: runs cells for one REPL and speaks JSON lines with the host.

Started by the host as ``python -I -B -c <bootstrap>`` with an empty environment in a
scratch directory. Before it reports ready it:

- moves the protocol onto duplicated file descriptors and points fds 0 and 1 at
  /dev/null, so nothing user code writes can corrupt the protocol;
- drops network access where the OS allows it (a new network namespace);
- locks itself down (`lockdown`): no_new_privs, no capabilities, hard limits (no file
  writes, no core files, few descriptors and processes), a seccomp filter (no new
  processes or programs, no signals to others, no limit changes, no mounts or
  namespaces, no sockets but AF_UNIX), and before the first cell a hard address-space
  limit sized from the loaded context;
- watches its parent and exits if the host goes away.

Messages: one JSON object per line, defined in `wire.schema` (op names, limits, request
checks). The protocol is sealed against the cells: it reads and writes with functions
captured at start and a private JSON scanner and encoder (`wire.jsonio`); `configure` is
accepted once, before any cell; a malformed request stops the worker; host callbacks
work only while a cell runs; `get`, `load` and `variables` run no cell code except a
non-plain value's own repr (which the host bounds like a cell); values replaced by `load`
are let go at the next cell's start, under its limits.

Standard library and RestrictedPython only.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import select
import sys
import threading
import time
from typing import Any, NoReturn

from rlm_integrations.repl.wire.codec import encode_value
from rlm_integrations.repl.wire.jsonio import TooLarge, dumps, loads, plain
from rlm_integrations.repl.wire.schema import (
    CALLBACK,
    CALLBACK_RESULT,
    CONFIGURE,
    DEFAULT_MAX_CALLBACK_BYTES,
    DEFINE,
    ERROR,
    EXEC,
    GET,
    LOAD,
    MAX_MESSAGE_BYTES,
    MAX_VARIABLES,
    OK,
    READY,
    RESULT,
    SHUTDOWN,
    VALUE,
    check_request,
)
from rlm_integrations.repl.worker.lockdown import address_space_locked, limit_address_space, lock_down
from rlm_integrations.repl.worker.notebook import Notebook
from rlm_integrations.repl.worker.output import truncate_middle

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
    """JSON lines over the duplicated descriptors, sealed against the cells.

    Reads and writes go through `os.read`/`os.write` captured when the worker starts, and
    JSON through `wire.jsonio`'s private scanner and encoder: a cell that patched the `json`
    or `os` modules changes nothing here. Lines longer than `MAX_MESSAGE_BYTES` are refused.
    """

    __slots__ = ("_buffer", "_exit", "_in", "_out", "_read", "_write")

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._in = read_fd
        self._out = write_fd
        self._read = os.read
        self._write = os.write
        self._exit = os._exit
        self._buffer = bytearray()

    def send(self, message: dict[str, Any]) -> None:
        """Write one message (any exact JSON data; see `wire.jsonio.plain`)."""
        self.send_text(dumps(plain(message)))

    def send_text(self, text: str) -> None:
        """Write one message already encoded by `wire.jsonio.dumps`."""
        data = memoryview((text + "\n").encode("ascii"))
        while data:
            data = data[self._write(self._out, data) :]

    def receive(self) -> Any:
        """The next message (exact JSON types), or None once the host has closed the stream.

        Raises:
            ValueError: the line is not JSON, or longer than `MAX_MESSAGE_BYTES`.
        """
        buffer = self._buffer
        searched = 0
        while (end := buffer.find(b"\n", searched)) < 0:
            if len(buffer) > MAX_MESSAGE_BYTES:
                raise ValueError(f"a request longer than {MAX_MESSAGE_BYTES:,} bytes")
            searched = len(buffer)
            chunk = self._read(self._in, 1 << 20)
            if not chunk:
                return None
            buffer += chunk
        if end > MAX_MESSAGE_BYTES:
            raise ValueError(f"a request longer than {MAX_MESSAGE_BYTES:,} bytes")
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        return loads(line.decode("ascii"))

    def abort(self, code: int) -> NoReturn:
        """End the worker at once (the host reports why)."""
        self._exit(code)


def _take_protocol_descriptors() -> _Protocol:
    reader = os.dup(0)
    writer = os.dup(1)
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
        self._max_callback_bytes = DEFAULT_MAX_CALLBACK_BYTES
        self._exec_id = 0
        self._in_cell = False
        self._exit_code: int | None = None
        # Values that `load` replaced, let go when the next cell starts: their finalizers then
        # run under the cell's limits, never inside a host request.
        self._graveyard: list[Any] = []
        self._callback_lock = threading.Lock()
        self._gc_enable = gc.enable
        self._gc_disable = gc.disable

    # -- callbacks into the host --------------------------------------------------------------
    def _call_host(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._in_cell:
            raise RuntimeError(f"{name}() can only be called while a cell runs")
        limit = self._max_callback_bytes
        too_large = (
            f"{name}() arguments are larger than the limit on data passed to a host function "
            f"({limit:,} bytes as JSON; max_callback_bytes): pass less per call, for example split the text into chunks"
        )
        call = {"op": CALLBACK, "id": self._exec_id, "name": name, "args": args, "kwargs": kwargs}
        try:
            text = dumps(plain(call, limit))
        except TooLarge:
            raise ValueError(too_large) from None
        except (TypeError, ValueError, RecursionError) as error:
            raise TypeError(
                f"{name}() arguments must be JSON-compatible (str, numbers, lists, dicts): {error}"
            ) from None
        if len(text) > limit:
            raise ValueError(too_large)
        started = time.perf_counter()
        with self._callback_lock:
            self._protocol.send_text(text)
            try:
                reply = self._protocol.receive()
            except Exception:  # not JSON, or too long: the stream can no longer be trusted
                reply = None
        notebook = self._notebook
        if notebook is not None:
            notebook.callback_seconds += time.perf_counter() - started
        if type(reply) is not dict or reply.get("op") != CALLBACK_RESULT or type(reply.get("ok")) is not bool:
            self._protocol.abort(_EXIT_PROTOCOL_BROKEN)
        if reply["ok"]:
            return reply.get("value")
        error_type = reply.get("error_type")
        detail = reply.get("error")
        error_class = (
            _ALLOWED_CALLBACK_ERRORS.get(error_type, RuntimeError) if type(error_type) is str else RuntimeError
        )
        raise error_class(detail if type(detail) is str and detail else f"{name}() failed")

    # -- message handlers -------------------------------------------------------------------
    def handle(self, message: Any) -> dict[str, Any] | str:
        """Answer one host request: a reply message, or one already encoded (a cell's result)."""
        problem = check_request(message)
        if problem is not None:
            self._exit_code = _EXIT_PROTOCOL_BROKEN
            return self._error(message, f"a malformed request ({problem}); the worker stops", "ProtocolError")
        op = message["op"]
        if op == CONFIGURE:
            return self._configure(message)
        notebook = self._notebook
        if notebook is None:
            return self._error(message, "the worker is not configured yet", "ProtocolError")
        ident = message["id"]
        if op == DEFINE:
            for name in message["names"]:
                notebook.define_callback(name)
            return {"op": OK, "id": ident}
        if op == LOAD:
            return self._load(notebook, message)
        if op == EXEC:
            return self._exec(notebook, message)
        if op == GET:
            name = message["name"]
            if name not in self._variables(notebook):
                return {"op": ERROR, "id": ident, "error": f"no variable named {name!r}", "error_type": "NameError"}
            # Plain data is read without running cell code; anything else shows its own repr,
            # which the host bounds like a cell (it kills the worker if no reply comes in time).
            return {"op": VALUE, "id": ident, "value": encode_value(notebook.namespace[name])}
        return {"op": OK, "id": ident, "variables": self._variables(notebook)}

    def _configure(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._notebook is not None:
            # Once only, before any cell: a later one could only come from a forged stream.
            self._exit_code = _EXIT_PROTOCOL_BROKEN
            return self._error(message, "configure is accepted once, before the first cell; the worker stops", "")
        restricted = message["policy"] == "restricted"
        self._notebook = Notebook(
            restricted=restricted, max_output_chars=message["max_output_chars"], call_host=self._call_host
        )
        self._memory_limit_mb = message["memory_limit_mb"]
        self._restricted = restricted
        self._max_callback_bytes = message["max_callback_bytes"]
        return {"op": OK, "id": message["id"]}

    def _load(self, notebook: Notebook, message: dict[str, Any]) -> dict[str, Any]:
        name = message["name"]
        namespace = notebook.namespace
        if name.startswith("_") or (name in namespace and name not in self._variables(notebook)):
            return self._error(message, f"{name!r} is reserved by the REPL", "ValueError")
        value = self._read_value(message)
        if name in namespace:
            self._graveyard.append(namespace[name])
        namespace[name] = value
        return {"op": OK, "id": message["id"], "variables": self._variables(notebook)}

    def _exec(self, notebook: Notebook, message: dict[str, Any]) -> str:
        self._apply_memory_limit()
        self._set_cpu_limit(message.get("cpu_limit_s"))
        self._exec_id = message["id"]
        self._in_cell = True
        self._gc_enable()
        try:
            self._graveyard.clear()
            payload = notebook.run(message["code"])
        finally:
            self._gc_disable()
            self._in_cell = False
        return self._result(notebook, payload, message["id"])

    def _result(self, notebook: Notebook, payload: dict[str, Any], ident: int) -> str:
        """The cell's result, encoded, cut further if needed to fit in one message."""
        reply: dict[str, Any] = {
            "op": RESULT,
            "id": ident,
            "stdout": payload.get("stdout", ""),
            "output_chars": payload.get("output_chars", 0),
            "value": payload.get("value"),
            "error": payload.get("error"),
            "error_type": payload.get("error_type"),
            "duration": payload.get("duration", 0.0),
            "final": payload.get("final"),
            "variables": self._variables(notebook),
        }
        text = dumps(plain(reply))
        if len(text) <= MAX_MESSAGE_BYTES // 2:
            return text
        for key in ("stdout", "value", "error"):
            if isinstance(reply[key], str):
                reply[key] = truncate_middle(str.__str__(reply[key]), 100_000)
        final = reply["final"]
        if isinstance(final, dict) and final.get("exact"):
            shown = truncate_middle(str(final.get("json")), 100_000)
            reply["final"] = {**final, "json": None, "exact": False, "repr": shown + " [cut: the reply was too large]"}
        return dumps(plain(reply))

    @staticmethod
    def _variables(notebook: Notebook) -> list[str]:
        return [name for name in notebook.variables() if type(name) is str][:MAX_VARIABLES]

    @staticmethod
    def _error(message: Any, error: str, error_type: str) -> dict[str, Any]:
        ident = message.get("id") if type(message) is dict else None
        return {
            "op": ERROR,
            "id": ident if type(ident) is int else None,
            "error": truncate_middle(error, 2_000),
            "error_type": error_type or "ProtocolError",
        }

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
            value = loads(data.decode("utf-8", "surrogatepass"))
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
        # Cyclic garbage (finalizers and all) is collected only while a cell runs.
        self._gc_disable()
        protocol = self._protocol
        while True:
            try:
                message = protocol.receive()
            except MemoryError:
                # The namespace holds so much that not even a request fits: exit, so the host
                # restarts a fresh worker and reports which variables were lost.
                protocol.abort(_EXIT_OUT_OF_MEMORY)
            except Exception:  # not JSON, or too long: the stream can no longer be trusted
                protocol.abort(_EXIT_PROTOCOL_BROKEN)
            if message is None or (type(message) is dict and message.get("op") == SHUTDOWN):
                return
            try:
                reply = self.handle(message)
            except MemoryError:
                protocol.abort(_EXIT_OUT_OF_MEMORY)
            except Exception as error:
                reply = self._error(message, f"{type(error).__name__}: {error}", type(error).__name__)
            try:
                with self._callback_lock:  # never interleaved with a callback from a cell's thread
                    if isinstance(reply, str):
                        protocol.send_text(reply)
                    else:
                        protocol.send(reply)
            except MemoryError:
                reply = self._error(message, "the reply is too large for the worker's memory limit", "MemoryError")
                try:
                    protocol.send(reply)
                except MemoryError:
                    protocol.abort(_EXIT_PROTOCOL_BROKEN)
            if self._exit_code is not None:
                protocol.abort(self._exit_code)


def main() -> None:
    """Entry point of the worker process."""
    settings = _launch_settings()
    hangup_fd = os.dup(0)
    protocol = _take_protocol_descriptors()
    isolated = bool(settings.get("network_private")) or _isolate_network()
    lockdown = lock_down()
    _watch_parent(hangup_fd)
    import RestrictedPython  # noqa: F401 - warm the import before reporting ready

    protocol.send({"op": READY, "pid": os.getpid(), "network_isolated": isolated, "isolation": lockdown.report()})
    try:
        Worker(protocol).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass
    os._exit(0)
