"""The host side of the worker protocol, shared by every REPL that runs our worker.

`WorkerREPL` implements the `REPL` protocol once: the handshake (configure, define
callbacks, reload what was loaded), the cell loop (answer callbacks on the host, keep the
wall-clock limit, never raise for an error inside a cell), recovery (a fresh worker after
a timeout, a crash or a broken protocol, with the lost variables reported) and value
transfer. It talks to the worker through a `WorkerTransport` (`repl.transport`), the
only thing that differs between backends:

- `LocalREPL`: a worker process on this machine; the host enforces the cell limit by
  killing the process group.
- `ModalREPL`: a supervisor and worker inside a sandbox, reached over the sandbox
  process's stdin/stdout; the supervisor enforces the limit and the host terminates the
  sandbox as a backstop.

The worker is not trusted to keep to the protocol: every message it sends is checked
(`wire.messages`), must answer the request in flight (by its ``id``), and every request has a
time limit. A worker that breaks any of this is killed and replaced, and the next cell
reports the restart and the variables it cost, exactly like a crash. A worker that dies
between cells is reported the same way by the next `execute`.
"""

from __future__ import annotations

import asyncio
import itertools
import keyword
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from rlm_integrations.errors import (
    ConfigError,
    REPLClosedError,
    REPLError,
    UsageError,
    WorkerCrashedError,
    WorkerStartError,
)
from rlm_integrations.repl.host.cells import CellLoop
from rlm_integrations.repl.host.replies import (
    LOST_VARIABLES_MARKER,
    check_reply,
    lost_variables_note,
    restart_report,
)
from rlm_integrations.repl.host.sync_forms import SyncForms
from rlm_integrations.repl.host.transfer import invoke, serialize
from rlm_integrations.repl.protocol import CellResult, HostCallback
from rlm_integrations.repl.transport import Payload, WorkerTransport
from rlm_integrations.repl.wire.codec import decode_value
from rlm_integrations.repl.wire.messages import (
    Configure,
    Define,
    Eof,
    ErrorReply,
    Get,
    Load,
    Ok,
    ProtocolViolation,
    Timeout,
    Value,
    Variables,
)
from rlm_integrations.repl.wire.schema import DEFAULT_MAX_CALLBACK_BYTES, MAX_CODE_CHARS, MAX_MESSAGE_BYTES

__all__ = [
    "LOST_VARIABLES_MARKER",
    "Connect",
    "Payload",
    "Policy",
    "WorkerREPL",
    "WorkerTransport",
    "invoke",
    "lost_variables_note",
    "serialize",
]

Policy = Literal["restricted", "unrestricted"]
Connect = Callable[[], Awaitable[WorkerTransport]]
"""Reaches a new worker: returns its transport (the worker's ``ready`` may still be on the way)."""
_Reply = TypeVar("_Reply", Ok, Value)

_RESERVED_NAMES = frozenset({"FINAL", "FINAL_VAR", "SHOW_VARS", "print"})
_REQUEST_FLOOR_S = 30.0
_LOAD_BYTES_PER_S = 4 * 1024 * 1024


