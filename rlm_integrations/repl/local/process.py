"""The host's handle on one worker process.

A reader thread turns the worker's protocol lines into messages in a mailbox that any
event loop can await, so a worker started on one loop (or by the warm pool, on none)
can serve a REPL on another. Killing is from outside: SIGKILL to the worker's process
group, which no code inside can catch.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from typing import IO, Any

import rlm_integrations.repl.wire.schema as ops

# How a worker is launched: inside bubblewrap where it works, with the supervisor's bootstrap.
from rlm_integrations.repl.local.isolation import Launch, plan_launch
from rlm_integrations.repl.transport import EOF, Mailbox
from rlm_integrations.repl.transport import encode_message as encode
from rlm_integrations.repl.wire.messages import decode_line, invalid, oversized
from rlm_integrations.repl.wire.schema import MAX_MESSAGE_BYTES

__all__ = ["EOF", "SEND_TIMEOUT_S", "Mailbox", "WorkerProcess", "encode"]

_STDERR_TAIL_BYTES = 4096
SEND_TIMEOUT_S = 30.0
"""How long the host waits for a worker to take one request before it counts as gone."""
_SIGNAL_REASONS = {
    signal.SIGKILL: "it was killed (SIGKILL)",
    signal.SIGXCPU: "it exceeded its CPU-time limit (SIGXCPU)",
    signal.SIGSEGV: "it crashed (SIGSEGV)",
    signal.SIGABRT: "it aborted (SIGABRT)",
}


class WorkerProcess:
    """A started worker: its process, scratch and staging directories, and message stream.

    The process is bubblewrap where it works here (see `isolation`), with the worker
    inside; its process group holds both, so killing the group kills the worker.

    Args:
        python: the interpreter to run the worker with (default: this one).
    """

    def __init__(self, python: str | None = None) -> None:
        self.scratch_dir = tempfile.mkdtemp(prefix="rlm-repl-")
        self.stage_dir = tempfile.mkdtemp(prefix="rlm-stage-", dir=_staging_root())
        directories = (self.scratch_dir, self.stage_dir)
        try:
            self.launch: Launch = plan_launch(python, self.scratch_dir, self.stage_dir)
            self._process = subprocess.Popen(
                self.launch.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd=self.scratch_dir,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            for directory in directories:
                shutil.rmtree(directory, ignore_errors=True)
            raise
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin: IO[bytes] = self._process.stdin
        # Raw, non-blocking writes with a deadline: a worker that stops reading (SIGSTOP to
        # itself, say) must never block the host's event loop in a full pipe.
        self._stdin_fd = self._stdin.fileno()
        os.set_blocking(self._stdin_fd, False)
        self.mailbox = Mailbox()
        self.ready = threading.Event()
        self.info: dict[str, Any] = {}
        self._stderr_tail = bytearray()
        self._send_lock = threading.RLock()  # reentrant: a send that gives up kills the worker
        # Threads hold no reference to `self`, so an abandoned worker is collected and killed.
        self._finalizer = weakref.finalize(self, _terminate, self._process, directories, self._send_lock)
        threading.Thread(
            target=_read_protocol,
            args=(self._process.stdout, self.mailbox, self.ready, self.info),
            name="rlm-worker-reader",
            daemon=True,
        ).start()
        self._stderr_reader = threading.Thread(
            target=_drain_stderr, args=(self._process.stderr, self._stderr_tail), name="rlm-worker-stderr", daemon=True
        )
        self._stderr_reader.start()

    def launch_output(self, timeout_s: float = 2.0) -> str:
        """Once the process has ended (say, before ``ready``): all it wrote to stderr (blocks briefly)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout_s)
        self._stderr_reader.join(timeout_s)
        return bytes(self._stderr_tail).decode("utf-8", "replace")

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self._process.poll() is None

    def send(self, message: dict[str, Any], timeout_s: float | None = None) -> None:
        """Write one message, blocking at most `timeout_s`.

        Raises `BrokenPipeError` if the worker is gone, or if it does not take the message
        within `timeout_s` (default `SEND_TIMEOUT_S`; a stopped or hostile worker that no
        longer reads): that worker is killed first.
        """
        self.write(encode(message), timeout_s)

    def write_now(self, data: bytes) -> bool:
        """Write `data` (at most `select.PIPE_BUF` bytes, so all or nothing) if the pipe takes it at once.

        Never blocks: False when the pipe is full or another send is under way (then use `write`).
        """
        if len(data) > select.PIPE_BUF or not self._send_lock.acquire(blocking=False):
            return False
        try:
            if self._stdin.closed:
                raise BrokenPipeError("the REPL worker is gone")
            return os.write(self._stdin_fd, data) == len(data)
        except BlockingIOError:
            return False
        finally:
            self._send_lock.release()

    def write(self, data: bytes, timeout_s: float | None = None) -> None:
        """Write encoded lines, blocking at most `timeout_s` in all (see `send`)."""
        if timeout_s is None:
            timeout_s = SEND_TIMEOUT_S
        deadline = time.monotonic() + timeout_s
        if not self._send_lock.acquire(timeout=timeout_s):
            self.kill()
            raise BrokenPipeError("the REPL worker stopped taking requests (another send never finished)")
        try:
            view = memoryview(data)
            poller = select.poll()
            poller.register(self._stdin_fd, select.POLLOUT)
            while view:
                if self._stdin.closed:  # killed (closing takes this lock, so the number is never reused here)
                    raise BrokenPipeError("the REPL worker is gone")
                try:
                    view = view[os.write(self._stdin_fd, view) :]
                    continue
                except BlockingIOError:
                    pass
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise BrokenPipeError(f"the REPL worker did not read its requests for {timeout_s:g} s")
                poller.poll(min(left, 0.5) * 1000)
        finally:
            self._send_lock.release()

    def kill(self) -> None:
        """Kill the worker's whole process group and remove its scratch directory (idempotent)."""
        self._finalizer()

    def describe_exit(self) -> str:
        """Why the worker stopped, in words, with the end of its stderr if it wrote any."""
        code = self._process.poll()
        if code is None:
            reason = "it stopped answering"
        elif code < 0:
            number = -code
            try:
                name = signal.Signals(number)
                reason = _SIGNAL_REASONS.get(name, f"it was stopped by {name.name}")
            except ValueError:
                reason = f"it was stopped by signal {number}"
        else:
            reason = "it ran out of memory" if code == 72 else f"it exited with code {code}"
        tail = bytes(self._stderr_tail).decode("utf-8", "replace").strip()
        if tail:
            reason += f"; its last words: {tail[-600:]}"
        return reason


