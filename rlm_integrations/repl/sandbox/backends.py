"""The few sandbox calls `ModalREPL` makes, behind a narrow interface, and two implementations.

The interface (`SandboxBackend` → `Sandbox` → `SandboxProcess`) is blocking on purpose:
`ModalREPL` calls it from threads, so one sandbox can serve REPL calls made from any
event loop (each `execute_sync` runs on a fresh one). What it needs from a backend:

- create a sandbox from a `SandboxSpec` (image with the pinned worker, network blocked,
  CPU and memory caps, lifetime, idle timeout, region), or attach to one by id;
- exec one long-lived process in it (the supervisor) and talk to that process over its
  stdin (`write`, which returns once the bytes are delivered) and stdout (an iterator of
  byte chunks), reading its stderr for diagnostics;
- terminate the sandbox.

`ModalBackend` does this with Modal (imported only when first used). `StandInBackend`
does it with local subprocesses: a "sandbox" is a scratch directory holding the same
staged worker tree that goes into the Modal image, its processes run with an empty
environment in their own sessions, and it honours the lifetime and idle timeout. It is
how the tests and the benchmark run the complete protocol path without Modal. It does
not emulate gVisor, the CPU and memory caps, or Modal's network block (the worker's own
walls still apply: its network namespace where the OS allows, rlimits, RestrictedPython).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
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
from pathlib import Path
from typing import Any, Protocol

from rlm_integrations.repl.worker.supervisor import WORKER_MODULES, worker_version

__all__ = [
    "MODAL_WORKER_ROOT",
    "ModalBackend",
    "Sandbox",
    "SandboxBackend",
    "SandboxProcess",
    "SandboxSpec",
    "StandInBackend",
    "StandInSandbox",
    "stage_worker_tree",
]

MODAL_WORKER_ROOT = "/opt/rlm-integrations"
"""Where the image holds the worker's package tree (``<root>/rlm_integrations/...``)."""

_MODAL_WRITE_BYTES = 1024 * 1024  # Modal refuses more than 2 MiB of undrained stdin on one server path
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_stage_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    """Everything that decides what a new sandbox looks like (hashable: pooled sandboxes are keyed by it)."""

    app_name: str
    python_version: str
    packages: tuple[str, ...]
    cpu: float
    memory_mb: int
    timeout_s: int
    idle_timeout_s: int | None
    region: str | tuple[str, ...] | None
    environment_name: str | None = None
    image: Any = None
    """A `modal.Image` to build on (default: Debian slim with `python_version`)."""


class SandboxProcess(Protocol):
    """One process running in a sandbox, with piped stdin, stdout and stderr."""

    def write(self, data: bytes) -> None:
        """Deliver `data` to the process's stdin (blocking); raises `OSError` if it is gone."""
        ...

    def close_stdin(self) -> None:
        """Send end-of-file on stdin."""
        ...

    def stdout_chunks(self) -> Iterator[bytes]:
        """Its stdout as byte chunks (not necessarily whole lines), until it closes."""
        ...

    def stderr_chunks(self) -> Iterator[bytes]:
        """Its stderr as byte chunks, until it closes."""
        ...

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        ...


class Sandbox(Protocol):
    """A running sandbox."""

    @property
    def id(self) -> str:
        """The sandbox's id (``sb-...``)."""
        ...

    @property
    def python(self) -> str:
        """The interpreter to run inside it."""
        ...

    @property
    def worker_root(self) -> str:
        """The directory that holds ``rlm_integrations/`` inside it."""
        ...

    def exec(self, *argv: str) -> SandboxProcess:
        """Start a process inside the sandbox."""
        ...

    def terminate(self) -> None:
        """Stop the sandbox and everything in it (idempotent)."""
        ...

    def poll(self) -> int | None:
        """The sandbox's exit code, or None while it runs."""
        ...


