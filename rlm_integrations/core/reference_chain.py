"""Following references through a text: the names reached from a start, hop by hop.

"Which towns draw their water from Lake Orva, directly or through other towns?" asks for a
transitive closure: the towns that name Orva, then the towns that name those, until nothing
new turns up. The loop that does it is short for a large model and hard for a small one
(its pattern must take the current name, not the start, on every hop), so the REPL offers
it as one call, `follow(start, pattern)`, where the pattern is a line of the text with the
next name replaced by a group and the current name by ``{}``.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from collections.abc import Sequence

__all__ = ["MAX_NAMES", "MAX_SECONDS", "PLACEHOLDER", "WINDOW_CHARS", "ReferencePattern", "follow_references"]

PLACEHOLDER = "{}"
"""Where the current name goes in a `follow` pattern."""
MAX_NAMES = 10_000
"""`follow` stops after reaching this many names (a pattern that matches everything)."""
WINDOW_CHARS = 2_000
"""In a line longer than twice this, each mention of the current name is searched within this many
characters either side (a 10 MB context with no line breaks is one line)."""
MAX_SECONDS = 20.0
"""`follow` gives up after this long (a loose pattern such as ``(\\w+).*{}`` backtracks on every line);
less than the default cell timeout, because the search runs on a host thread that a timeout cannot stop."""

_TYPE_WORD = r"(?:(?<!\w)[^\W\d_]+\s+)?"
"""One optional whole word before the current name: references often carry a type ('VAR X', 'Lake X', 'town X')."""
_MARK = "_follow_current_"
"""A group name put where ``{}`` stands to check that it stands where a name can go."""


class ReferencePattern:
    """A `follow` pattern, checked once: a regex with one group (the next name) and ``{}`` (the current one).

    Raises:
        ValueError: the pattern has no ``{}``, no group or several, or is not a valid regex; the
            message shows a pattern that works.
    """

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str) or PLACEHOLDER not in pattern:
            raise ValueError(
                f"follow(start, pattern): the pattern needs {PLACEHOLDER} where the current name goes, e.g. "
                r"follow('Orva', r'Town (\w+) draws its water from {}')"
            )
        before, _, after = pattern.partition(PLACEHOLDER)
        self._before = before
        self._after = after.replace(PLACEHOLDER, "")
        try:
            compiled = re.compile(f"{self._before}(?P<{_MARK}>x){self._after}")
        except re.error as error:
            raise ValueError(
                f"follow(start, pattern): {pattern!r} is not a valid regular expression ({error})"
            ) from None
        if _MARK not in compiled.groupindex:
            raise ValueError(
                f"follow(start, pattern): in {pattern!r}, {PLACEHOLDER} stands inside [...] or after a backslash; "
                "it must stand where the current name is written, e.g. "
                r"follow('Orva', r'Town (\w+) draws its water from {}')"
            )
        if compiled.groups != 2:
            raise ValueError(
                f"follow(start, pattern): the pattern needs exactly one group (...) around the next name; "
                f"{pattern!r} has {compiled.groups - 1}. Write non-capturing groups as (?:...)."
            )

    def for_name(self, name: str) -> re.Pattern[str]:
        """The regex that finds the names one hop from `name` (whole word, case-insensitive)."""
        lead = r"(?<!\w)" if re.match(r"\w", name) else ""  # not the tail of a longer word
        current = _TYPE_WORD + lead + re.escape(name) + (r"(?![\w-])" if re.search(r"[\w-]$", name) else "")
        return re.compile(self._before + current + self._after, re.IGNORECASE)


def follow_references(items: Sequence[str], start: str, pattern: ReferencePattern) -> list[str]:
    """Every name reached from `start` through `pattern`, in the order found (`start` itself left out).

    Each hop runs the regex only on the items (lines) that contain the current name, found by
    one substring search of the whole text, so a chain of `n` names costs about `n` scans at
    C speed; in a long line, only a window around each mention is searched (`WINDOW_CHARS`).
    At most `MAX_NAMES` names come back.

    Raises:
        ValueError: the search took longer than `MAX_SECONDS` (the message says how to narrow the pattern).
    """
    deadline = time.monotonic() + MAX_SECONDS
    lowered = [item.casefold() for item in items]
    starts: list[int] = []
    offset = 0
    for low in lowered:
        starts.append(offset)
        offset += len(low) + 1
    joined = "\n".join(lowered)
    seen = {start.casefold()}
    found: list[str] = []
    todo = [start]
    while todo and len(found) < MAX_NAMES:
        name = todo.pop(0)
        key = name.casefold()
        regex = pattern.for_name(name)
        at = joined.find(key)
        while at != -1 and len(found) < MAX_NAMES:
            index = bisect_right(starts, at) - 1
            item = items[index]
            long = len(item) > 2 * WINDOW_CHARS and len(item) == len(lowered[index])  # same offsets as its casefold
            local = at - starts[index]
            window = (max(0, local - WINDOW_CHARS), local + len(key) + WINDOW_CHARS) if long else (0, len(item))
            for match in regex.finditer(item, *window):
                reached = match.group(1)
                if reached and reached.casefold() not in seen:
                    seen.add(reached.casefold())
                    found.append(reached)
                    todo.append(reached)
            if time.monotonic() > deadline:
                raise ValueError(
                    f"follow(start, pattern) stopped after {MAX_SECONDS:.0f} s ({len(found)} names so far): the "
                    "pattern is too loose to search quickly. Copy the words around the names from a line of the "
                    r"text instead of .* or a leading (\w+), e.g. r'Town (\w+) draws its water from {}'"
                )
            if long:  # the next mention in this line, then the lines after it
                at = joined.find(key, at + 1)
            else:
                at = joined.find(key, starts[index + 1]) if index + 1 < len(starts) else -1
    return found[:MAX_NAMES]