def _read_protocol(stream: IO[bytes], mailbox: Mailbox, ready: threading.Event, info: dict[str, Any]) -> None:
    """Turn the worker's lines into messages, whatever it writes; `EOF` when its stream ends.

    Lines are read at most `MAX_MESSAGE_BYTES` at a time. A longer line, a line that is no
    message, a second ``ready`` or a flood ends the reading: the REPL replaces a worker that
    sends any of them, so the reader delivers one `invalid` message (then `EOF`) and reads
    no more, leaving a worker that keeps writing blocked instead of costing the host. A
    last line cut short by the worker's death is dropped (the death is what gets reported).
    """
    limit = MAX_MESSAGE_BYTES
    try:
        while not mailbox.flooded and (line := stream.readline(limit + 1)):
            if not line.endswith(b"\n"):
                if len(line) > limit:
                    mailbox.put(oversized())
                break  # too long, or the stream ended in the middle of a line
            message = decode_line(line)
            if message["op"] == ops.READY:
                if ready.is_set():
                    message = invalid("a second 'ready' from the same worker")
                else:
                    info.update((key, value) for key, value in message.items() if key != "wire_bytes")
                    ready.set()
            mailbox.put(message)
            if message["op"] == ops.INVALID:
                break
    except Exception:  # a closed or broken stream ends it like EOF
        pass
    mailbox.put(EOF)


def _drain_stderr(stream: IO[bytes], tail: bytearray) -> None:
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            tail.extend(chunk)
            del tail[:-_STDERR_TAIL_BYTES]


def _staging_root() -> str | None:
    """Where per-worker staging directories go: memory-backed /dev/shm when it has room."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(shm).free > 256 * 1024 * 1024:
                return shm
    return None


def _terminate(process: subprocess.Popen[bytes], directories: tuple[str, ...], send_lock: threading.RLock) -> None:
    # The group holds bubblewrap, its init inside the PID namespace and the worker: all die at once.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    # A send in flight fails at once now (no reader is left); its descriptor is closed only
    # after it lets go, so the number is never written to once another file reuses it.
    held = send_lock.acquire(timeout=5)
    try:
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
    finally:
        if held:
            send_lock.release()
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
