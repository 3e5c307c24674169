"""Following references through a text: the names reached from a start, hop by hop.

"Which towns draw their water from Lake Orva, directly or through other towns?" asks for a
transitive closure: the towns that name Orva, then the towns that name those, until nothing
new turns up. The loop that does it is short for a large model and hard for a small one
(its pattern must take the current name, not the start, on every hop), so the REPL offers
it as one call, `follow(start, pattern)`, where the pattern is a line of the text with the
next name replaced by a group and the current name by ``{}``.

Writing that pattern is itself the hard part for a small model, so the pattern may be left
out: `infer_reference` reads it off the line that mentions the start, taking the line's
rarest other word as the next name (a name is written in a line or two; the words of the
relation repeat on every hop).
"""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_NAMES",
    "MAX_SECONDS",
    "PLACEHOLDER",
    "WINDOW_CHARS",
    "InferredReference",
    "ReferencePattern",
    "follow_references",
    "infer_reference",
]

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
_NAME_GROUP = r"(\w(?:[\w.-]*\w)?)"
"""The group an inferred pattern puts where the next name stands: a word, dots and dashes allowed inside."""
_TOKEN = re.compile(r"\w(?:[\w.-]*\w)?")
_TRAILING_WORD = re.compile(r"(?<!\w)[^\W\d_]+\s+$")
MENTIONS_TRIED = 20
"""`infer_reference` reads at most this many of the lines that mention the start."""
SPAN_CHARS = 200
"""`infer_reference` looks this many characters either side of the start's mention (not across sentences)."""


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


@dataclass(frozen=True)
class InferredReference:
    """A `follow` pattern read off a line of the text, with the line and the name it picked as the next one."""

    pattern: str
    line: str
    name: str


def _sentence_around(item: str, start: int, end: int) -> tuple[int, int]:
    """The bounds of the sentence holding item[start:end], at most `SPAN_CHARS` either side."""
    low = max(0, start - SPAN_CHARS)
    high = min(len(item), end + SPAN_CHARS)
    before = max(item.rfind(stop, low, start) for stop in (". ", "? ", "! ", "; ", "\n"))
    after = [at for stop in (". ", "? ", "! ", "; ", "\n") if (at := item.find(stop, end, high)) != -1]
    begin = low if before == -1 else before + (1 if item[before] == "\n" else 2)  # past the stop
    finish = min(after) + 1 if after else high
    if before == -1 and low > 0:  # cut mid-text: start at the next whole word, not a fragment
        space = item.find(" ", low, start)
        begin = space + 1 if space != -1 else start
    if not after and high < len(item):
        space = item.rfind(" ", end, high)
        finish = space if space != -1 else end
    return begin, finish


def _literal(words_between: str) -> str:
    r"""The text between two names as a regex: each word literal, any run of spaces as ``\s+``."""
    pieces = [re.escape(piece) for piece in words_between.split()]
    lead = r"\s+" if words_between[:1].isspace() else ""
    trail = r"\s+" if words_between[-1:].isspace() else ""
    return lead + r"\s+".join(pieces) + trail if pieces else r"\s+"


def _pattern_between(sentence: str, current: re.Match[str], name: re.Match[str]) -> str:
    if name.end() <= current.start():
        between = sentence[name.end() : current.start()]
        if len(between.split()) > 1 and _TRAILING_WORD.search(between):  # 'from Lake Orva': the type word
            between = _TRAILING_WORD.sub(" ", between)  # before a name is optional in every hop anyway
        return _NAME_GROUP + _literal(between) + PLACEHOLDER
    return PLACEHOLDER + _literal(sentence[current.end() : name.start()]) + _NAME_GROUP


def infer_reference(items: Sequence[str], start: str) -> InferredReference | None:
    r"""The `follow` pattern a line mentioning `start` shows, or None when no line mentions it with another word.

    Of the first `MENTIONS_TRIED` mentions of `start` (whole word, case-insensitive), the
    sentence holding the most name-like other word wins: written with a capital or a digit
    first, then the rarest in the whole text. That word is taken as the next name, and the
    words between it and `start` as the relation (``(\w+)\s+equal\s+{}`` from 'Let KCDIH
    equal 96852.'). A type word right before `start` is neither a name nor part of the
    relation ('Lake' in 'from Lake Orva').
    """
    mention = re.compile(
        (r"(?<!\w)" if re.match(r"\w", start) else "")
        + re.escape(start)
        + (r"(?![\w-])" if re.search(r"[\w-]$", start) else ""),
        re.IGNORECASE,
    )
    key = start.casefold()
    counts: Counter[str] | None = None
    best: tuple[tuple[bool, int], InferredReference] | None = None
    tried = 0
    for item in items:
        if key not in item.casefold():
            continue
        for current in mention.finditer(item):
            if tried >= MENTIONS_TRIED:
                break
            tried += 1
            low, high = _sentence_around(item, current.start(), current.end())
            sentence = item[low:high]
            here = mention.search(sentence, current.start() - low)
            if here is None:
                continue
            type_word = _TRAILING_WORD.search(sentence, 0, here.start())  # 'Lake' in 'Lake Orva' is no name
            others = [
                token
                for token in _TOKEN.finditer(sentence)
                if token.group().casefold() != key
                and (token.end() <= here.start() or token.start() >= here.end())
                and not (type_word is not None and token.start() == type_word.start())
            ]
            if not others:
                continue
            if counts is None:
                counts = Counter(token.casefold() for line in items for token in _TOKEN.findall(line))
            ranked = min(
                (
                    (
                        not any(char.isupper() or char.isdigit() for char in token.group()),  # names: 'BEX', 'li7'
                        counts[token.group().casefold()],
                        abs(token.start() - here.start()),
                        token.start(),  # ties: the earlier word; never the Match objects
                    ),
                    token,
                )
                for token in others
            )
            if best is None or ranked[0][:2] < best[0]:
                pattern = _pattern_between(sentence, here, ranked[1])
                best = (ranked[0][:2], InferredReference(pattern, sentence.strip(), ranked[1].group()))
        if tried >= MENTIONS_TRIED:
            break
    return best[1] if best else None
