"""The host's end of a supervisor in a sandbox: message stream, uploads, pings, termination.

One `SandboxChannel` per supervisor process (see `repl.transport.WorkerTransport` for the contract).
Everything it does with the sandbox is blocking and runs in threads (a reader thread per
channel, `asyncio.to_thread` per message, one shared pinger), so a channel serves REPL
calls from any event loop. Terminations run in background threads and are waited for
at interpreter exit, when every sandbox still held is ended.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import contextvars
import itertools
import json
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import rlm_integrations.repl.wire.schema as ops
from rlm_integrations.errors import WorkerStartError
from rlm_integrations.repl.sandbox.backends import Sandbox, SandboxProcess, SandboxSpec
from rlm_integrations.repl.transport import EOF, Mailbox, Payload, WorkerTransport, encode_message
from rlm_integrations.repl.wire.messages import decode_line, oversized
from rlm_integrations.repl.wire.schema import MAX_MESSAGE_BYTES
from rlm_integrations.repl.worker.supervisor import worker_version

__all__ = [
    "HOLDING",
    "SandboxChannel",
    "holding_a_sandbox",
    "run_in_thread",
    "terminate_in_background",
    "terminate_quietly",
]

T = TypeVar("T")


class Home(Protocol):
    """Where an owned sandbox goes back to when its REPL is done (a `SandboxPool`)."""

    def _worth_keeping(self, channel: SandboxChannel) -> bool: ...
    def _park(self, channel: SandboxChannel) -> bool: ...
    def _free(self) -> None: ...


_UPLOAD_CHUNK_BYTES = 3 * 1024 * 1024  # 4 MiB per line once base64-encoded
_STDERR_TAIL_BYTES = 4096
_EXIT_OUT_OF_MEMORY = 72  # the worker's exit code when its namespace no longer fits (see worker/main.py)
_upload_names = itertools.count(1)

HOLDING: contextvars.ContextVar[SandboxChannel | None] = contextvars.ContextVar("rlm_modal_holding", default=None)
"""The sandbox whose host callback is running (set by `ModalREPL.register`'s wrapper)."""


def holding_a_sandbox() -> bool:
    """True inside a host callback of a REPL that holds a sandbox (a nested start must not wait)."""
    holder = HOLDING.get()
    return holder is not None and holder.held


# ------------------------------------------------------------------------------ threads


async def run_in_thread(function: Callable[[], T], *, cleanup: Callable[[T], None]) -> T:
    """`function()` in a thread; if the caller gives up (cancelled) its result is passed to `cleanup`."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function())
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(target=target, name="rlm-modal-call", daemon=True).start()
    try:
        return await asyncio.wrap_future(future)
    except BaseException:

        def clean(done: concurrent.futures.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                cleanup(done.result())

        future.add_done_callback(clean)
        raise


_terminations: set[threading.Thread] = set()
_terminations_lock = threading.Lock()


def terminate_quietly(sandbox: Sandbox) -> None:
    """Terminate a sandbox, ignoring any error (it may be gone already)."""
    with contextlib.suppress(Exception):
        sandbox.terminate()


def terminate_in_background(sandbox: Sandbox) -> None:
    """Terminate without blocking the caller; waited for at interpreter exit."""
    _in_background(lambda: terminate_quietly(sandbox), "rlm-modal-terminate")


def _in_background(function: Callable[[], None], name: str) -> None:
    def run() -> None:
        try:
            function()
        finally:
            with _terminations_lock:
                _terminations.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _terminations_lock:
        _terminations.add(thread)
    thread.start()


def _wait_for_terminations(timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    with _terminations_lock:
        threads = list(_terminations)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


# ------------------------------------------------------------------------------- channel


class SandboxChannel(WorkerTransport):
    """The host's end of one supervisor in one sandbox: the transport of `ModalREPL` and the stand-in."""

    def __init__(
        self,
        sandbox: Sandbox,
        process: SandboxProcess,
        *,
        owned: bool,
        pool: Home | None,
        spec: SandboxSpec,
        reusable: bool,
        grace_s: float,
        ping_every_s: float | None,
    ) -> None:
        self.sandbox = sandbox
        self.process = process
        self.owned = owned
        self.spec = spec
        self.reusable = reusable and owned
        self.created = time.monotonic()
        self.timeout_grace_s: float | None = grace_s
        self.ping_every_s = ping_every_s
        self.held = False
        self.mailbox = Mailbox()
        self._info: dict[str, Any] = {}
        self._pool = pool
        self._send_lock = threading.Lock()
        self._state = threading.Lock()
        self._generation = 1
        self._worker_alive = False
        self._supervisor_gone = False
        self._killed = False
        self._exit: dict[str, Any] | None = None
        self._sandbox_code: int | None = None
        self._stderr_tail = bytearray()
        self._last_sent = time.monotonic()
        threading.Thread(target=self._read, name="rlm-sandbox-reader", daemon=True).start()
        threading.Thread(target=self._drain_stderr, name="rlm-sandbox-stderr", daemon=True).start()
        _open_channels.add(self)

    # -- reader threads ---------------------------------------------------------------------
    def _read(self) -> None:
        pending = bytearray()
        skipping = False  # inside a line longer than MAX_MESSAGE_BYTES: dropped up to its end
        try:
            for chunk in self.process.stdout_chunks():
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    if skipping:
                        skipping = False
                    else:
                        if pending:
                            pending += chunk[start:end]
                            line = bytes(pending)
                            pending.clear()
                        else:
                            line = chunk[start:end]
                        if len(line) > MAX_MESSAGE_BYTES:
                            self.mailbox.put(oversized())
                        elif line.strip():
                            self._dispatch(line)
                    start = end + 1
                if not skipping:
                    pending += chunk[start:]
                    if len(pending) > MAX_MESSAGE_BYTES:
                        pending.clear()
                        skipping = True
                        self.mailbox.put(oversized())
        except Exception:  # the stream broke: the same as its end
            pass
        with self._state:
            self._supervisor_gone = True
            self._worker_alive = False
        self.mailbox.put(EOF)

    def _dispatch(self, line: bytes) -> None:
        message = decode_line(line)  # a dict with a str op, or an `invalid` message; never raises
        op = message.get("op")
        with self._state:
            if op == ops.READY and message.get("generation") == self._generation:
                self._worker_alive = True
            elif op == ops.WORKER_EXIT:
                if message.get("generation") != self._generation:
                    return
                self._worker_alive = False
                self._exit = message
                message = {"op": ops.EOF, "reason": message}
            elif op == ops.TIMEOUT:
                self._worker_alive = False
        self.mailbox.put(message)

    def _drain_stderr(self) -> None:
        with contextlib.suppress(Exception):
            for chunk in self.process.stderr_chunks():
                self._stderr_tail.extend(chunk)
                del self._stderr_tail[:-_STDERR_TAIL_BYTES]

    # -- the WorkerTransport ---------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """The worker's ``ready`` message."""
        return self._info

    @property
    def alive(self) -> bool:
        """Whether the worker and its supervisor are running."""
        with self._state:
            return self._worker_alive and not self._supervisor_gone and not self._killed

    @property
    def supervisor_alive(self) -> bool:
        """True while the supervisor (and so the sandbox) can take messages."""
        with self._state:
            return not self._supervisor_gone and not self._killed

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker's ``ready`` (at most `timeout_s`) and return it."""
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.mailbox.get()
                op = message.get("op")
                if op == ops.READY and message.get("generation") == self._generation:
                    break
                if op == ops.EOF and (message is EOF or message["reason"].get("generation") == self._generation):
                    raise WorkerStartError(
                        f"the REPL worker did not start in sandbox {self.sandbox.id}: {self.describe_exit()}"
                    )
        version = worker_version()
        if message.get("worker_version") != version:
            raise WorkerStartError(
                f"sandbox {self.sandbox.id} runs worker version {message.get('worker_version')!r}, this host has "
                f"{version!r}: create the sandbox from this version's image (ModalREPL.image())"
            )
        self._info = message
        return message

    async def send(self, message: dict[str, Any]) -> None:
        """Write one message to the supervisor."""
        data = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        if not self.supervisor_alive:
            raise BrokenPipeError(f"the supervisor in sandbox {self.sandbox.id} is gone")
        with self._send_lock:
            self.process.write(data)
            self._last_sent = time.monotonic()

    async def receive(self) -> dict[str, Any]:
        """The next message from the worker or the supervisor."""
        return await self.mailbox.get()

    @contextlib.asynccontextmanager
    async def staged(self, payload: Payload, kind: str) -> AsyncIterator[str]:
        """Upload a context in chunks; yields the path the worker loads it from, deleted after."""
        name = f"load-{next(_upload_names)}"
        upload_dir = self._info.get("upload_dir")
        if not upload_dir:
            raise WorkerStartError("the sandbox's supervisor did not say where uploads go")
        await asyncio.to_thread(self._upload, name, payload)
        try:
            yield f"{upload_dir}/{name}"
        finally:
            with contextlib.suppress(OSError):
                await self.send({"op": ops.DISCARD, "name": name})

    def _upload(self, name: str, payload: Payload) -> None:
        writer = _ChunkedUpload(name, self._write)
        payload(writer)
        writer.finish()

    async def reset(self) -> bool:
        """Restart the worker inside the same sandbox; False when the supervisor is gone."""
        if not self.supervisor_alive:
            return False
        with self._state:
            self._generation += 1
            self._worker_alive = False
            self._exit = None
        try:
            await self.send({"op": ops.RESTART})
        except OSError:
            return False
        return True

    async def settle(self) -> None:
        """Wait until the sandbox's exit is known, if it is ending."""
        if self._supervisor_gone and self._sandbox_code is None:
            with contextlib.suppress(Exception):
                self._sandbox_code = await asyncio.to_thread(self.sandbox.poll)

    def describe_exit(self) -> str:
        """Why the worker or its sandbox stopped, in words."""
        exit_message = self._exit
        if exit_message is not None and not self._supervisor_gone:
            reason = _describe_code(exit_message.get("code"))
            tail = str(exit_message.get("stderr") or "").strip()
        else:
            code = self._sandbox_code
            reason = "the sandbox's supervisor stopped" + (
                f" (the sandbox ended with code {code})" if code is not None else ""
            )
            tail = bytes(self._stderr_tail).decode("utf-8", "replace").strip()
        if tail:
            reason += f"; its last words: {tail[-600:]}"
        return reason

    def kill(self, *, force: bool = False) -> None:
        """Kill the worker (and the sandbox, with `force` or when it cannot be reused)."""
        with self._state:
            if self._killed:
                return
            self._killed = True
            self._worker_alive = False
        self.held = False
        _pinged.discard(self)
        _open_channels.discard(self)
        if self.owned or force:
            terminate_in_background(self.sandbox)
        else:
            self._shut_down_supervisor_in_background()
        self.mailbox.put(EOF)
        if self.owned and self._pool is not None:
            self._pool._free()

    def _shut_down_supervisor_in_background(self) -> None:
        def run() -> None:
            with contextlib.suppress(Exception), self._send_lock:
                self.process.write(encode_message({"op": ops.SHUTDOWN}))
                self.process.close_stdin()

        _in_background(run, "rlm-supervisor-shutdown")

    async def release(self, *, reusable: bool) -> None:
        """Give the sandbox back to its pool, or end it."""
        self.held = False
        _pinged.discard(self)
        pool = self._pool
        if reusable and self.reusable and pool is not None and pool._worth_keeping(self) and await self.reset():
            if pool._park(self):
                return
        self.kill()

    def _hold(self) -> None:
        self.held = True
        if self.ping_every_s is not None:
            _pinged.add(self)
            _ensure_pinger()

    def _ping_if_due(self, now: float) -> None:
        if self.ping_every_s is None or now - self._last_sent < self.ping_every_s or not self.supervisor_alive:
            return
        if not self._send_lock.acquire(blocking=False):
            return  # a send is under way, which is activity enough
        try:
            self.process.write(encode_message({"op": ops.PING}))
            self._last_sent = now
        except Exception:  # gone: the reader thread notices
            pass
        finally:
            self._send_lock.release()


class _ChunkedUpload:
    """A write-only file object that sends what is written as base64 ``upload`` chunks."""

    def __init__(self, name: str, write: Callable[[bytes], None]) -> None:
        self._name = name
        self._write = write
        self._buffer = bytearray()
        self._sent_any = False

    def write(self, data: bytes) -> int:
        self._buffer.extend(data)
        while len(self._buffer) >= _UPLOAD_CHUNK_BYTES:
            self._send(bytes(self._buffer[:_UPLOAD_CHUNK_BYTES]))
            del self._buffer[:_UPLOAD_CHUNK_BYTES]
        return len(data)

    def finish(self) -> None:
        if self._buffer or not self._sent_any:
            self._send(bytes(self._buffer))
            self._buffer.clear()

    def _send(self, chunk: bytes) -> None:
        encoded = base64.b64encode(chunk)
        head = b'{"op":"' + ops.UPLOAD.encode() + b'","name":"' + self._name.encode("ascii") + b'","append":'
        self._write(head + (b"true" if self._sent_any else b"false") + b',"data":"' + encoded + b'"}\n')
        self._sent_any = True


def _describe_code(code: Any) -> str:
    if not isinstance(code, int):
        return "it stopped"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return "it was killed (SIGKILL; out of memory?)"
        return f"it was stopped by {name}"
    if code == _EXIT_OUT_OF_MEMORY:
        return "it ran out of memory"
    return f"it exited with code {code}"


# --------------------------------------------------------------------------------- pinger

_pinged: weakref.WeakSet[SandboxChannel] = weakref.WeakSet()
_open_channels: weakref.WeakSet[SandboxChannel] = weakref.WeakSet()
_pinger_lock = threading.Lock()
_pinger_started = False


def _ensure_pinger() -> None:
    """One thread pings every held sandbox, so its supervisor's idle timer only fires if the host is gone."""
    global _pinger_started
    with _pinger_lock:
        if _pinger_started:
            return
        _pinger_started = True

    def run() -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for channel in list(_pinged):
                if channel.held:
                    channel._ping_if_due(now)

    threading.Thread(target=run, name="rlm-sandbox-pinger", daemon=True).start()


@atexit.register
def _shutdown() -> None:
    """At exit: end every sandbox this process still holds or parked, and wait for the calls."""
    for channel in list(_open_channels):
        channel.kill()
    _wait_for_terminations()
