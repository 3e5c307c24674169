"""The REPL backend seam: `WorkerTransport`, the one object a new backend implements.

Like an httpx transport under an `httpx.AsyncClient`, a transport only carries messages;
`WorkerREPL` does everything else the same for every backend: the handshake (configure,
callbacks, reloading loaded values), the cell loop with its wall-clock limit, host
callbacks, value transfer, checking every message the worker sends, and replacing a
worker that crashed, timed out or broke the protocol.

A transport is one live worker program (`rlm_integrations.repl.worker.main`) behind
whatever carries its JSON lines: a local process (`LocalREPL`), a supervisor in a Modal
sandbox or its local stand-in (`ModalREPL`), or one of your own. Four members are
required (`send`, `receive`, `alive`, `kill`); the others have defaults that suit a
worker on this machine whose cell limit the host enforces by killing it.

`worker_command` starts the worker program as a plain process; `encode_message` and
`decode_message` turn messages into protocol lines and back; `Mailbox` hands what a
reader thread received to whichever event loop asks.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import json
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import rlm_integrations.repl.wire.schema as ops
from rlm_integrations.errors import WorkerStartError
from rlm_integrations.repl.wire.messages import decode_line, invalid, oversized
from rlm_integrations.repl.wire.schema import MAX_MESSAGE_BYTES
from rlm_integrations.repl.worker.supervisor import worker_command

__all__ = [
    "EOF",
    "MAX_MESSAGE_BYTES",
    "Mailbox",
    "Payload",
    "WorkerTransport",
    "decode_message",
    "encode_message",
    "worker_command",
]

EOF: dict[str, Any] = {"op": ops.EOF}
"""What `WorkerTransport.receive` returns once the worker is gone."""

Payload = Callable[[Any], None]
"""Writes a loaded value's file form to a binary file object (see `WorkerTransport.staged`)."""


def encode_message(message: dict[str, Any]) -> bytes:
    """One message as its protocol line: compact ASCII JSON and a newline."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    """One line from a worker as a message for `WorkerTransport.receive`; never raises.

    A line that is no protocol message (not JSON, not an object with a str ``op``, or
    longer than `MAX_MESSAGE_BYTES`) becomes ``{"op": "invalid", ...}``, which makes the
    REPL replace the worker. Each message is annotated with its length (``wire_bytes``).
    """
    if len(line.rstrip(b"\n")) > MAX_MESSAGE_BYTES:
        return oversized()
    return decode_line(line)


class Mailbox:
    """A thread-safe FIFO whose `get` is awaitable from any event loop.

    It holds at most `MAX_QUEUED` messages nobody has asked for yet: past that (a worker
    flooding its channel) further messages are dropped, after one `invalid` message that
    makes the REPL replace the worker. The end of the stream (`EOF`) is always kept.
    """

    MAX_QUEUED = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[str, Any]]] | None = None
        self._flooded = False

    def put(self, item: dict[str, Any]) -> None:
        """Add an item (from any thread)."""
        with self._lock:
            waiter, self._waiter = self._waiter, None
            if waiter is None:
                self._queue(item)
                return
        loop, future = waiter
        try:
            loop.call_soon_threadsafe(self._deliver, future, item)
        except RuntimeError:  # that loop is closed: keep the item for the next reader
            with self._lock:
                self._items.appendleft(item)

    def _queue(self, item: dict[str, Any]) -> None:
        if len(self._items) < self.MAX_QUEUED or item is EOF:
            self._items.append(item)
        elif not self._flooded:
            self._flooded = True
            self._items.append(invalid(f"the worker sent more than {self.MAX_QUEUED} messages nobody asked for"))

    @property
    def flooded(self) -> bool:
        """True once unasked messages were dropped (until the queue is read empty)."""
        return self._flooded

    def _deliver(self, future: asyncio.Future[dict[str, Any]], item: dict[str, Any]) -> None:
        if future.done():  # the reader gave up (timeout or cancellation): keep the item, in order
            with self._lock:
                self._items.appendleft(item)
        else:
            future.set_result(item)

    async def get(self) -> dict[str, Any]:
        """Wait for the next item."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._items:
                item = self._items.popleft()
                if not self._items:
                    self._flooded = False
                return item
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._waiter = (loop, future)
        try:
            return await future
        finally:
            with self._lock:
                if self._waiter is not None and self._waiter[1] is future:
                    self._waiter = None


class WorkerTransport(abc.ABC):
    """One live worker, behind whatever carries its JSON lines.

    Messages from the worker arrive through `receive`, in order, each a dict with a str
    ``op`` (build them with `decode_message`); when the worker is gone `receive` returns
    `EOF`. A transport whose far side supervises the worker (`timeout_grace_s` set) may
    also deliver ``{"op": "timeout"}`` after killing a cell that overran.

    A transport serves one worker: when it dies, `WorkerREPL` asks `reset` for a fresh
    one in place, and otherwise connects a new transport. It may be used from more than
    one event loop (each blocking ``*_sync`` call of a REPL runs on a fresh one), so it
    holds no loop-bound object: a reader thread and a `Mailbox` serve every loop.
    """

    timeout_grace_s: float | None = None
    """Who enforces each cell's wall-clock limit.

    None (the default): the host, by `kill`. A number: the far side (the ``exec``
    message then carries ``wall_limit_s``), and the host kills only this many seconds later.
    """

    _ready: dict[str, Any] | None = None

    # -- required -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def send(self, message: dict[str, Any]) -> None:
        """Send one message; raise `OSError` (`BrokenPipeError`, ...) if the worker is gone."""

    @abc.abstractmethod
    async def receive(self) -> dict[str, Any]:
        """The next message from the worker, or `EOF` once it is gone."""

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """True while the worker can take requests."""

    @abc.abstractmethod
    def kill(self, *, force: bool = False) -> None:
        """Stop the worker now; idempotent. `force`: its supervisor stopped answering."""

    # -- optional -------------------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """The worker's ``ready`` message (empty before `wait_ready`)."""
        return self._ready or {}

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker's ``ready`` and return it.

        Raises:
            TimeoutError: it did not come within `timeout_s`.
            WorkerStartError: the worker sent something else, or stopped.
        """
        async with asyncio.timeout(timeout_s):
            message = await self.receive()
        if message.get("op") != ops.READY:
            raise WorkerStartError(f"the REPL worker did not start: {self.describe_exit()}")
        self._ready = message
        return message

    @contextlib.asynccontextmanager
    async def staged(self, payload: Payload, kind: str) -> AsyncIterator[str]:
        """Put a loaded value's file form where the worker can read it; yield that path, remove it after.

        The default writes a temporary file on this machine, which suits a worker that
        shares this machine's file system. `kind` is the format (``str``, ``bytes``, ``json``).
        """
        handle, path = tempfile.mkstemp(prefix="rlm-load-")
        try:
            with os.fdopen(handle, "wb") as file:
                await asyncio.to_thread(payload, file)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def reset(self) -> bool:
        """Start a fresh worker in place of a dead or killed one; False (the default): connect anew."""
        return False

    async def settle(self) -> None:
        """After an unexpected `EOF`, wait briefly for the worker to finish exiting (default: nothing)."""
        return None

    def describe_exit(self) -> str:
        """Why the worker stopped, in words."""
        return "the worker stopped"

    async def release(self, *, reusable: bool) -> None:
        """The REPL is done with this worker (`reusable`: no request is in flight). Default: `kill`."""
        self.kill()
