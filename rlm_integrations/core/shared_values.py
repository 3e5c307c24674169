"""Grouping records by a value they share: the members with the same locker code, the guests with the same room.

"Which members share the same locker code?" asks for the lines that write the same value after
the attribute's name. A large model writes the regex and the dictionary; a small one joins the
question's words into a pattern the text never writes. `same_value_groups(items, word)` reads, in
each line that holds `word`, the value written after it (the first token holding a digit: a code,
a number, a date; else the next word) and keeps the values two or more lines share. With
`names=True` each line is given as its record's name instead: its first word that no other line
holds, a number only when no word is ('ana.silva12' in 'On 4 May ana.silva12 came; the room
number given was 214.'), so the answer can be submitted as computed rather than retyped (small
models miscopy names).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

__all__ = ["MAX_GROUPS", "VALUE_WINDOW_CHARS", "record_name", "same_value_groups"]

VALUE_WINDOW_CHARS = 80
"""The value is looked for within this many characters after the word."""
MAX_GROUPS = 1_000
"""At most this many groups come back (the largest first)."""
SHOWN_CHARS = 300
"""A long line is shown as this many characters around the word."""

_WITH_DIGIT = re.compile(r"(?<![\w.-])[\w.-]*\d[\w.-]*")
_NEXT_WORD = re.compile(r"\w[\w.-]*")
_TOKEN = re.compile(r"\w(?:[\w.-]*\w)?")


def record_name(item: str, counts: Counter[str]) -> str:
    """The item's first word with a letter that occurs once in the whole text (`counts`).

    Else its first word that occurs once (a number: a day or a year is seldom a name), else the item itself.
    """
    unique = [token.group() for token in _TOKEN.finditer(item) if counts[token.group().casefold()] == 1]
    return next((token for token in unique if not token.isdigit()), unique[0] if unique else item)


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


def same_value_groups(items: Sequence[str], word: str, *, names: bool = False) -> list[list[str]]:
    """The items grouped by the value written after `word`, only values two or more items share, largest first.

    The value is the first token within `VALUE_WINDOW_CHARS` after `word` that holds a digit,
    else the next word; values compare case-insensitively, a trailing dot or dash left out.
    Items without `word` are skipped. At most `MAX_GROUPS` groups. With `names`, each item is
    given as its record's name (`record_name`) rather than as the line.

    Raises:
        ValueError: `word` is empty.
    """
    if not isinstance(word, str) or not word.strip():
        raise ValueError("same(word): word must be a non-empty str, the attribute's name, e.g. same('room')")
    mention = _mention(word)
    groups: dict[str, list[tuple[str, int]]] = {}
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
            groups.setdefault(key, []).append((item, found.start()))
    shared = [lines for lines in groups.values() if len(lines) > 1]
    shared.sort(key=len, reverse=True)
    shared = shared[:MAX_GROUPS]
    if names:
        counts = Counter(token.casefold() for item in items for token in _TOKEN.findall(item))
        return [[record_name(item, counts) for item, _ in lines] for lines in shared]
    return [[_shown(item, at) for item, at in lines] for lines in shared]
