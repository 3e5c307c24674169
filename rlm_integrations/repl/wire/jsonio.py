"""JSON for the worker's protocol, made from objects that no cell can reach or patch.

The `json` module is shared with the cells (it is on the import allow-list), and its
decoder and encoder classes, even the types of the `_json` extension behind them, accept
new attributes: a cell that found a way to set one could make the worker misread the
host's next request. So the worker does not use them. At import, before any cell runs,
this module loads a private instance of the `_json` extension (it is not registered in
`sys.modules`, and its scanner and encoder types are not the ones `json` uses), and makes
one scanner and one encoder from it with fixed settings. Nothing outside this module
holds them.

What is encoded goes through `plain` first: a walk that turns a value into exact JSON
types (str, int, float, bool, None, list, dict with str keys) without calling any method
the value's class defines, bounded in depth and in size.

Standard library only: the worker imports it.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

__all__ = ["TooLarge", "dumps", "loads", "plain"]

_MAX_DEPTH = 100


class TooLarge(ValueError):
    """A value is larger, as JSON, than the bound it was checked against."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} bytes as JSON")
        self.limit = limit


def _private_json() -> ModuleType:
    spec = importlib.util.find_spec("_json")
    if spec is None or spec.loader is None:
        raise ImportError("the REPL worker needs the _json extension module, which this Python lacks")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _ScannerSettings:
    """What the C scanner reads, once, when it is made: plain types, no hooks."""

    __slots__ = ("object_hook", "object_pairs_hook", "parse_constant", "parse_float", "parse_int", "strict")

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = float


def _refuse(value: Any) -> Any:
    raise TypeError("only plain JSON types reach the encoder")


_json = _private_json()
_scan = _json.make_scanner(_ScannerSettings())
_encode = _json.make_encoder(None, _refuse, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
del _json
_join = "".join
_str_of = str.__str__
_int_of = int.__int__
_float_of = float.__float__
_float_repr = float.__repr__
_int_repr = int.__repr__
_list_copy = list.copy
_dict_items = dict.items


def loads(text: str) -> Any:
    """Parse one JSON document (exact types out; NaN and Infinity allowed). Raises ValueError."""
    if type(text) is not str:
        raise ValueError("JSON text must be a str")
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not a JSON document") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if end != len(text):
        raise ValueError("extra data after the JSON document")
    return value


def dumps(tree: Any) -> str:
    """Encode what `plain` returned as compact ASCII JSON."""
    return _join(_encode(tree, 0))


def plain(value: Any, limit: int | None = None) -> Any:
    """`value` as exact JSON types, without running code its classes define.

    Subclasses of str, int, float, list, tuple and dict are read through the base type's
    own C methods (a str subclass crosses as its text); tuples become lists; dict keys
    that are int, float, bool or None become strings, as `json.dumps` does.

    Raises:
        TypeError: a value JSON cannot hold, or nesting deeper than 100.
        TooLarge: `limit` given and the JSON text would be longer.
    """
    budget = [limit if limit is not None else -1]
    return _walk(value, 0, budget, limit)


def _charge(budget: list[int], cost: int, limit: int | None) -> None:
    # Costs are lower bounds of the JSON text: the walk stops early only when the value is
    # surely too large; callers measure the encoded text itself.
    if limit is None:
        return
    budget[0] -= cost
    if budget[0] < 0:
        raise TooLarge(limit)


def _walk(value: Any, depth: int, budget: list[int], limit: int | None) -> Any:
    kind = type(value)
    if kind is str:
        _charge(budget, len(value) + 2, limit)
        return value
    if value is None or kind is bool:
        _charge(budget, 5, limit)
        return value
    if kind is int:
        _charge(budget, value.bit_length() * 3 // 10 + 2, limit)
        return value
    if kind is float:
        _charge(budget, 4, limit)
        return value
    if depth >= _MAX_DEPTH:
        raise TypeError("the value is nested more than 100 levels deep")
    if kind is list or kind is tuple:
        _charge(budget, 2, limit)
        return [_walk(item, depth + 1, budget, limit) for item in value]
    if kind is dict:
        return _walk_dict(value, depth, budget, limit)
    return _walk_subclass(value, kind, depth, budget, limit)


def _walk_dict(value: Any, depth: int, budget: list[int], limit: int | None) -> dict[str, Any]:
    _charge(budget, 2, limit)
    result: dict[str, Any] = {}
    for key, item in list(_dict_items(value)):
        name = _key(key)
        _charge(budget, len(name) + 3, limit)
        result[name] = _walk(item, depth + 1, budget, limit)
    return result


def _walk_subclass(value: Any, kind: type, depth: int, budget: list[int], limit: int | None) -> Any:
    if issubclass(kind, str):
        return _walk(_str_of(value), depth, budget, limit)
    if issubclass(kind, bool):
        raise TypeError("bool cannot be subclassed")  # pragma: no cover - CPython forbids it
    if issubclass(kind, int):
        return _walk(_int_of(value), depth, budget, limit)
    if issubclass(kind, float):
        return _walk(_float_of(value), depth, budget, limit)
    if issubclass(kind, list):
        return _walk(_list_copy(value), depth, budget, limit)
    if issubclass(kind, tuple):
        return _walk(tuple.__getitem__(value, slice(None)), depth, budget, limit)
    if issubclass(kind, dict):
        return _walk_dict(value, depth, budget, limit)
    raise TypeError(f"a {kind.__name__} is not JSON data (use str, numbers, bools, None, lists and dicts)")


def _key(key: Any) -> str:
    kind = type(key)
    if kind is str:
        return str.__str__(key)
    if key is None:
        return "null"
    if kind is bool:
        return "true" if key else "false"
    if kind is int:
        return _int_repr(key)
    if kind is float:
        return _float_repr(key)
    if issubclass(kind, str):
        return _str_of(key)
    raise TypeError(f"dict keys must be str, int, float, bool or None, not {kind.__name__}")
