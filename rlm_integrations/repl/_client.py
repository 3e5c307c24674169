"""The host side of the worker protocol, shared by every REPL that runs our worker.

`WorkerREPL` implements the `REPL` protocol once: the handshake (configure, define
callbacks, reload what was loaded), the cell loop (answer callbacks on the host, keep the
wall-clock limit, never raise for an error inside a cell), recovery (a fresh worker after
a timeout or a crash, with the lost variables reported) and value transfer. It talks to
the worker through a `Channel`, the only thing that differs between backends:

- `LocalREPL`: a worker process on this machine; the host enforces the cell limit by
  killing the process group.
- `ModalREPL`: a supervisor and worker inside a sandbox, reached over the sandbox
  process's stdin/stdout; the supervisor enforces the limit and the host terminates the
  sandbox as a backstop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import keyword
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from rlm_integrations._sync import run_sync
from rlm_integrations.errors import (
    ConfigError,
    REPLClosedError,
    UnsupportedContextError,
    UsageError,
    WorkerCrashedError,
    WorkerStartError,
)
from rlm_integrations.repl._codec import decode_value
from rlm_integrations.repl.protocol import CellResult, FinalAnswer, HostCallback

__all__ = ["Channel", "Payload", "Policy", "WorkerREPL", "invoke", "serialize"]

Policy = Literal["restricted", "unrestricted"]
Payload = Callable[[Any], None]
"""Writes a value's file form to a binary file object."""

_CHUNK_CHARS = 8 * 1024 * 1024
_CALLBACK_ERROR_TYPES = ("KeyError", "TimeoutError", "TypeError", "ValueError")
_RESERVED_NAMES = frozenset({"FINAL", "FINAL_VAR", "SHOW_VARS", "print"})


class Channel(Protocol):
    """The host's handle on one live worker, behind whatever carries its JSON lines.

    Messages from the worker arrive through `receive`, in order; when the worker is gone
    `receive` returns ``{"op": "eof"}``. A channel whose far side supervises the worker may
    also deliver ``{"op": "timeout"}`` (the far side killed an overrunning cell).
    """

    @property
    def info(self) -> dict[str, Any]:
        """The worker's ``ready`` message."""
        ...

    @property
    def timeout_grace_s(self) -> float | None:
        """Who enforces each cell's wall-clock limit.

        None: the host, by `kill`. A number: the far side (the exec message carries
        ``wall_limit_s``), and the host forces a `kill` only this many seconds later.
        """
        ...

    @property
    def alive(self) -> bool:
        """True while the worker can take requests."""
        ...

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker's ``ready``; raises `TimeoutError` or `WorkerStartError`."""
        ...

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message; raises `OSError` (`BrokenPipeError`, ...) if the worker is gone."""
        ...

    async def receive(self) -> dict[str, Any]:
        """The next message from the worker."""
        ...

    def staged(self, payload: Payload, kind: str) -> AbstractAsyncContextManager[str]:
        """Put a value's file form where the worker can read it; yields that path, removes it after."""
        ...

    async def reset(self) -> bool:
        """Start a fresh worker in place of a dead or killed one; False if only a new channel will do."""
        ...

    async def settle(self) -> None:
        """After an unexpected end of messages, wait briefly for the worker to finish exiting."""
        ...

    def describe_exit(self) -> str:
        """Why the worker stopped, in words."""
        ...

    def kill(self, *, force: bool = False) -> None:
        """Stop the worker now (idempotent); `force` when its supervisor stopped answering."""
        ...

    async def release(self, *, reusable: bool) -> None:
        """The REPL is done with this channel; `reusable` when no request is in flight."""
        ...


