"""The supervisor: runs inside a remote sandbox, between the host and one worker process.

The host cannot kill a single process inside a Modal sandbox, only the whole sandbox, so
this small program stands in for the host's `kill`. The host execs it in the sandbox;
it starts the same worker program as the local REPL (`worker.main.main`) as a child in its
own process group and relays the worker's JSON lines in both directions over its own
stdin/stdout, untouched, except for a few ops of its own:

host -> supervisor (never forwarded, never answered):
- ``upload``: append a base64 chunk to a file in the upload directory (a context
  arrives in chunks, then the host sends the worker a ``load`` naming that file);
- ``discard``: delete an uploaded file;
- ``restart``: kill the worker's process group, wipe its scratch and upload
  directories, start a fresh worker (its ``ready`` follows);
- ``shutdown``: kill the worker and exit;
- ``ping``: nothing (the host is still there).

supervisor -> host:
- ``ready`` is the worker's own, with ``generation``, ``worker_version``,
  ``upload_dir`` and ``supervisor_pid`` added;
- ``timeout``: the running cell used up its ``wall_limit_s`` (time spent waiting on
  host callbacks excluded) and the worker was killed;
- ``worker_exit``: the worker stopped by itself (crash, memory, signal), with its exit
  code and the end of its stderr.

Lines from a worker that was killed are dropped, so the host never sees a stale reply.
The supervisor exits (killing the worker) when its stdin closes, on ``shutdown``, and
after ``idle_timeout_s`` without a message from the host (which pings while it holds the
sandbox), so a sandbox whose host vanished goes idle and Modal's own idle timeout ends it.

Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import rlm_integrations.repl.wire.schema as ops

__all__ = ["BOOTSTRAP", "WORKER_MODULES", "import_packages", "import_roots", "main", "worker_command", "worker_version"]

WORKER_MODULES: tuple[str, ...] = (
    "__init__.py",
    "repl/__init__.py",
    "repl/wire/__init__.py",
    "repl/wire/codec.py",
    "repl/wire/jsonio.py",
    "repl/wire/schema.py",
    "repl/worker/__init__.py",
    "repl/worker/host_calls.py",
    "repl/worker/lockdown.py",
    "repl/worker/main.py",
    "repl/worker/notebook.py",
    "repl/worker/output.py",
    "repl/worker/policy.py",
    "repl/worker/safe_modules.py",
    "repl/worker/supervisor.py",
)
"""Files of the `rlm_integrations` package that the worker and this supervisor need, and nothing else."""

BOOTSTRAP = "import sys; sys.path[:0] = {roots!r}; from rlm_integrations.repl.worker.main import main; main()"
"""The ``-c`` program that starts the worker, given the directories to put on ``sys.path``."""
_STDERR_TAIL_BYTES = 4096
_CALLBACK_PREFIX = b'{"op":"' + ops.CALLBACK.encode() + b'"'
_READY_PREFIX = b'{"op":"' + ops.READY.encode() + b'"'


def worker_version(package_root: str | Path | None = None) -> str:
    """A short hash of the worker's source files: host and sandbox must agree on it."""
    root = Path(package_root) if package_root is not None else Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for relative in WORKER_MODULES:
        digest.update(relative.encode() + b"\0")
        digest.update((root / relative).read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:16]


def import_packages() -> list[tuple[str, str]]:
    """The top-level packages (and single-file modules) the worker imports, with where each lives.

    This package, RestrictedPython, and pyseccomp (for the seccomp filter) when it is
    installed; nothing else, so a launcher that shows the worker only these sees no
    more of the host than they hold.
    """
    import importlib.util

    found = [("rlm_integrations", str(Path(__file__).resolve().parents[2]))]
    for name in ("RestrictedPython", "pyseccomp"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin).resolve()
        found.append((name, str(origin.parent if spec.submodule_search_locations is not None else origin)))
    return found


def import_roots() -> list[str]:
    """Directories the worker needs on sys.path: those holding `import_packages`."""
    roots: list[str] = []
    for _, path in import_packages():
        root = str(Path(path).parent)
        if root not in roots:
            roots.append(root)
    return roots


def worker_command(python: str | None = None) -> list[str]:
    """The command that starts the worker program as a plain process (no bubblewrap).

    The worker speaks the protocol on its stdin and stdout, one JSON line each way; give
    it an empty environment (``env={}``). It locks itself down as far as it can alone
    (see `lockdown`), but without an OS sandbox around it nothing but RestrictedPython
    stands between a cell and this machine.
    """
    return [python or sys.executable, "-I", "-B", "-c", BOOTSTRAP.format(roots=import_roots())]


