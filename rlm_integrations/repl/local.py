"""`LocalREPL`: the default REPL, a sandboxed worker process on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import keyword
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

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
from rlm_integrations.repl._pool import default_pool
from rlm_integrations.repl._process import WorkerProcess
from rlm_integrations.repl.protocol import CellResult, FinalAnswer, HostCallback

__all__ = ["LocalREPL"]

T = TypeVar("T")
Policy = Literal["restricted", "unrestricted"]

_CHUNK_CHARS = 8 * 1024 * 1024
_CALLBACK_ERROR_TYPES = ("KeyError", "TimeoutError", "TypeError", "ValueError")
_RESERVED_NAMES = frozenset({"FINAL", "FINAL_VAR", "SHOW_VARS", "print"})


class LocalREPL:
    """A persistent, sandboxed Python namespace in a worker process on this machine.

    Cells are compiled with RestrictedPython (the first wall) and run in a separate worker
    process with no environment, a scratch directory, no network where the OS allows it,
    and OS limits on memory, CPU time and file writes (the second wall). A cell that runs
    past `cell_timeout_s` is stopped by killing the worker from outside; the REPL then
    starts a fresh worker, reloads what was passed to `load`, and reports the variables
    that were lost. See docs/security.md for what each wall does and does not stop.

    Args:
        cell_timeout_s: wall-clock limit per cell in seconds, not counting time spent in
            host callbacks; None for no limit.
        memory_limit_mb: address space the worker may use beyond what it holds after
            loading the context (which gets twice its size again as working room);
            None means 2048.
        max_output_chars: bound on each cell's printed output and value repr; longer
            output keeps its head and tail around a marker.
        policy: ``"restricted"`` (RestrictedPython, the default) or ``"unrestricted"``
            (plain Python, OS walls only: for containers that are the boundary, such as Modal).
        pool: take a pre-started worker from the warm pool if one is ready.
        python: interpreter for the worker (default: the running one; disables the pool).
        start_timeout_s: how long to wait for a worker to report ready.

    Example:
        ```python
        async with LocalREPL(cell_timeout_s=10) as repl:
            await repl.load("context", "some long text")
            cell = await repl.execute("len(context)")
            assert cell.value == "14"
        ```
    """

    def __init__(
        self,
        *,
        cell_timeout_s: float | None = 30.0,
        memory_limit_mb: int | None = None,
        max_output_chars: int = 10_000,
        policy: Policy = "restricted",
        pool: bool = True,
        python: str | None = None,
        start_timeout_s: float = 30.0,
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
        self.use_pool = pool and python is None
        self.python = python
        self.start_timeout_s = start_timeout_s
        self._worker: WorkerProcess | None = None
        self._callbacks: dict[str, HostCallback] = {}
        self._loaded: dict[str, Any] = {}
        self._variables: list[str] = []
        self._closed = False
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._pending_definitions = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker (idempotent); restarts it if it died."""
        self._check_open()
        if self._worker is not None and self._worker.alive:
            return
        async with self._guard():
            await self._ensure_worker()

    async def close(self) -> None:
        """Kill the worker and remove its scratch directory (idempotent)."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()

    async def __aenter__(self) -> LocalREPL:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __enter__(self) -> LocalREPL:
        self.start_sync()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_sync()

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before start or after close)."""
        return self._worker.pid if self._worker is not None else None

    @property
    def network_isolated(self) -> bool:
        """Whether the worker runs in its own network namespace (no network at all)."""
        return bool(self._worker is not None and self._worker.info.get("network_isolated"))

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
        worker = self._worker
        if worker is not None and worker.alive:
            # Defined lazily on the next request so `register` can stay synchronous.
            self._pending_definitions = True

    async def load(self, name: str, value: Any) -> None:
        """Bind `value` to `name` in the namespace, through a file rather than the pipe.

        Accepts str (up to hundreds of MB), bytes, and JSON-compatible data (lists,
        dicts, numbers, bools, None). The value is kept on the host and reloaded if the
        worker is restarted.

        Raises:
            UnsupportedContextError: for any other type.
        """
        self._check_open()
        _check_name(name)
        payload, kind = _serialize(value)
        async with self._guard():
            await self._ensure_worker()
            assert self._worker is not None
            await self._transfer(self._worker, name, payload, kind)
            self._loaded[name] = value

    async def execute(self, code: str) -> CellResult:
        """Run one cell; errors inside it come back in the result, never raised here."""
        self._check_open()
        if not isinstance(code, str):
            raise UsageError(f"code must be a str, got {type(code).__name__}")
        async with self._guard():
            await self._ensure_worker()
            return await self._run_cell(code)

    async def get(self, name: str) -> Any:
        """Return a variable's value: plain data exactly, anything else as its repr.

        Raises:
            KeyError: no such variable.
        """
        self._check_open()
        async with self._guard():
            worker = await self._ensure_worker()
            reply = await self._request(worker, {"op": "get", "name": name})
        if reply["op"] != "value":
            raise KeyError(name)
        value, _exact = decode_value(reply)
        return value

    async def variables(self) -> list[str]:
        """Names defined in the namespace (loaded values and cell assignments)."""
        self._check_open()
        async with self._guard():
            worker = await self._ensure_worker()
            reply = await self._request(worker, {"op": "variables"})
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
            raise REPLClosedError("this REPL is closed; create a new LocalREPL")

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    async def _ensure_worker(self) -> WorkerProcess:
        self._check_open()
        worker = self._worker
        if worker is not None and worker.alive:
            if self._pending_definitions:
                await self._define_callbacks(worker)
            return worker
        if worker is not None:
            worker.kill()
            self._worker = None
        return await self._spawn()

    async def _spawn(self) -> WorkerProcess:
        worker = default_pool.take() if self.use_pool else None
        if worker is None:
            try:
                worker = WorkerProcess(self.python)
            except OSError as error:
                raise WorkerStartError(f"could not start the REPL worker: {error}") from error
        try:
            ready = await asyncio.wait_for(worker.mailbox.get(), self.start_timeout_s)
            if ready.get("op") != "ready":
                raise WorkerStartError(f"the REPL worker did not start: {worker.describe_exit()}")
            configure = {
                "op": "configure",
                "policy": self.policy,
                "max_output_chars": self.max_output_chars,
                "memory_limit_mb": self.memory_limit_mb,
            }
            await self._request(worker, configure)
            await self._define_callbacks(worker)
            for name, value in self._loaded.items():
                payload, kind = _serialize(value)
                await self._transfer(worker, name, payload, kind)
        except TimeoutError:
            worker.kill()
            raise WorkerStartError(f"the REPL worker did not report ready within {self.start_timeout_s:g} s") from None
        except BaseException:
            worker.kill()
            raise
        self._worker = worker
        self._variables = list(self._loaded)
        return worker

    async def _define_callbacks(self, worker: WorkerProcess) -> None:
        self._pending_definitions = False
        if self._callbacks:
            await self._request(worker, {"op": "define", "names": list(self._callbacks)})

    async def _request(self, worker: WorkerProcess, message: dict[str, Any]) -> dict[str, Any]:
        try:
            worker.send(message)
        except (BrokenPipeError, OSError) as error:
            raise WorkerCrashedError(f"the REPL worker is gone: {worker.describe_exit()}") from error
        reply = await worker.mailbox.get()
        if reply["op"] == "eof":
            raise WorkerCrashedError(f"the REPL worker stopped: {worker.describe_exit()}")
        return reply

    async def _transfer(self, worker: WorkerProcess, name: str, payload: Callable[[Any], None], kind: str) -> None:
        directory = _transfer_directory()
        handle, path = tempfile.mkstemp(prefix="rlm-load-", dir=directory)
        try:
            with os.fdopen(handle, "wb") as file:
                await asyncio.to_thread(payload, file)
            reply = await self._request(worker, {"op": "load", "name": name, "path": path, "format": kind})
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if reply["op"] != "ok":
            raise WorkerCrashedError(f"the REPL worker could not load {name!r}: {reply.get('error')}")

    async def _run_cell(self, code: str) -> CellResult:
        worker = self._worker
        assert worker is not None
        names_before = list(self._variables)
        limit = self.cell_timeout_s
        cpu_limit = None if limit is None else 2 * limit + 5
        loop = asyncio.get_running_loop()
        started = loop.time()
        active = 0.0
        try:
            worker.send({"op": "exec", "code": code, "cpu_limit_s": cpu_limit})
            resumed = loop.time()
            while True:
                remaining = None if limit is None else max(limit - active, 0.0)
                try:
                    async with asyncio.timeout(remaining):
                        message = await worker.mailbox.get()
                except TimeoutError:
                    return await self._recover(names_before, timed_out=True, duration=loop.time() - started)
                active += loop.time() - resumed
                op = message["op"]
                if op == "callback":
                    reply = await self._answer_callback(message)
                    worker.send(reply)
                    resumed = loop.time()
                    continue
                if op == "eof":
                    return await self._recover(names_before, timed_out=False, duration=loop.time() - started)
                if op == "result":
                    self._variables = list(message.get("variables", []))
                    return _cell_result(message)
                return CellResult(error=str(message.get("error")), error_type=message.get("error_type", "WorkerError"))
        except (BrokenPipeError, ConnectionResetError):
            return await self._recover(names_before, timed_out=False, duration=loop.time() - started)
        except BaseException:
            # Cancelled (or the host failed) mid-cell: the worker may still be running it.
            self._worker = None
            worker.kill()
            raise

    async def _recover(self, names_before: list[str], *, timed_out: bool, duration: float) -> CellResult:
        old = self._worker
        assert old is not None
        self._worker = None
        if timed_out:
            old.kill()
            reason = f"TimeoutError: the cell ran longer than its {self.cell_timeout_s:g} s limit and was stopped"
        else:
            await asyncio.to_thread(_wait_briefly, old)
            reason = f"WorkerCrashed: the REPL worker died while running the cell: {old.describe_exit()}"
            old.kill()
        try:
            await self._spawn()
        except Exception as error:
            raise WorkerCrashedError(f"{reason}; restarting the worker failed: {error}") from error
        lost = [name for name in names_before if name not in self._loaded]
        reloaded = ", ".join(self._loaded) or "nothing"
        message = f"{reason}. The REPL was restarted; reloaded: {reloaded}."
        if lost:
            message += f" Lost variables (re-create them if you need them): {', '.join(lost)}."
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
            result = await _invoke(function, args, kwargs)
            json.dumps(result)
        except Exception as error:
            return {
                "op": "callback_result",
                "ok": False,
                "error": f"{name}() failed: {error}" if str(error) else f"{name}() failed: {type(error).__name__}",
                "error_type": _callback_error_type(error),
            }
        return {"op": "callback_result", "ok": True, "value": result}


async def _invoke(function: HostCallback, args: list[Any], kwargs: dict[str, Any]) -> Any:
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


def _wait_briefly(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 1.0
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)


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


def _serialize(value: Any) -> tuple[Callable[[Any], None], str]:
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


def _transfer_directory() -> str | None:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(shm).free > 256 * 1024 * 1024:
                return shm
    return None
