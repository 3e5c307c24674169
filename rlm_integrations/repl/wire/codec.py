"""Moving values between the worker and the host, bounded in size, time and memory.

Plain data (None, bool, int, float, str, bytes, and lists, tuples, dicts, sets and
frozensets of those; a str subclass counts as its text) crosses exactly, as JSON in which
every object is a one-key tag: ``{"t": [...]}`` a tuple, ``{"s": [...]}`` a set,
``{"f": [...]}`` a frozenset, ``{"d": [[k, v], ...]}`` a dict, ``{"b": "<base64>"}``
bytes, ``{"n": "nan"}`` a non-finite float, ``{"i": "<hex>"}`` an int too long for
decimal. The host parses it with the `json` module after checking its length, so a value
costs the host time and memory in proportion to at most `MAX_EXACT_CHARS` (unlike
`ast.literal_eval`, whose cost grows far faster than its input).

Anything else, and plain data longer than `MAX_EXACT_CHARS` as JSON, crosses as a repr
string of at most about 100,000 characters, marked inexact. The walk over plain data
reads exact types only and calls no method a class defines; the repr of anything else
does run the object's own `__repr__`, so the worker does that only inside a cell or under
the cell's limits.

Standard library only: the worker imports it.
"""

from __future__ import annotations

import binascii
import json
import math
from typing import Any

from rlm_integrations.repl.wire.jsonio import TooLarge, dumps

__all__ = ["MAX_EXACT_CHARS", "bounded_repr", "decode_value", "encode_value", "is_plain_data"]

MAX_EXACT_CHARS = 4 * 1024 * 1024
"""Longest value, as tagged JSON, that crosses to the host exactly (FINAL values, `get`)."""

_MAX_DEPTH = 100
_MAX_REPR_CHARS = 100_000
_LONG_INT_BITS = 12_000  # beyond this, decimal conversion is slow and refused by int_max_str_digits
_SMALL_INT = 1 << 60
_SCALAR_REPRS: frozenset[type] = frozenset({type(None), bool, int, float, bytes})
_EMPTY: dict[type, str] = {list: "[]", tuple: "()", set: "set()", frozenset: "frozenset()", dict: "{}"}
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
    dict: ("{", "}"),
}


class _NotPlain(Exception):
    pass


class _Full(Exception):
    pass


def is_plain_data(value: Any) -> bool:
    """True if `value` crosses to the host exactly (ignoring its size)."""
    try:
        _tag(value, 0, [1 << 62])
    except (_NotPlain, TooLarge):
        return False
    return True


def encode_value(value: Any, limit: int = MAX_EXACT_CHARS) -> dict[str, Any]:
    """Encode `value` for the wire: ``{"json": str, "exact": True}`` or ``{"repr": str, "exact": False}``.

    Plain data never runs code its classes define; anything else is shown through its own
    `__repr__` (call this inside a cell, or under the cell's limits).
    """
    try:
        text = dumps(_tag(value, 0, [limit]))
    except _NotPlain:
        return {"repr": bounded_repr(value), "exact": False}
    except TooLarge:
        text = ""
    if text and len(text) <= limit:
        return {"json": text, "exact": True}
    note = f" [too large to return exactly: over {limit:,} characters as JSON; this is its start]"
    return {"repr": bounded_repr(value) + note, "exact": False}


def decode_value(encoded: dict[str, Any], limit: int = MAX_EXACT_CHARS) -> tuple[Any, bool]:
    """Rebuild a value from `encode_value`'s output; returns ``(value, exact)``.

    Raises:
        ValueError: the encoding is malformed or longer than `limit`.
    """
    if encoded.get("exact"):
        text = encoded.get("json")
        if type(text) is not str:
            raise ValueError("an exact value needs its JSON text")
        if len(text) > limit:
            raise ValueError(f"an exact value of {len(text):,} characters, over the {limit:,} limit")
        try:
            return json.loads(text, object_hook=_untag), True
        except (ValueError, TypeError, RecursionError, MemoryError) as error:
            raise ValueError(f"a malformed exact value: {type(error).__name__}: {error}") from None
    text = encoded.get("repr")
    if type(text) is not str:
        raise ValueError("an inexact value needs its repr text")
    return text, False


# -- worker side: value -> tagged JSON tree -------------------------------------------------------


def _charge(budget: list[int], cost: int) -> None:
    # Costs are lower bounds of the JSON text, so the walk stops early only when the value is
    # surely too large; the text itself is measured after encoding.
    budget[0] -= cost
    if budget[0] < 0:
        raise TooLarge(0)


