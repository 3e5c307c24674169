"""Bounded text: keep the head and tail of long output around a marker that says what was cut.

Used by the worker (cell output) and by the engine (feedback to the model). Standard
library only: the worker imports it.
"""

from __future__ import annotations

__all__ = ["BoundedText", "cut_marker", "truncate_middle"]


def cut_marker(cut: int) -> str:
    """The marker placed where `cut` characters were removed."""
    return f"\n... [{cut:,} characters cut] ...\n"


def truncate_middle(text: str, limit: int) -> str:
    """Return `text` if it fits in `limit` characters, else its head and tail around a cut marker."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return text[:head] + cut_marker(len(text) - head - tail) + (text[-tail:] if tail else "")


class BoundedText:
    """An append-only text buffer that keeps at most `limit` characters: the first half and the last half.

    Memory stays bounded however much is written, so an output flood cannot exhaust the worker.
    """

    __slots__ = ("_head", "_head_len", "_head_limit", "_tail", "_tail_len", "_tail_limit", "total")

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self.total = 0

    def write(self, text: str) -> None:
        """Append `text`."""
        if not text:
            return
        self.total += len(text)
        room = self._head_limit - self._head_len
        if room > 0:
            part = text[:room]
            self._head.append(part)
            self._head_len += len(part)
            text = text[room:]
            if not text:
                return
        self._tail.append(text)
        self._tail_len += len(text)
        if self._tail_len > 2 * self._tail_limit + 4096:
            joined = "".join(self._tail)
            keep = joined[-self._tail_limit :] if self._tail_limit else ""
            self._tail = [keep]
            self._tail_len = len(keep)

    def getvalue(self) -> str:
        """The kept text, with a cut marker if anything was dropped."""
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self.total <= self._head_limit + self._tail_limit:
            return head + tail
        tail = tail[-self._tail_limit :] if self._tail_limit else ""
        return head + cut_marker(self.total - len(head) - len(tail)) + tail
