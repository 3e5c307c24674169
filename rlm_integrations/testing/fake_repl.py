"""`FakeREPL`: the REPL protocol in this process, for fast tests. NOT A SANDBOX.

It runs cells with the same notebook semantics as the worker (one namespace, the repr of
a trailing expression, short tracebacks, ``FINAL``/``FINAL_VAR``/``SHOW_VARS``, host
callbacks), but in a thread of the host process, with the host's full privileges.
"""

from __future__ import annotations

import asyncio
import json
import keyword
import time
from typing import TYPE_CHECKING, Any

from rlm_integrations.errors import ConfigError, REPLClosedError, UnsupportedContextError, UsageError
from rlm_integrations.repl.host.sync_forms import SyncForms
from rlm_integrations.repl.protocol import CellResult, FinalAnswer, HostCallback
from rlm_integrations.repl.wire.codec import decode_value, encode_value
from rlm_integrations.repl.worker.notebook import Notebook

if TYPE_CHECKING:
    from rlm_integrations.core.config import RLMConfig

__all__ = ["FakeREPL"]

_RESERVED_NAMES = frozenset({"FINAL", "FINAL_VAR", "SHOW_VARS", "print", "CallError"})
_CALLBACK_ERRORS: dict[str, type[Exception]] = {
    "KeyError": KeyError,
    "TimeoutError": TimeoutError,
    "TypeError": TypeError,
    "ValueError": ValueError,
}


class FakeREPL(SyncForms):
    """An in-process REPL for tests; NOT SAFE: never give it untrusted or LM-written code.

    **No sandbox.** There is no sandbox, no separate process, no policy and no limit: a cell runs as
    plain Python in a thread of the calling process, so it can read your files and
    environment, import anything, open sockets, and hang or crash the test process.
    Use it where the code it runs is written by the test (a `ScriptedLM` script), to
    test the engine without starting a worker process. Use `LocalREPL` for anything
    else.

    What it shares with the real REPLs (checked by the REPL contract tests): `load`,
    `execute`, `get`, `variables`, `register`, printed output and the trailing
    expression's repr in `CellResult`, errors as `CellResult.error` (never raised),
    ``FINAL``/``FINAL_VAR``, host callbacks (sync or async, arguments and result passed
    as JSON, failures reaching the cell as ValueError/TypeError/KeyError/TimeoutError/
    RuntimeError), idempotent `start`/`close`, `REPLClosedError` after `close`, and the
    ``*_sync`` forms. What it does not do: the restricted policy (cells are plain
    Python), cell timeouts (`cell_timeout_s` is accepted and ignored), memory limits and
    worker restarts.

    Args:
        max_output_chars: bound on each cell's printed output and value repr.
        cell_timeout_s: accepted for signature compatibility with `LocalREPL`; not enforced.

    Example:
        ```python
        from rlm_integrations.testing import FakeREPL

        with FakeREPL() as repl:
            repl.load_sync("context", "some long text")
            assert repl.execute_sync("len(context)").value == "14"
        ```
    """

    def __init__(self, *, max_output_chars: int = 10_000, cell_timeout_s: float | None = None) -> None:
        if isinstance(max_output_chars, bool) or not isinstance(max_output_chars, int) or max_output_chars < 100:
            raise ConfigError(f"max_output_chars must be an int of at least 100, got {max_output_chars!r}")
        self.max_output_chars = max_output_chars
        self.cell_timeout_s = cell_timeout_s
        self._notebook: Notebook | None = None
        self._callbacks: dict[str, HostCallback] = {}
        self._closed = False
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_cell = False

    @classmethod
    def from_config(cls, config: RLMConfig) -> FakeREPL:
        """A REPL factory for `RLM(repl=...)`: ``RLM(model, repl=FakeREPL.from_config)`` runs each run in-process."""
        return cls(max_output_chars=config.max_output_chars, cell_timeout_s=config.cell_timeout_s)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the namespace (idempotent)."""
        self._check_open()
        self._ensure()

    async def close(self) -> None:
        """Drop the namespace (idempotent); every other method then raises `REPLClosedError`."""
        self._closed = True
        self._notebook = None

    # -- the namespace ----------------------------------------------------------------------
    def register(self, name: str, function: HostCallback) -> None:
        """Make `function` (sync or async) callable from cells as `name(...)`."""
        self._check_open()
        _check_name(name)
        if not callable(function):
            raise UsageError(f"the callback for {name!r} must be callable, got {type(function).__name__}")
        self._callbacks[name] = function
        if self._notebook is not None:
            self._notebook.define_callback(name)

    async def load(self, name: str, value: Any) -> None:
        """Bind `value` (str, bytes, or JSON-compatible data, passed through JSON like the real REPLs) to `name`."""
        self._check_open()
        _check_name(name)
        copied = _loaded_copy(value)
        self._ensure().namespace[name] = copied

    async def execute(self, code: str) -> CellResult:
        """Run one cell in a thread; errors inside it come back in the result, never raised here."""
        self._check_open()
        if not isinstance(code, str):
            raise UsageError(f"code must be a str, got {type(code).__name__}")
        async with self._guard():
            notebook = self._ensure()
            self._loop = asyncio.get_running_loop()
            self._in_cell = True
            try:
                payload = await asyncio.to_thread(notebook.run, code)
            finally:
                self._in_cell = False
        return _cell_result(payload)

    async def get(self, name: str) -> Any:
        """A variable's value: plain data exactly (a copy), anything else as its repr.

        Raises:
            KeyError: no such variable.
        """
        self._check_open()
        notebook = self._ensure()
        if name not in notebook.variables():
            raise KeyError(name)
        value, _exact = decode_value(encode_value(notebook.namespace[name]))
        return value

    async def variables(self) -> list[str]:
        """Names defined in the namespace (loaded values and cell assignments), in definition order."""
        self._check_open()
        return self._ensure().variables()

    # -- internals --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise REPLClosedError("this REPL is closed; create a new FakeREPL")

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def _ensure(self) -> Notebook:
        if self._notebook is None:
            notebook = Notebook(restricted=False, max_output_chars=self.max_output_chars, call_host=self._call_host)
            for name in self._callbacks:
                notebook.define_callback(name)
            self._notebook = notebook
        return self._notebook

    def _call_host(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a host callback for a cell (called in the cell's thread); mirrors the worker's rules."""
        loop = self._loop
        if not self._in_cell or loop is None:
            raise RuntimeError(f"{name}() can only be called while a cell runs")
        function = self._callbacks.get(name)
        if function is None:
            raise NameError(f"{name}() is not available")
        try:
            sent = json.loads(json.dumps([list(args), kwargs]))
        except (TypeError, ValueError, RecursionError) as error:
            raise TypeError(
                f"{name}() arguments must be JSON-compatible (str, numbers, lists, dicts): {error}"
            ) from None
        started = time.perf_counter()
        try:
            future = asyncio.run_coroutine_threadsafe(_invoke(function, sent[0], sent[1]), loop)
            result = future.result()
            returned = json.loads(json.dumps(result))
        except Exception as error:
            message = f"{name}() failed: {error}" if str(error) else f"{name}() failed: {type(error).__name__}"
            raise _callback_error_class(error)(message) from None
        finally:
            notebook = self._notebook
            if notebook is not None:
                notebook.callback_seconds += time.perf_counter() - started
        return returned