class WorkerREPL(CellLoop, SyncForms):
    """A persistent Python namespace in our worker program, reached through a `WorkerTransport`.

    The REPL for every backend: give it `connect`, which returns a transport to a new
    worker, and it does the rest (see `rlm_integrations.repl.transport`). `LocalREPL` and
    `ModalREPL` are subclasses that connect to their own transports and add options.

    Args:
        connect: an async callable returning a `WorkerTransport` to a fresh worker;
            called at start and whenever a worker must be replaced. Subclasses may
            override `_connect` instead.
        cell_timeout_s: wall-clock limit per cell in seconds, not counting time spent in
            host callbacks; None for no limit.
        memory_limit_mb: address space the worker may use beyond what it holds after
            loading its values (None: the worker's default).
        max_output_chars: bound on each cell's printed output and value repr.
        policy: ``"restricted"`` (RestrictedPython) or ``"unrestricted"`` (plain Python).
        start_timeout_s: how long to wait for a worker to report ready.
        max_callback_bytes: bound on the JSON of one host callback's arguments, and of its result.
    """

    def __init__(
        self,
        connect: Connect | None = None,
        *,
        cell_timeout_s: float | None = 30.0,
        memory_limit_mb: int | None = None,
        max_output_chars: int = 10_000,
        policy: Policy = "restricted",
        start_timeout_s: float = 30.0,
        max_callback_bytes: int = DEFAULT_MAX_CALLBACK_BYTES,
    ) -> None:
        if cell_timeout_s is not None and cell_timeout_s <= 0:
            raise ConfigError(f"cell_timeout_s must be positive or None, got {cell_timeout_s!r}")
        if memory_limit_mb is not None and memory_limit_mb < 16:
            raise ConfigError(f"memory_limit_mb must be at least 16, got {memory_limit_mb!r}")
        if not 100 <= max_output_chars <= MAX_MESSAGE_BYTES // 16:
            raise ConfigError(f"max_output_chars must be between 100 and 2,097,152, got {max_output_chars!r}")
        if policy not in ("restricted", "unrestricted"):
            raise ConfigError(f"policy must be 'restricted' or 'unrestricted', got {policy!r}")
        if isinstance(max_callback_bytes, bool) or not 1024 <= max_callback_bytes <= MAX_MESSAGE_BYTES // 2:
            raise ConfigError(
                f"max_callback_bytes must be between 1,024 and {MAX_MESSAGE_BYTES // 2:,}, got {max_callback_bytes!r}"
            )
        self.cell_timeout_s = cell_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.max_output_chars = max_output_chars
        self.policy: Policy = policy
        self.start_timeout_s = start_timeout_s
        self.max_callback_bytes = max_callback_bytes
        """Bound on the JSON of one host callback's arguments, and of its result."""
        self._connector = connect
        self._channel: WorkerTransport | None = None
        self._callbacks: dict[str, HostCallback] = {}
        self._loaded: dict[str, Any] = {}
        self._variables: list[str] = []
        self._closed = False
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._pending_definitions = False
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._cells_on_worker = 0
        self._unreported: tuple[str, list[str]] | None = None  # a worker lost between cells: why, and its names

    async def _connect(self) -> WorkerTransport:
        """Reach a new worker (its ``ready`` may still be on the way): `connect`, unless overridden."""
        if self._connector is None:
            raise UsageError(f"{type(self).__name__} needs connect=, an async callable that returns a WorkerTransport")
        return await self._connector()

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

    # -- the namespace ----------------------------------------------------------------------
    def register(self, name: str, function: HostCallback) -> None:
        """Make `function` callable from cells as `name(...)`.

        The function runs on the host (so the worker never holds credentials). It may be
        sync (run in a thread) or async; arguments and result must be JSON-compatible and
        at most `max_callback_bytes` as JSON each (a cell passing more gets a ValueError
        before anything reaches the host). Exceptions it raises reach the cell as
        ValueError, TypeError, KeyError, TimeoutError or RuntimeError with the same
        message. Time spent in it does not count against the cell's limit.
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
        worker is restarted. A value it replaces is let go when the next cell starts.

        Raises:
            UnsupportedContextError: for any other type.
            WorkerCrashedError: the worker could not take it in time (it is restarted).
        """
        self._check_open()
        _check_name(name)
        serialize(value)  # refuse an unsupported value before starting anything
        async with self._busy():
            channel = await self._ensure_worker()
            await self._transfer(channel, name, value)
            self._loaded[name] = value

    async def execute(self, code: str) -> CellResult:
        """Run one cell; errors inside it come back in the result, never raised here.

        If the worker died since the last cell (killed from outside, out of memory), the
        cell does not run: the result reports the restart (``restarted=True``, the lost
        variables) as a crash during a cell would, so the caller can restore what it
        needs and run the cell again.
        """
        self._check_open()
        if not isinstance(code, str):
            raise UsageError(f"code must be a str, got {type(code).__name__}")
        if len(code) > MAX_CODE_CHARS:
            return CellResult(
                error=f"ValueError: the cell is {len(code):,} characters, over the limit of {MAX_CODE_CHARS:,}; "
                "nothing ran. Keep data in variables and pass code only.",
                error_type="ValueError",
            )
        async with self._busy():
            await self._ensure_worker()
            unreported, self._unreported = self._unreported, None
            if unreported is not None:
                reason, names_before = unreported
                return restart_report(f"WorkerCrashed: {reason}", names_before, self._loaded, ran=False)
            return await self._run_cell(code)

    async def get(self, name: str) -> Any:
        """Return a variable's value: plain data exactly, anything else as its (bounded) repr.

        Raises:
            KeyError: no such variable.
            WorkerCrashedError: the worker did not answer in time (a `__repr__` that never
                ends) or broke the protocol; it was stopped, and the next use starts a fresh one.
        """
        self._check_open()
        async with self._busy():
            channel = await self._ensure_worker()
            reply = await self._request(channel, Get(id=next(self._ids), name=name), Value, self._value_timeout())
            if isinstance(reply, ErrorReply):
                if reply.error_type == "NameError":
                    raise KeyError(name)
                raise REPLError(f"get({name!r}) failed in the REPL worker: {reply.error}")
            try:
                value, _exact = decode_value(reply.value.encoded())
            except ValueError as error:
                raise self._abandon(channel, f"the REPL worker broke the protocol ({error})") from None
        return value

    async def variables(self) -> list[str]:
        """Names defined in the namespace (loaded values and cell assignments)."""
        self._check_open()
        async with self._busy():
            channel = await self._ensure_worker()
            reply = await self._request(channel, Variables(id=next(self._ids)), Ok, self._value_timeout())
        if isinstance(reply, ErrorReply):
            raise REPLError(f"variables() failed in the REPL worker: {reply.error}")
        return list(reply.variables or [])

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

    def _value_timeout(self) -> float:
        # Reading a value may run its own __repr__ in the worker: bounded like a cell.
        return self.cell_timeout_s if self.cell_timeout_s is not None else _REQUEST_FLOOR_S

    def _load_timeout(self, size: int) -> float:
        return max(_REQUEST_FLOOR_S, self.start_timeout_s) + size / _LOAD_BYTES_PER_S

    async def _ensure_worker(self) -> WorkerTransport:
        self._check_open()
        channel = self._channel
        if channel is not None and channel.alive:
            if self._pending_definitions:
                await self._define_callbacks(channel)
            return channel
        reused: WorkerTransport | None = None
        if channel is not None:
            # It died between requests (killed from outside, out of memory, ...).
            await channel.settle()
            self._note_loss(f"the REPL worker died between cells: {channel.describe_exit()}")
            self._channel = None
            if await channel.reset():
                reused = channel
            else:
                channel.kill()
        return await self._spawn(reused)

    def _note_loss(self, reason: str) -> None:
        """Remember a worker that died unseen, for the next `execute` to report (if it had run cells)."""
        if self._cells_on_worker and self._unreported is None:
            self._unreported = (reason, list(self._variables))

    def _abandon(self, channel: WorkerTransport, reason: str) -> WorkerCrashedError:
        """Kill a worker that failed a request; the error returned (to raise) tells the caller so."""
        if channel is self._channel:
            self._channel = None
        channel.kill()
        return WorkerCrashedError(
            f"{reason}; it was stopped and the next use starts a fresh one "
            "(loaded values are reloaded, cell variables are lost)"
        )

    async def _spawn(self, channel: WorkerTransport | None = None) -> WorkerTransport:
        if channel is None:
            channel = await self._connect()
        try:
            await channel.wait_ready(self.start_timeout_s)
            configure = Configure(
                id=next(self._ids),
                policy=self.policy,
                max_output_chars=self.max_output_chars,
                memory_limit_mb=self.memory_limit_mb,
                max_callback_bytes=self.max_callback_bytes,
            )
            reply = await self._request(channel, configure, Ok, self.start_timeout_s)
            if isinstance(reply, ErrorReply):
                raise WorkerStartError(f"the REPL worker refused its configuration: {reply.error}")
            await self._define_callbacks(channel)
            for name, value in self._loaded.items():
                await self._transfer(channel, name, value)
        except TimeoutError:
            channel.kill()
            raise WorkerStartError(f"the REPL worker did not report ready within {self.start_timeout_s:g} s") from None
        except BaseException:
            channel.kill()
            raise
        self._channel = channel
        self._variables = list(self._loaded)
        self._cells_on_worker = 0
        return channel

    async def _define_callbacks(self, channel: WorkerTransport) -> None:
        self._pending_definitions = False
        if self._callbacks:
            request = Define(id=next(self._ids), names=list(self._callbacks))
            reply = await self._request(channel, request, Ok, self.start_timeout_s)
            if isinstance(reply, ErrorReply):
                raise self._abandon(channel, f"the REPL worker refused its callbacks ({reply.error})")

    async def _request(
        self,
        channel: WorkerTransport,
        request: Configure | Define | Load | Get | Variables,
        expected: type[_Reply],
        limit: float,
    ) -> _Reply | ErrorReply:
        """Send one request and wait, at most `limit` seconds, for its reply: `expected` or an error.

        Anything else (no reply in time, a gone worker, a malformed message or one that
        answers another request) stops the worker and raises `WorkerCrashedError`; so
        does cancellation (then the cancellation propagates), so a late reply is never
        read as the answer to a later request.
        """
        op = request.op
        try:
            async with asyncio.timeout(limit):
                await channel.send(request.wire())
                reply = check_reply(await channel.receive(), request.id, anonymous_error=isinstance(request, Load))
        except TimeoutError:
            raise self._abandon(channel, f"the REPL worker did not answer {op!r} within {limit:g} s") from None
        except OSError as error:
            raise self._abandon(channel, f"the REPL worker is gone: {channel.describe_exit()}") from error
        except ProtocolViolation as error:
            raise self._abandon(channel, f"the REPL worker broke the protocol ({error})") from None
        except BaseException:
            self._abandon(channel, f"a {op!r} request was cancelled")
            raise
        if isinstance(reply, Eof | Timeout):
            raise self._abandon(channel, f"the REPL worker stopped: {channel.describe_exit()}")
        if isinstance(reply, expected | ErrorReply):
            return reply
        raise self._abandon(channel, f"the REPL worker broke the protocol (a {reply.op!r} message in reply to {op!r})")

    async def _transfer(self, channel: WorkerTransport, name: str, value: Any) -> None:
        payload, kind, size = serialize(value)
        async with channel.staged(payload, kind) as path:
            request = Load(id=next(self._ids), name=name, path=path, format=kind)  # type: ignore[arg-type]
            reply = await self._request(channel, request, Ok, self._load_timeout(size))
        if isinstance(reply, ErrorReply):
            raise WorkerCrashedError(f"the REPL worker could not load {name!r}: {reply.error}")
        if reply.variables is not None:
            self._variables = list(reply.variables)


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


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"{name!r} is not a valid Python variable name")
    if name.startswith("_"):
        raise UsageError(f"{name!r} starts with '_', which sandboxed code cannot read; choose another name")
    if name in _RESERVED_NAMES:
        raise UsageError(f"{name!r} is reserved by the REPL; choose another name")