class SandboxBackend(Protocol):
    """Creates sandboxes and attaches to existing ones."""

    name: str
    """``"modal"`` or ``"stand-in"``."""

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Start a new sandbox (blocking; the first Modal call also builds the image)."""
        ...

    def attach(self, sandbox_id: str) -> Sandbox:
        """A handle on an existing, running sandbox."""
        ...


def stage_worker_tree() -> Path:
    """A directory holding exactly the files the worker needs: ``<dir>/rlm_integrations/...``.

    Content-addressed by the worker version and reused across calls and processes. The
    Modal image copies it; the stand-in runs from it, so the tests prove it is complete.
    """
    version = worker_version(_PACKAGE_ROOT)
    target = Path(tempfile.gettempdir()) / f"rlm-integrations-worker-{version}"
    with _stage_lock:
        if all((target / "rlm_integrations" / name).is_file() for name in WORKER_MODULES):
            return target
        building = Path(tempfile.mkdtemp(prefix=f"{target.name}-building-", dir=target.parent))
        for name in WORKER_MODULES:
            destination = building / "rlm_integrations" / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_PACKAGE_ROOT / name, destination)
        try:
            building.rename(target)
        except OSError:  # another process staged it first
            shutil.rmtree(building, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------- Modal


class ModalBackend:
    """Real Modal sandboxes. Nothing is imported from `modal` until the first call."""

    name = "modal"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._apps: dict[tuple[str, str | None], Any] = {}
        self._images: dict[tuple[Any, ...], Any] = {}

    def _app(self, spec: SandboxSpec) -> Any:
        import modal

        key = (spec.app_name, spec.environment_name)
        with self._lock:
            app = self._apps.get(key)
        if app is None:
            app = modal.App.lookup(spec.app_name, create_if_missing=True, environment_name=spec.environment_name)
            with self._lock:
                self._apps[key] = app
        return app

    def image(self, spec: SandboxSpec) -> Any:
        """The image for `spec`: base image + pinned RestrictedPython, pyseccomp + extra packages + the worker tree."""
        import modal

        key = (id(spec.image), spec.python_version, spec.packages)
        with self._lock:
            cached = self._images.get(key)
        if cached is not None:
            return cached
        base = spec.image if spec.image is not None else modal.Image.debian_slim(python_version=spec.python_version)
        restricted_python = importlib.metadata.version("RestrictedPython")
        pyseccomp = importlib.metadata.version("pyseccomp")  # the worker's seccomp filter (wall 2)
        image = base.pip_install(
            f"RestrictedPython=={restricted_python}", f"pyseccomp=={pyseccomp}", *spec.packages
        ).add_local_dir(stage_worker_tree(), remote_path=MODAL_WORKER_ROOT, copy=True)
        with self._lock:
            self._images[key] = image
        return image

    def create(self, spec: SandboxSpec) -> Sandbox:
        """Create a sandbox: network blocked, CPU and memory capped (request = limit)."""
        import modal

        sandbox = modal.Sandbox.create(
            app=self._app(spec),
            image=self.image(spec),
            timeout=spec.timeout_s,
            idle_timeout=spec.idle_timeout_s,
            cpu=(spec.cpu, spec.cpu),
            memory=(spec.memory_mb, spec.memory_mb),
            block_network=True,
            region=list(spec.region) if isinstance(spec.region, tuple) else spec.region,
        )
        return _ModalSandbox(sandbox)

    def attach(self, sandbox_id: str) -> Sandbox:
        """A handle on a running sandbox by id (`modal.Sandbox.from_id`)."""
        import modal

        return _ModalSandbox(modal.Sandbox.from_id(sandbox_id))


class _ModalSandbox:
    python = "python"
    worker_root = MODAL_WORKER_ROOT

    def __init__(self, sandbox: Any) -> None:
        self._sandbox = sandbox

    @property
    def id(self) -> str:
        return str(self._sandbox.object_id)

    def exec(self, *argv: str) -> SandboxProcess:
        return _ModalProcess(self._sandbox.exec(*argv, text=False))

    def terminate(self) -> None:
        self._sandbox.terminate()

    def poll(self) -> int | None:
        code = self._sandbox.poll()
        return None if code is None else int(code)


class _ModalProcess:
    def __init__(self, process: Any) -> None:
        self._process = process

    def write(self, data: bytes) -> None:
        try:
            for start in range(0, len(data), _MODAL_WRITE_BYTES):
                self._process.stdin.write(data[start : start + _MODAL_WRITE_BYTES])
                self._process.stdin.drain()
        except Exception as error:  # Modal raises its own types once the process or sandbox is gone
            raise BrokenPipeError(f"{type(error).__name__}: {error}") from error

    def close_stdin(self) -> None:
        self._process.stdin.write_eof()
        self._process.stdin.drain()

    def stdout_chunks(self) -> Iterator[bytes]:
        return _as_bytes(self._process.stdout)

    def stderr_chunks(self) -> Iterator[bytes]:
        return _as_bytes(self._process.stderr)

    def poll(self) -> int | None:
        code = self._process.poll()
        return None if code is None else int(code)


def _as_bytes(stream: Any) -> Iterator[bytes]:
    for chunk in stream:
        yield chunk if isinstance(chunk, bytes) else str(chunk).encode("utf-8")


# ------------------------------------------------------------------------------ stand-in


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
        return self._process.pid

    def write(self, data: bytes) -> None:
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
        with contextlib.suppress(OSError), self._write_lock:
            if self._process.stdin is not None:
                self._process.stdin.close()

    def stdout_chunks(self) -> Iterator[bytes]:
        return _chunks(self._process.stdout)

    def stderr_chunks(self) -> Iterator[bytes]:
        return _chunks(self._process.stderr)

    def poll(self) -> int | None:
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