class WorkerREPL:
    """A persistent Python namespace in a worker that speaks our JSON-lines protocol.

    Subclasses say how to reach a worker (`_connect`); everything else is here. See
    `LocalREPL` and `ModalREPL` for the options each adds.
    """

    def __init__(
        self,
        *,
        cell_timeout_s: float | None,
        memory_limit_mb: int | None,
        max_output_chars: int,
        policy: Policy,
        start_timeout_s: float,
    ) -> None:
        if cell_timeout_s is not None and cell_timeout_s <= 0:
            raise ConfigError(f"cell_timeout_s must be positive or None, got {cell_timeout_s!r}")
        if memory_limit_mb is not None and memory_limit_mb < 16:
            raise ConfigError(f"memory_limit_mb must be at least 16, got {memory_limit_mb!r}")
        if max_output_chars < 100:
            raise ConfigError(f"max_output_chars must be at least 100, got {max_output_chars!r}")
        if policy not in ("restricted", "unrestricted"):
            raise ConfigError(f"policy must be 'restricted' or 'unrestricted', got {policy!r}")
        self.cell_timeout_s = cell_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.max_output_chars = max_output_chars
        self.policy: Policy = policy
        self.start_timeout_s = start_timeout_s
        self._channel: Channel | None = None
        self._callbacks: dict[str, HostCallback] = {}
        self._loaded: dict[str, Any] = {}
        self._variables: list[str] = []
        self._closed = False
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._pending_definitions = False
        self._in_flight = 0

    async def _connect(self) -> Channel:
        """Reach a new worker (its ``ready`` may still be on the way)."""
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker (idempotent); restarts it if it died."""
        self._check_open()
        if self._channel is not None and self._channel.alive:
            return
        async with self._busy():
            await self._ensure_worker()

    async def close(self) -> None:
        """Stop the worker and release what it holds (idempotent)."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.release(reusable=self._in_flight == 0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __enter__(self) -> Self:
        self.start_sync()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_sync()

    # -- the namespace ----------------------------------------------------------------------
    def register(self, name: str, function: HostCallback) -> None:
        """Make `function` callable from cells as `name(...)`.

        The function runs on the host (so the worker never holds credentials). It may be
        sync (run in a thread) or async; arguments and result must be JSON-compatible.
        Exceptions it raises reach the cell as ValueError, TypeError, KeyError,
        TimeoutError or RuntimeError with the same message. Time spent in it does not
        count against the cell's limit.
        """
        self._check_open()
        _check_name(name)
        if not callable(function):
            raise UsageError(f"the callback for {name!r} must be callable, got {type(function).__name__}")
        self._callbacks[name] = function
        channel = self._channel
        if channel is not None and channel.alive:
            # Defined lazily on the next request so `register` can stay synchronous.
            self._pending_definitions = True

    async def load(self, name: str, value: Any) -> None:
        """Bind `value` to `name` in the namespace, through a file rather than the message stream.

        Accepts str (up to hundreds of MB), bytes, and JSON-compatible data (lists,
        dicts, numbers, bools, None). The value is kept on the host and reloaded if the
        worker is restarted.

        Raises:
            UnsupportedContextError: for any other type.
        """
        self._check_open()
        _check_name(name)
        payload, kind = serialize(value)
        async with self._busy():
            channel = await self._ensure_worker()
            await self._transfer(channel, name, payload, kind)
            self._loaded[name] = value

    async def execute(self, code: str) -> CellResult:
        """Run one cell; errors inside it come back in the result, never raised here."""
        self._check_open()
        if not isinstance(code, str):
            raise UsageError(f"code must be a str, got {type(code).__name__}")
        async with self._busy():
            await self._ensure_worker()
            return await self._run_cell(code)

    async def get(self, name: str) -> Any:
        """Return a variable's value: plain data exactly, anything else as its repr.

        Raises:
            KeyError: no such variable.
        """
        self._check_open()
        async with self._busy():
            channel = await self._ensure_worker()
            reply = await self._bounded_request(channel, {"op": "get", "name": name})
        if reply["op"] != "value":
            raise KeyError(name)
        value, _exact = decode_value(reply)
        return value

    async def variables(self) -> list[str]:
        """Names defined in the namespace (loaded values and cell assignments)."""
        self._check_open()
        async with self._busy():
            channel = await self._ensure_worker()
            reply = await self._bounded_request(channel, {"op": "variables"})
        return list(reply.get("variables", []))

    # -- sync forms -------------------------------------------------------------------------
    def start_sync(self) -> None:
        """Blocking `start`."""
        run_sync(self.start())

    def load_sync(self, name: str, value: Any) -> None:
        """Blocking `load`."""
        run_sync(self.load(name, value))

    def execute_sync(self, code: str) -> CellResult:
        """Blocking `execute` (also works inside a running event loop)."""
        return run_sync(self.execute(code))

    def get_sync(self, name: str) -> Any:
        """Blocking `get`."""
        return run_sync(self.get(name))

    def close_sync(self) -> None:
        """Blocking `close`."""
        run_sync(self.close())

    # -- internals --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise REPLClosedError(f"this REPL is closed; create a new {type(self).__name__}")

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def _busy(self) -> _Busy:
        return _Busy(self)

    async def _ensure_worker(self) -> Channel:
        self._check_open()
        channel = self._channel
        if channel is not None and channel.alive:
            if self._pending_definitions:
                await self._define_callbacks(channel)
            return channel
        reused: Channel | None = None
        if channel is not None:
            self._channel = None
            if await channel.reset():
                reused = channel
            else:
                channel.kill()
        return await self._spawn(reused)

    async def _spawn(self, channel: Channel | None = None) -> Channel:
        if channel is None:
            channel = await self._connect()
        try:
            await channel.wait_ready(self.start_timeout_s)
            configure = {
                "op": "configure",
                "policy": self.policy,
                "max_output_chars": self.max_output_chars,
                "memory_limit_mb": self.memory_limit_mb,
            }
            await self._request(channel, configure)
            await self._define_callbacks(channel)
            for name, value in self._loaded.items():
                payload, kind = serialize(value)
                await self._transfer(channel, name, payload, kind)
        except TimeoutError:
            channel.kill()
            raise WorkerStartError(f"the REPL worker did not report ready within {self.start_timeout_s:g} s") from None
        except BaseException:
            channel.kill()
            raise
        self._channel = channel
        self._variables = list(self._loaded)
        return channel

    async def _define_callbacks(self, channel: Channel) -> None:
        self._pending_definitions = False
        if self._callbacks:
            await self._request(channel, {"op": "define", "names": list(self._callbacks)})

    async def _bounded_request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        """A request that runs code in the worker (a value's `__repr__`): bounded like a cell.

        If the worker does not answer in time, or the caller gives up, the worker is killed
        so that its late reply can never be read as the answer to a later request.
        """
        limit = self.cell_timeout_s if self.cell_timeout_s is not None else 30.0
        try:
            async with asyncio.timeout(limit):
                return await self._request(channel, message)
        except TimeoutError:
            self._channel = None
            channel.kill()
            raise WorkerCrashedError(
                f"the REPL worker did not answer {message['op']!r} within {limit:g} s; it was stopped "
                "and the next use starts a fresh one (loaded values are reloaded, cell variables are lost)"
            ) from None
        except BaseException:
            self._channel = None
            channel.kill()
            raise

    async def _request(self, channel: Channel, message: dict[str, Any]) -> dict[str, Any]:
        try:
            await channel.send(message)
        except OSError as error:
            raise WorkerCrashedError(f"the REPL worker is gone: {channel.describe_exit()}") from error
        reply = await channel.receive()
        if reply["op"] in ("eof", "timeout"):
            raise WorkerCrashedError(f"the REPL worker stopped: {channel.describe_exit()}")
        return reply

    async def _transfer(self, channel: Channel, name: str, payload: Payload, kind: str) -> None:
        async with channel.staged(payload, kind) as path:
            reply = await self._request(channel, {"op": "load", "name": name, "path": path, "format": kind})
        if reply["op"] != "ok":
            raise WorkerCrashedError(f"the REPL worker could not load {name!r}: {reply.get('error')}")

    async def _run_cell(self, code: str) -> CellResult:
        channel = self._channel
        assert channel is not None
        names_before = list(self._variables)
        limit = self.cell_timeout_s
        grace = channel.timeout_grace_s
        cpu_limit = None if limit is None else 2 * limit + 5
        loop = asyncio.get_running_loop()
        started = loop.time()
        active = 0.0
        message: dict[str, Any] = {"op": "exec", "code": code, "cpu_limit_s": cpu_limit}
        if grace is not None:
            message["wall_limit_s"] = limit
        try:
            await channel.send(message)
            resumed = loop.time()
            while True:
                remaining = None if limit is None else max(limit - active, 0.0) + (grace or 0.0)
                try:
                    async with asyncio.timeout(remaining):
                        message = await channel.receive()
                except TimeoutError:
                    return await self._recover(names_before, timed_out=True, hard=True, duration=loop.time() - started)
                active += loop.time() - resumed
                op = message["op"]
                if op == "callback":
                    reply = await self._answer_callback(message)
                    await channel.send(reply)
                    resumed = loop.time()
                    continue
                if op == "eof":
                    return await self._recover(
                        names_before, timed_out=False, hard=False, duration=loop.time() - started
                    )
                if op == "timeout":
                    return await self._recover(names_before, timed_out=True, hard=False, duration=loop.time() - started)
                if op == "result":
                    self._variables = list(message.get("variables", []))
                    return _cell_result(message)
                return CellResult(error=str(message.get("error")), error_type=message.get("error_type", "WorkerError"))
        except (BrokenPipeError, ConnectionResetError):
            return await self._recover(names_before, timed_out=False, hard=False, duration=loop.time() - started)
        except BaseException:
            # Cancelled (or the host failed) mid-cell: the worker may still be running it.
            self._channel = None
            channel.kill()
            raise

    async def _recover(self, names_before: list[str], *, timed_out: bool, hard: bool, duration: float) -> CellResult:
        """Replace the worker after a timeout (`hard`: the host's own limit ran out) or a crash."""
        old = self._channel
        self._channel = None
        if old is None or self._closed:
            # `close()` ran while the cell did: it already stopped the worker.
            raise REPLClosedError(f"this REPL was closed while the cell ran; create a new {type(self).__name__}")
        if timed_out:
            if hard:
                old.kill(force=True)
            reason = f"TimeoutError: the cell ran longer than its {self.cell_timeout_s:g} s limit and was stopped"
        else:
            await old.settle()
            reason = f"WorkerCrashed: the REPL worker died while running the cell: {old.describe_exit()}"
        reused = None if hard else old
        if reused is not None and not await reused.reset():
            reused = None
        if reused is None:
            old.kill()
        try:
            await self._spawn(reused)
        except Exception as error:
            raise WorkerCrashedError(f"{reason}; restarting the worker failed: {error}") from error
        lost = [name for name in names_before if name not in self._loaded]
        reloaded = ", ".join(self._loaded) or "nothing"
        message = f"{reason}. The REPL was restarted; reloaded: {reloaded}."
        message += lost_variables_note(lost)
        return CellResult(
            error=message,
            error_type="TimeoutError" if timed_out else "WorkerCrashed",
            duration=duration,
            timed_out=timed_out,
            restarted=True,
            lost_variables=lost,
        )

    async def _answer_callback(self, message: dict[str, Any]) -> dict[str, Any]:
        name = message.get("name", "")
        function = self._callbacks.get(name)
        if function is None:
            return {"ok": False, "op": "callback_result", "error": f"{name}() is not available", "error_type": "Name"}
        args = message.get("args", [])
        kwargs = message.get("kwargs", {})
        try:
            result = await invoke(function, args, kwargs)
            json.dumps(result)
        except Exception as error:
            return {
                "op": "callback_result",
                "ok": False,
                "error": f"{name}() failed: {error}" if str(error) else f"{name}() failed: {type(error).__name__}",
                "error_type": _callback_error_type(error),
            }
        return {"op": "callback_result", "ok": True, "value": result}