class _Cell:
    """Wall-clock accounting for the cell in flight: paused while the host answers a callback."""

    def __init__(self, limit_s: float | None) -> None:
        self.limit_s = limit_s
        self.remaining = limit_s
        self.resumed = time.monotonic()
        self.paused = False

    def deadline(self) -> float | None:
        if self.remaining is None or self.paused:
            return None
        return self.resumed + self.remaining

    def pause(self) -> None:
        if not self.paused and self.remaining is not None:
            self.remaining -= time.monotonic() - self.resumed
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.resumed = time.monotonic()


class Supervisor:
    """Owns one worker at a time and the relay around it."""

    def __init__(self, host_in: IO[bytes], host_out: IO[bytes], *, idle_timeout_s: float | None) -> None:
        self._host_in = host_in
        self._host_out = host_out
        self._idle_timeout_s = idle_timeout_s
        self._root = tempfile.mkdtemp(prefix="rlm-supervisor-")
        self._version = worker_version()
        self._roots = import_roots()
        # One lock guards the state below and every write to the host, so a kill and the
        # relay of a line from the killed worker cannot interleave.
        self._lock = threading.Condition()
        self._generation = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch = ""
        self._upload_dir = ""
        self._failed_uploads: dict[str, str] = {}
        self._cell: _Cell | None = None
        self._last_host_message = time.monotonic()
        self._stopping = False

    # -- the worker -------------------------------------------------------------------------
    def _start_worker(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._scratch = tempfile.mkdtemp(prefix="worker-", dir=self._root)
            self._upload_dir = tempfile.mkdtemp(prefix="uploads-", dir=self._root)
            self._failed_uploads = {}
            self._cell = None
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", BOOTSTRAP.format(roots=self._roots)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd=self._scratch,
                start_new_session=True,
                close_fds=True,
            )
            self._process = process
        tail = bytearray()
        stderr_done = threading.Event()
        threading.Thread(target=self._drain_stderr, args=(process, tail, stderr_done), daemon=True).start()
        threading.Thread(target=self._relay_worker, args=(process, generation, tail, stderr_done), daemon=True).start()

    def _kill_worker(self) -> None:
        """Kill the current worker's process group and remove its directories (lock held)."""
        process, self._process = self._process, None
        self._cell = None
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
        for directory in (self._scratch, self._upload_dir):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _drain_stderr(process: subprocess.Popen[bytes], tail: bytearray, done: threading.Event) -> None:
        assert process.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := process.stderr.read1(65536):  # type: ignore[attr-defined]
                tail.extend(chunk)
                del tail[:-_STDERR_TAIL_BYTES]
        done.set()

    def _relay_worker(
        self, process: subprocess.Popen[bytes], generation: int, tail: bytearray, stderr_done: threading.Event
    ) -> None:
        assert process.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in process.stdout:
                with self._lock:
                    if generation != self._generation or self._process is not process:
                        return  # a killed worker: drop whatever it still had to say
                    if line.startswith(_READY_PREFIX):
                        line = self._augment_ready(line)
                    elif self._cell is not None:
                        if line.startswith(_CALLBACK_PREFIX):
                            self._cell.pause()
                        else:
                            self._cell = None  # the cell's reply
                        self._lock.notify_all()
                    self._write(line)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)
        stderr_done.wait(1)
        with self._lock:
            if generation != self._generation or self._process is not process:
                return
            self._process = None
            self._cell = None
            self._lock.notify_all()
            self._write_message(
                {
                    "op": ops.WORKER_EXIT,
                    "code": process.returncode,
                    "stderr": bytes(tail).decode("utf-8", "replace")[-600:],
                    "generation": generation,
                }
            )

    def _augment_ready(self, line: bytes) -> bytes:
        message = json.loads(line)
        message.update(
            generation=self._generation,
            worker_version=self._version,
            upload_dir=self._upload_dir,
            supervisor_pid=os.getpid(),
        )
        return json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"

    # -- the host ---------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        try:
            self._host_out.write(data)
            self._host_out.flush()
        except (OSError, ValueError):
            self._stopping = True

    def _write_message(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n")

    def _forward(self, line: bytes) -> None:
        process = self._process
        if process is None or process.stdin is None:
            return  # the worker is gone; the host has been (or will be) told why
        try:
            process.stdin.write(line)
            process.stdin.flush()
        except (OSError, ValueError):
            pass  # it died; its relay thread reports the exit

    def _upload_path(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad upload name {name!r}")
        return os.path.join(self._upload_dir, name)

    def _upload(self, message: dict[str, Any]) -> None:
        name = str(message.get("name", ""))
        try:
            path = self._upload_path(name)
            data = base64.b64decode(message.get("data", ""), validate=True)
            with open(path, "ab" if message.get("append") else "wb") as file:
                file.write(data)
        except (OSError, ValueError, binascii.Error) as error:
            self._failed_uploads.setdefault(name, f"{type(error).__name__}: {error}")

    def _discard(self, message: dict[str, Any]) -> None:
        name = str(message.get("name", ""))
        self._failed_uploads.pop(name, None)
        with contextlib.suppress(OSError, ValueError):
            os.unlink(self._upload_path(name))

    def _handle_host_line(self, line: bytes) -> bool:
        """Act on one line from the host; False means stop."""
        try:
            message = json.loads(line)
        except ValueError:
            return True
        op = message.get("op") if isinstance(message, dict) else None
        with self._lock:
            self._last_host_message = time.monotonic()
            if op == ops.UPLOAD:
                self._upload(message)
            elif op == ops.DISCARD:
                self._discard(message)
            elif op == ops.RESTART:
                self._kill_worker()
            elif op == ops.SHUTDOWN:
                return False
            elif op == ops.PING:
                self._lock.notify_all()
            elif op == ops.LOAD and os.path.basename(str(message.get("path", ""))) in self._failed_uploads:
                problem = self._failed_uploads[os.path.basename(str(message["path"]))]
                error = f"the upload into the sandbox failed: {problem}"
                self._write_message({"op": ops.ERROR, "id": message.get("id"), "error": error})
            else:
                if op == ops.EXEC:
                    limit = message.get("wall_limit_s")
                    self._cell = _Cell(float(limit) if limit is not None else None)
                    self._lock.notify_all()
                elif op == ops.CALLBACK_RESULT and self._cell is not None:
                    self._cell.resume()
                    self._lock.notify_all()
                self._forward(line)
        if op == ops.RESTART:
            self._start_worker()
        return True

    # -- the watchdog -----------------------------------------------------------------------
    def _watch(self) -> None:
        """Kill a cell that overruns its limit; end everything when the host stays away too long."""
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                wait: float | None = None
                cell = self._cell
                deadline = cell.deadline() if cell is not None else None
                if cell is not None and deadline is not None:
                    if now >= deadline:
                        self._kill_worker()
                        self._write_message({"op": ops.TIMEOUT, "limit_s": cell.limit_s})
                        continue
                    wait = deadline - now
                if self._idle_timeout_s is not None:
                    idle_until = self._last_host_message + self._idle_timeout_s
                    if now >= idle_until:
                        # Nobody is coming back; `serve` is blocked reading stdin, so exit from here.
                        self._stopping = True
                        self._generation += 1
                        self._kill_worker()
                        shutil.rmtree(self._root, ignore_errors=True)
                        os._exit(0)
                    wait = idle_until - now if wait is None else min(wait, idle_until - now)
                self._lock.wait(None if wait is None else max(wait, 0.001))

    def serve(self) -> None:
        """Relay until the host closes stdin, asks to shut down, or stays away too long."""
        self._start_worker()
        threading.Thread(target=self._watch, name="rlm-supervisor-watch", daemon=True).start()
        try:
            while not self._stopping:
                try:
                    line = self._host_in.readline()
                except (OSError, ValueError):
                    break
                if not line or not self._handle_host_line(line):
                    break
        finally:
            with self._lock:
                self._stopping = True
                self._generation += 1
                self._kill_worker()
                self._lock.notify_all()
            shutil.rmtree(self._root, ignore_errors=True)


def main() -> None:
    """Entry point: ``python -I -B -c <bootstrap> '{"idle_timeout_s": 300}'``."""
    settings: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    idle = settings.get("idle_timeout_s")
    host_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    host_out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    Supervisor(host_in, host_out, idle_timeout_s=float(idle) if idle is not None else None).serve()
    os._exit(0)


if __name__ == "__main__":
    main()
