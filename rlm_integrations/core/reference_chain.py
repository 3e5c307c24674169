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
from collections.abc import Sequence

__all__ = ["MAX_NAMES", "PLACEHOLDER", "ReferencePattern", "follow_references"]

PLACEHOLDER = "{}"
"""Where the current name goes in a `follow` pattern."""
MAX_NAMES = 10_000
"""`follow` stops after reaching this many names (a pattern that matches everything)."""

_TYPE_WORD = r"(?:[^\W\d_]+\s+)?"
"""One optional word before the current name: references often carry a type ('VAR X', 'Lake X', 'town X')."""


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
            compiled = re.compile(self._before + "x" + self._after)
        except re.error as error:
            raise ValueError(
                f"follow(start, pattern): {pattern!r} is not a valid regular expression ({error})"
            ) from None
        if compiled.groups != 1:
            raise ValueError(
                f"follow(start, pattern): the pattern needs exactly one group (...) around the next name; "
                f"{pattern!r} has {compiled.groups}. Write non-capturing groups as (?:...)."
            )

    def for_name(self, name: str) -> re.Pattern[str]:
        """The regex that finds the names one hop from `name` (whole word, case-insensitive)."""
        current = _TYPE_WORD + re.escape(name) + (r"(?![\w-])" if re.search(r"[\w-]$", name) else "")
        return re.compile(self._before + current + self._after, re.IGNORECASE)


def follow_references(items: Sequence[str], start: str, pattern: ReferencePattern) -> list[str]:
    """Every name reached from `start` through `pattern`, in the order found (`start` itself left out).

    Each hop looks only at the items (lines) that contain the current name, so a chain of
    `n` names over `m` lines costs about `n` substring scans of the text.
    """
    seen = {start.casefold()}
    found: list[str] = []
    todo = [start]
    lowered = [item.casefold() for item in items]
    while todo and len(found) < MAX_NAMES:
        name = todo.pop(0)
        key = name.casefold()
        regex = pattern.for_name(name)
        for item, low in zip(items, lowered, strict=True):
            if key not in low:
                continue
            for match in regex.finditer(item):
                reached = match.group(1)
                if reached and reached.casefold() not in seen:
                    seen.add(reached.casefold())
                    found.append(reached)
                    todo.append(reached)
    return found