def _tag(value: Any, depth: int, budget: list[int]) -> Any:
    kind = type(value)
    if kind is str:
        _charge(budget, len(value) + 2)
        return value
    if value is None or kind is bool:
        _charge(budget, 5)
        return value
    if kind is int:
        if value.bit_length() > _LONG_INT_BITS:
            text = format(value, "x")
            _charge(budget, len(text) + 8)
            return {"i": text}
        _charge(budget, value.bit_length() * 3 // 10 + 2)
        return value
    if kind is float:
        _charge(budget, 4)
        return value if math.isfinite(value) else {"n": repr(value)}
    if kind is bytes:
        _charge(budget, 4 * len(value) // 3 + 10)
        return {"b": binascii.b2a_base64(value, newline=False).decode("ascii")}
    if depth >= _MAX_DEPTH:
        raise _NotPlain
    if kind is list:
        _charge(budget, 2)
        return _tag_items(value, depth + 1, budget)
    if kind is tuple or kind is set or kind is frozenset:
        _charge(budget, 8)
        tag = "t" if kind is tuple else "s" if kind is set else "f"
        return {tag: _tag_items(value, depth + 1, budget)}
    if kind is dict:
        _charge(budget, 8)
        return {"d": [[_tag(k, depth + 1, budget), _tag(v, depth + 1, budget)] for k, v in list(value.items())]}
    if issubclass(kind, str):
        return _tag(str.__str__(value), depth, budget)
    raise _NotPlain


def _tag_items(items: Any, depth: int, budget: list[int]) -> list[Any]:
    # The common case (many short strings or small numbers) without a call per item.
    tagged: list[Any] = []
    append = tagged.append
    left = budget[0]
    for item in items:
        kind = type(item)
        if kind is str:
            left -= len(item) + 3
            append(item)
        elif kind is int and -_SMALL_INT < item < _SMALL_INT:
            left -= 2
            append(item)
        else:
            budget[0] = left
            append(_tag(item, depth, budget))
            left = budget[0]
        if left < 0:
            raise TooLarge(0)
    budget[0] = left
    return tagged


# -- host side: tagged JSON -> value --------------------------------------------------------------


def _untag(tagged: dict[str, Any]) -> Any:
    if len(tagged) != 1:
        raise ValueError("a tagged value has exactly one key")
    ((tag, payload),) = tagged.items()
    if tag in ("t", "s", "f", "d") and type(payload) is not list:
        raise ValueError(f"tag {tag!r} needs a list")
    if tag == "t":
        return tuple(payload)
    if tag == "s":
        return set(payload)
    if tag == "f":
        return frozenset(payload)
    if tag == "d":
        if not all(type(pair) is list and len(pair) == 2 for pair in payload):
            raise ValueError("a dict is a list of [key, value] pairs")
        return dict(payload)
    if type(payload) is not str:
        raise ValueError(f"tag {tag!r} needs a str")
    if tag == "b":
        return binascii.a2b_base64(payload, strict_mode=True)
    if tag == "n" and payload in ("nan", "inf", "-inf"):
        return float(payload)
    if tag == "i" and len(payload) <= _LONG_INT_BITS * 64:
        return int(payload, 16)
    raise ValueError(f"unknown tag {tag!r}")


# -- bounded repr ---------------------------------------------------------------------------------


def bounded_repr(value: Any, limit: int = _MAX_REPR_CHARS) -> str:
    """The start of `value`'s repr, at most about `limit` characters, built piece by piece.

    Plain containers are walked here, so a huge list costs only what is shown; any other
    object's own `__repr__` runs (and its result is cut).
    """
    if issubclass(type(value), str):
        text = str.__str__(value)
        if len(text) > limit:
            return repr(text[:limit]) + f"... [{len(text) - limit:,} characters cut]"
        return repr(text)
    parts: list[str] = []
    size = [0]
    try:
        _emit(value, parts, size, limit, set())
    except _Full:
        return "".join(parts)[:limit] + "... [the rest cut]"
    except Exception as error:  # a __repr__ that raises or changes the container, nesting too deep
        return f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"
    return "".join(parts)


def _put(parts: list[str], size: list[int], limit: int, text: str) -> None:
    parts.append(text)
    size[0] += len(text)
    if size[0] > limit:
        raise _Full


def _emit(value: Any, parts: list[str], size: list[int], limit: int, path: set[int]) -> None:
    kind = type(value)
    if kind is str:
        _put(parts, size, limit, repr(value[: limit + 1]))
        return
    if kind in _SCALAR_REPRS:
        if kind is bytes:
            value = value[: limit + 1]
        elif kind is int and value.bit_length() > _LONG_INT_BITS:
            _put(parts, size, limit, f"<int of {value.bit_length():,} bits>")
            return
        _put(parts, size, limit, repr(value))
        return
    if kind not in _BRACKETS:
        try:
            text = repr(value)
        except Exception as error:  # a broken __repr__ must not take the worker down
            text = f"<unrepresentable {kind.__name__}: {type(error).__name__}>"
        _put(parts, size, limit, str.__str__(text)[: limit + 1])
        return
    if id(value) in path:
        _put(parts, size, limit, "{...}" if kind is dict else "[...]")
        return
    path.add(id(value))
    _emit_container(value, kind, parts, size, limit, path)
    path.discard(id(value))


def _emit_container(value: Any, kind: type, parts: list[str], size: list[int], limit: int, path: set[int]) -> None:
    if not value:
        _put(parts, size, limit, _EMPTY[kind])
        return
    opening, closing = _BRACKETS[kind]
    _put(parts, size, limit, opening)
    items = list(value.items()) if kind is dict else value
    for index, item in enumerate(items):
        if index:
            _put(parts, size, limit, ", ")
        if kind is dict:
            _emit(item[0], parts, size, limit, path)
            _put(parts, size, limit, ": ")
            _emit(item[1], parts, size, limit, path)
        else:
            _emit(item, parts, size, limit, path)
    if kind is tuple and len(value) == 1:
        _put(parts, size, limit, ",")
    _put(parts, size, limit, closing)
