"""Host-side helpers of the worker protocol: loaded values in file form, and answering callbacks.

`serialize` checks a value given to `load` and returns a writer for its file form; `answer`
runs a host callback for a cell and bounds what goes back (`max_callback_bytes`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

from rlm_integrations.errors import UnsupportedContextError
from rlm_integrations.repl.protocol import HostCallback
from rlm_integrations.repl.transport import Payload
from rlm_integrations.repl.wire.messages import Callback, CallbackResult

__all__ = ["Payload", "answer", "invoke", "serialize"]

_CHUNK_CHARS = 8 * 1024 * 1024
_CALLBACK_ERROR_TYPES = ("KeyError", "TimeoutError", "TypeError", "ValueError")


def serialize(value: Any) -> tuple[Payload, str, int]:
    """Check `value` and return a writer for its file form, the format's name, and about how many bytes it is."""
    if isinstance(value, str):

        def write_text(file: Any) -> None:
            for start in range(0, len(value), _CHUNK_CHARS):
                file.write(value[start : start + _CHUNK_CHARS].encode("utf-8", "surrogatepass"))

        return write_text, "str", len(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return (lambda file: file.write(data)), "bytes", len(data)
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as error:
        raise UnsupportedContextError(
            f"cannot load a value of type {type(value).__name__} into the REPL ({error}). "
            "Pass a str, bytes, or JSON-compatible data (lists, dicts, numbers, bools, None); "
            "convert other objects first, e.g. with str() or a dict of their fields.",
            value_type=type(value).__name__,
        ) from error
    return (lambda file: file.write(encoded)), "json", len(encoded)


async def invoke(function: HostCallback, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call a host callback: a coroutine function directly, anything else in a thread."""
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    result = await asyncio.to_thread(function, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def answer(function: HostCallback | None, call: Callback, max_bytes: int) -> CallbackResult:
    """Run `function` for a cell's `call`; failures, unencodable and oversized results become errors for the cell."""
    name = call.name
    if function is None:
        return CallbackResult(ok=False, error=f"{name}() is not available", error_type="NameError")
    try:
        result = await invoke(function, call.args, call.kwargs)
        size = len(json.dumps(result, ensure_ascii=True, separators=(",", ":")))
    except Exception as error:
        message = f"{name}() failed: {error}" if str(error) else f"{name}() failed: {type(error).__name__}"
        return CallbackResult(ok=False, error=message, error_type=_callback_error_type(error))
    if size > max_bytes:
        return CallbackResult(
            ok=False,
            error=(
                f"{name}() returned {size:,} bytes as JSON, more than the REPL's limit of {max_bytes:,} "
                "(max_callback_bytes); ask for less per call"
            ),
            error_type="ValueError",
        )
    return CallbackResult(ok=True, value=result)


def _callback_error_type(error: BaseException) -> str:
    for cls in type(error).__mro__:
        if cls.__name__ in _CALLBACK_ERROR_TYPES and cls.__module__ == "builtins":
            return cls.__name__
    return "RuntimeError"
