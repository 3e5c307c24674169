"""Grouping records by a value they share: the members with the same locker code, the guests with the same room.

"Which members share the same locker code?" asks for the lines that write the same value after
the attribute's name. A large model writes the regex and the dictionary; a small one joins the
question's words into a pattern the text never writes. `same_value_groups(items, word)` reads, in
each line that holds `word`, the value written after it (the first token holding a digit: a code,
a number, a date; else the next word) and keeps the values two or more lines share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MAX_GROUPS", "VALUE_WINDOW_CHARS", "same_value_groups"]

VALUE_WINDOW_CHARS = 80
"""The value is looked for within this many characters after the word."""
MAX_GROUPS = 1_000
"""At most this many groups come back (the largest first)."""
SHOWN_CHARS = 300
"""A long line is shown as this many characters around the word."""

_WITH_DIGIT = re.compile(r"(?<![\w.-])[\w.-]*\d[\w.-]*")
_NEXT_WORD = re.compile(r"\w[\w.-]*")


def _mention(word: str) -> re.Pattern[str]:
    text = word.strip()
    before = r"(?<![\w-])" if re.match(r"[\w-]", text[:1]) else ""
    after = r"(?![\w-])" if re.search(r"[\w-]$", text) else ""
    return re.compile(before + re.escape(text) + after, re.IGNORECASE)


def _shown(item: str, at: int) -> str:
    if len(item) <= SHOWN_CHARS:
        return item
    low = max(0, at - SHOWN_CHARS // 2)
    return "..." + item[low : low + SHOWN_CHARS] + "..."


def same_value_groups(items: Sequence[str], word: str) -> list[list[str]]:
    """The items grouped by the value written after `word`, only values two or more items share, largest first.

    The value is the first token within `VALUE_WINDOW_CHARS` after `word` that holds a digit,
    else the next word; values compare case-insensitively, a trailing dot or dash left out.
    Items without `word` are skipped. At most `MAX_GROUPS` groups.

    Raises:
        ValueError: `word` is empty.
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError("same(word): word must be a non-empty str, the attribute's name, e.g. same('room')")
    mention = _mention(word)
    groups: dict[str, list[str]] = {}
    for item in items:
        found = mention.search(item)
        if found is None:
            continue
        after = item[found.end() : found.end() + VALUE_WINDOW_CHARS]
        value = _WITH_DIGIT.search(after) or _NEXT_WORD.search(after)
        if value is None:
            continue
        key = value.group().rstrip(".-").casefold()
        if key:
            groups.setdefault(key, []).append(_shown(item, found.start()))
    shared = [lines for lines in groups.values() if len(lines) > 1]
    shared.sort(key=len, reverse=True)
    return shared[:MAX_GROUPS]
