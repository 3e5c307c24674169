"""`StandInBackend`: sandboxes that are local subprocesses, for tests and benchmarks without Modal.

A "sandbox" is a scratch directory holding the same staged worker tree that goes into
the Modal image; its processes run with an empty environment in their own sessions, and
it honours the lifetime and idle timeout. It does not emulate gVisor, the CPU and memory
caps, or Modal's network block (the worker's own walls still apply).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rlm_integrations.repl.sandbox.backends import SandboxSpec, stage_worker_tree

__all__ = ["StandInBackend", "StandInProcess", "StandInSandbox"]


class StandInBackend:
    """Sandboxes that are local subprocesses, for tests and benchmarks without Modal.

    Args:
        python: the interpreter the "sandbox" runs (default: this one).
        create_delay_s: sleep this long in `create`, to imitate a cold start.

    Attributes:
        created: every sandbox this backend created, in order (tests inspect them).
    """

    name = "stand-in"

    def __init__(self, *, python: str | None = None, create_delay_s: float = 0.0) -> None:
        self.python = python or sys.executable
        self.create_delay_s = create_delay_s
        self.created: list[StandInSandbox] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def create(self, spec: SandboxSpec) -> StandInSandbox:
        """Start a stand-in sandbox for `spec` (only its lifetime and idle timeout are honoured)."""
        if self.create_delay_s:
            time.sleep(self.create_delay_s)
        with self._lock:
            sandbox = StandInSandbox(f"sb-standin-{os.getpid()}-{next(self._ids)}", spec, self.python)
            self.created.append(sandbox)
        return sandbox

    def attach(self, sandbox_id: str) -> StandInSandbox:
        """The running stand-in sandbox with this id."""
        with self._lock:
            for sandbox in self.created:
                if sandbox.id == sandbox_id and sandbox.poll() is None:
                    return sandbox
        raise LookupError(f"no running stand-in sandbox with id {sandbox_id!r}")

    @property
    def running(self) -> list[StandInSandbox]:
        """The sandboxes not yet terminated."""
        with self._lock:
            return [sandbox for sandbox in self.created if sandbox.poll() is None]


class StandInSandbox:
    """One stand-in sandbox: a scratch directory and the processes started in it."""

    def __init__(self, sandbox_id: str, spec: SandboxSpec, python: str) -> None:
        self._id = sandbox_id
        self.spec = spec
        self.python = python
        self.worker_root = str(stage_worker_tree())
        self.root = tempfile.mkdtemp(prefix="rlm-standin-")
        self.exit_code: int | None = None
        self.execs = 0
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Condition()
        self._started = time.monotonic()
        self._last_activity = self._started
        threading.Thread(target=self._watch, name=f"{sandbox_id}-watch", daemon=True).start()

    @property
    def id(self) -> str:
        """The sandbox's id."""
        return self._id

    def exec(self, *argv: str) -> StandInProcess:
        """Start `argv` in the sandbox's directory, with an empty environment but TMPDIR."""
        with self._lock:
            if self.exit_code is not None:
                raise RuntimeError(f"sandbox {self._id} has terminated")
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"TMPDIR": self.root},
                cwd=self.root,
                start_new_session=True,
                close_fds=True,
            )
            self._processes.append(process)
            self.execs += 1
            self._last_activity = time.monotonic()
        return StandInProcess(process, self)

    def touch(self) -> None:
        """Record activity (stdin written), which defers the idle timeout."""
        with self._lock:
            self._last_activity = time.monotonic()

    def terminate(self, exit_code: int = 137) -> None:
        """Kill every process in the sandbox, their children included, and remove its directory."""
        with self._lock:
            if self.exit_code is not None:
                return
            self.exit_code = exit_code
            processes = list(self._processes)
            self._lock.notify_all()
        victims = {p.pid for p in processes}
        for process in processes:
            victims |= _descendants(process.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            for stream in (process.stdin, process.stdout, process.stderr):
                with contextlib.suppress(OSError, ValueError):
                    if stream is not None:
                        stream.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def freeze(self) -> None:
        """Stop (SIGSTOP) the processes exec'd in the sandbox, not their children: a hung supervisor."""
        for process in list(self._processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signal.SIGSTOP)

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.exit_code

    def _busy(self) -> bool:
        return any(p.poll() is None for p in self._processes)

    def _watch(self) -> None:
        """Modal's rules: end at the lifetime; end when idle (no running exec, no stdin) too long."""
        spec = self.spec
        with self._lock:
            while self.exit_code is None:
                now = time.monotonic()
                if now >= self._started + spec.timeout_s:
                    break
                if self._busy():
                    self._last_activity = now  # a running exec is activity
                elif spec.idle_timeout_s is not None and now >= self._last_activity + spec.idle_timeout_s:
                    break
                self._lock.wait(0.2)
            else:
                return
        self.terminate()


class StandInProcess:
    """A process in a stand-in sandbox."""

    def __init__(self, process: subprocess.Popen[bytes], sandbox: StandInSandbox) -> None:
        self._process = process
        self._sandbox = sandbox
        self._write_lock = threading.Lock()

    @property
    def pid(self) -> int:
        """The process id."""
        return self._process.pid

    def write(self, data: bytes) -> None:
        """Write to the process's stdin; returns once written."""
        stdin = self._process.stdin
        assert stdin is not None
        with self._write_lock:
            try:
                stdin.write(data)
                stdin.flush()
            except ValueError as error:  # closed
                raise BrokenPipeError(str(error)) from error
        self._sandbox.touch()

    def close_stdin(self) -> None:
        """Close the process's stdin."""
        with contextlib.suppress(OSError), self._write_lock:
            if self._process.stdin is not None:
                self._process.stdin.close()

    def stdout_chunks(self) -> Iterator[bytes]:
        """The process's stdout, in chunks as they come."""
        return _chunks(self._process.stdout)

    def stderr_chunks(self) -> Iterator[bytes]:
        """The process's stderr, in chunks as they come."""
        return _chunks(self._process.stderr)

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self._process.poll()


def _chunks(stream: Any) -> Iterator[bytes]:
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(1 << 16):
            yield chunk


def _descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending: Sequence[int] = [pid]
    while pending:
        nxt: list[int] = []
        for parent in pending:
            for child in children.get(parent, []):
                if child not in found:
                    found.add(child)
                    nxt.append(child)
        pending = nxt
    return found
