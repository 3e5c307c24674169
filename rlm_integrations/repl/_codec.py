"""Moving values between the worker and the host.

Plain data (None, bool, int, finite float, str, bytes, and lists, tuples, dicts and sets
of those) crosses as its repr and is rebuilt on the host with `ast.literal_eval`, so a
tuple stays a tuple and a set a set. Anything else crosses as a bounded repr string and
is marked inexact. Standard library only: the worker imports it.
"""

from __future__ import annotations

import ast
import math
from typing import Any

__all__ = ["MAX_EXACT_CHARS", "decode_value", "encode_value", "is_plain_data"]

_SCALARS = (type(None), bool, int, str, bytes)
_MAX_DEPTH = 100
_STR_REPR = str.__repr__
_MAX_REPR_CHARS = 100_000
MAX_EXACT_CHARS = 32 * 1024 * 1024
"""Largest plain-data value (as repr) that crosses to the host exactly (FINAL values, `get`)."""


def is_plain_data(value: Any, _depth: int = 0) -> bool:
    """True if `value` round-trips exactly through `repr` and `ast.literal_eval`."""
    if _depth > _MAX_DEPTH:
        return False
    kind = type(value)
    if kind in _SCALARS:
        return True
    if isinstance(value, str) and getattr(kind, "__repr__", None) is _STR_REPR:  # e.g. CallError: crosses as text
        return True
    if kind is float:
        return math.isfinite(value)
    if kind in (list, tuple, set):
        return all(is_plain_data(item, _depth + 1) for item in value)
    if kind is dict:
        return all(is_plain_data(k, _depth + 1) and is_plain_data(v, _depth + 1) for k, v in value.items())
    return False


def encode_value(value: Any) -> dict[str, Any]:
    """Encode `value` for the wire: ``{"repr": str, "exact": bool}``."""
    if is_plain_data(value):
        text = repr(value)
        if len(text) <= MAX_EXACT_CHARS:
            return {"repr": text, "exact": True}
        # Too large to move exactly: the host gets a bounded repr instead of a copy that could exhaust it.
        return {
            "repr": text[:_MAX_REPR_CHARS] + f"... [{len(text) - _MAX_REPR_CHARS:,} characters cut]",
            "exact": False,
        }
    try:
        text = repr(value)
    except Exception as error:  # a broken __repr__ must not take the worker down
        text = f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"
    if len(text) > _MAX_REPR_CHARS:
        text = text[:_MAX_REPR_CHARS] + f"... [{len(text) - _MAX_REPR_CHARS:,} characters cut]"
    return {"repr": text, "exact": False}


def decode_value(encoded: dict[str, Any]) -> tuple[Any, bool]:
    """Rebuild a value from `encode_value`'s output; returns ``(value, exact)``."""
    text = encoded["repr"]
    if not encoded.get("exact"):
        return text, False
    try:
        return ast.literal_eval(text), True
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text, False
