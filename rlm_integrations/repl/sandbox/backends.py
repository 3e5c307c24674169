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
(`standin.py`) does it with local subprocesses: a "sandbox" is a scratch directory holding the same
staged worker tree that goes into the Modal image, its processes run with an empty
environment in their own sessions, and it honours the lifetime and idle timeout. It is
how the tests and the benchmark run the complete protocol path without Modal. It does
not emulate gVisor, the CPU and memory caps, or Modal's network block (the worker's own
walls still apply: its network namespace where the OS allows, rlimits, RestrictedPython).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import tempfile
import threading
from collections.abc import Iterator
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