async def _invoke(function: HostCallback, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if asyncio.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    result = await asyncio.to_thread(function, *args, **kwargs)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return result


def _callback_error_class(error: BaseException) -> type[Exception]:
    for cls in type(error).__mro__:
        if cls.__module__ == "builtins" and cls.__name__ in _CALLBACK_ERRORS:
            return _CALLBACK_ERRORS[cls.__name__]
    return RuntimeError


def _loaded_copy(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=True))
    except (TypeError, ValueError) as error:
        raise UnsupportedContextError(
            f"cannot load a value of type {type(value).__name__} into the REPL ({error}). "
            "Pass a str, bytes, or JSON-compatible data (lists, dicts, numbers, bools, None).",
            value_type=type(value).__name__,
        ) from error


def _cell_result(payload: dict[str, Any]) -> CellResult:
    final = payload.get("final")
    answer: FinalAnswer | None = None
    if final is not None:
        value, exact = decode_value(final)
        answer = FinalAnswer(value=value, exact=exact, variable=final.get("variable"), named=bool(final.get("named")))
    return CellResult(
        stdout=payload.get("stdout", ""),
        value=payload.get("value"),
        error=payload.get("error"),
        error_type=payload.get("error_type"),
        duration=payload.get("duration", 0.0),
        final=answer,
        output_chars=payload.get("output_chars", 0),
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise UsageError(f"{name!r} is not a valid variable name for the REPL (an identifier not starting with '_')")
    if name in _RESERVED_NAMES:
        raise UsageError(f"{name!r} is reserved by the REPL; choose another name")