class _Busy:
    """The REPL's per-loop lock, plus a count of requests in flight (a busy channel is never reused)."""

    def __init__(self, repl: WorkerREPL) -> None:
        self._repl = repl
        self._lock = repl._guard()

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        self._repl._in_flight += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self._repl._in_flight -= 1
        self._lock.release()


async def invoke(function: HostCallback, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call a host callback: a coroutine function directly, anything else in a thread."""
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    result = await asyncio.to_thread(function, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _callback_error_type(error: BaseException) -> str:
    for cls in type(error).__mro__:
        if cls.__name__ in _CALLBACK_ERROR_TYPES and cls.__module__ == "builtins":
            return cls.__name__
    return "RuntimeError"


def _cell_result(message: dict[str, Any]) -> CellResult:
    final = message.get("final")
    answer = None
    if final is not None:
        value, exact = decode_value(final)
        answer = FinalAnswer(value=value, exact=exact, variable=final.get("variable"), named=final.get("named", False))
    return CellResult(
        stdout=message.get("stdout", ""),
        value=message.get("value"),
        error=message.get("error"),
        error_type=message.get("error_type"),
        duration=float(message.get("duration", 0.0)),
        final=answer,
        output_chars=int(message.get("output_chars", 0)),
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"{name!r} is not a valid Python variable name")
    if name.startswith("_"):
        raise UsageError(f"{name!r} starts with '_', which sandboxed code cannot read; choose another name")
    if name in _RESERVED_NAMES:
        raise UsageError(f"{name!r} is reserved by the REPL; choose another name")


def serialize(value: Any) -> tuple[Payload, str]:
    """Check `value` and return a writer for its file form, with the format's name."""
    if isinstance(value, str):

        def write_text(file: Any) -> None:
            for start in range(0, len(value), _CHUNK_CHARS):
                file.write(value[start : start + _CHUNK_CHARS].encode("utf-8", "surrogatepass"))

        return write_text, "str"
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return (lambda file: file.write(data)), "bytes"
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as error:
        raise UnsupportedContextError(
            f"cannot load a value of type {type(value).__name__} into the REPL ({error}). "
            "Pass a str, bytes, or JSON-compatible data (lists, dicts, numbers, bools, None); "
            "convert other objects first, e.g. with str() or a dict of their fields.",
            value_type=type(value).__name__,
        ) from error
    return (lambda file: file.write(encoded)), "json"


LOST_VARIABLES_MARKER = " Lost variables"


def lost_variables_note(lost: list[str]) -> str:
    """The sentence a restart report ends with, naming the variables that are gone ("" if none)."""
    if not lost:
        return ""
    return f"{LOST_VARIABLES_MARKER} (re-create them if you need them): {', '.join(lost)}."
