"""The context's size, measured cheaply before anything copies it, against `RLMConfig.max_context_bytes`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from rlm_integrations.errors import ContextTooLargeError

__all__ = ["check_context_size", "context_size"]

_SCALAR_SIZE = 8
_MAX_DEPTH = 100
_END = object()


def context_size(context: Any, stop_after: int | None = None) -> int:
    """The size of `context`: characters of a str, bytes of bytes, summed over containers.

    A str counts one per character (its UTF-8 form may be larger), bytes one per byte, a
    number, bool or None 8; a list, tuple or dict the sum of its items (and keys). Nothing
    is copied or encoded. Containers are walked without recursion, and the walk stops as
    soon as the total passes `stop_after`, so a huge context is refused in time proportional
    to the limit, not to its size. Anything nested deeper than 100 levels counts as 8.
    """
    total = 0
    stack: list[tuple[Iterator[Any], int]] = [(iter((context,)), 0)]
    while stack:
        items, depth = stack[-1]
        value = next(items, _END)
        if value is _END:
            stack.pop()
            continue
        if isinstance(value, str | bytes | bytearray):
            total += len(value)
        else:
            total += _SCALAR_SIZE
            if depth < _MAX_DEPTH and isinstance(value, dict):
                stack.append((itertools.chain.from_iterable(value.items()), depth + 1))
            elif depth < _MAX_DEPTH and isinstance(value, list | tuple):
                stack.append((iter(value), depth + 1))
        if stop_after is not None and total > stop_after:
            break
    return total


def check_context_size(context: Any, limit: int | None) -> None:
    """Refuse a context larger than `limit` (None: no limit) before any copy is made.

    Raises:
        ContextTooLargeError: the context is larger than `limit`.
    """
    if limit is None or context is None:
        return
    size = context_size(context, stop_after=limit)
    if size > limit:
        raise ContextTooLargeError(
            f"the context is larger than max_context_bytes={limit:,} (counted {size:,} before stopping). "
            "Pass a smaller slice, split it across runs, or raise RLMConfig(max_context_bytes=...) if the "
            "machine has the memory: loading takes several times the context's size.",
            size=size,
            limit=limit,
        )
