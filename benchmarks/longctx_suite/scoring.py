"""Scorers, after the originals: exact match, list recall (RULER), numeric partial credit (OOLONG).

Every scorer takes the answer as given (a string, or the Python value passed to
``FINAL``: it is turned into text with ``str``) and returns a score in [0, 1].

- ``exact`` (single answers): 1 when the normalised answer equals the gold answer, or
  when the only candidate items in the answer (``pattern``, e.g. 7-digit numbers) are
  exactly the gold one. "The number is 4821930." scores 1; an answer that names the gold
  number beside a distractor's scores 0.
- ``list`` (all-of): RULER scores lists by recall. Recall alone rewards an answer that
  prints every number in the context, so we multiply it by precision over the candidate
  items the answer names: ``recall × precision``. With no wrong items it is plain recall.
- ``numeric`` (counts): OOLONG's partial credit, ``0.75 ** |answer − gold|`` for the
  first integer in the answer (commas allowed: "1,204"); 0 when there is none.
- ``pairs`` (relational): the names in the answer, paired in order of appearance
  ("(a, b), (c, d)", "a & b; c & d", a list of tuples), scored like ``list`` over pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["NAME_PATTERN", "normalise", "score", "score_exact", "score_list", "score_numeric", "score_pairs"]

NAME_PATTERN = r"(?<![\w.])[a-z]+\.[a-z]+\d{2,3}(?!\w)"
"""A user name of the relational family (``maria.okafor17``)."""

_NUMBER = re.compile(r"-?\d[\d,]*")


def _text(answer: Any) -> str:
    return "" if answer is None else str(answer)


def normalise(text: str) -> str:
    """Lower case, collapsed spaces, no surrounding quotes, brackets or punctuation."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip(" \"'`.,;:!?()[]{}")


def score_exact(answer: Any, gold: str, pattern: str | None = None) -> float:
    """1.0 for the gold answer (normalised, or as the only candidate item), else 0.0."""
    text = _text(answer)
    if normalise(text) == normalise(gold):
        return 1.0
    if pattern is not None:
        return 1.0 if set(re.findall(pattern, text)) == {gold} else 0.0
    return 0.0


def score_list(answer: Any, gold: Sequence[str], pattern: str) -> float:
    """Recall of the gold items times the precision of the candidate items the answer names."""
    named = set(re.findall(pattern, _text(answer)))
    wanted = set(gold)
    if not named or not wanted:
        return 0.0
    hits = len(named & wanted)
    return (hits / len(wanted)) * (hits / len(named))


def score_numeric(answer: Any, gold: int) -> float:
    """``0.75 ** |n − gold|`` for the first integer n of the answer; 0.0 without one."""
    if isinstance(answer, bool):
        return 0.0
    if isinstance(answer, int):
        value = answer
    else:
        match = _NUMBER.search(_text(answer))
        if match is None:
            return 0.0
        digits = match.group(0).replace(",", "")
        if digits in ("", "-"):
            return 0.0
        value = int(digits)
    return float(0.75 ** abs(value - gold))


def score_pairs(answer: Any, gold: Sequence[Sequence[str]]) -> float:
    """`score_list` over unordered pairs of names taken two by two in order of appearance."""
    names = re.findall(NAME_PATTERN, _text(answer).lower())
    named = {frozenset(names[i : i + 2]) for i in range(0, len(names) - 1, 2)}
    named = {pair for pair in named if len(pair) == 2}
    wanted = {frozenset(pair) for pair in gold}
    if not named or not wanted:
        return 0.0
    hits = len(named & wanted)
    return (hits / len(wanted)) * (hits / len(named))


def score(scorer: str, answer: Any, gold: Any, pattern: str | None = None) -> float:
    """Dispatch on the scorer's name."""
    if scorer == "exact":
        return score_exact(answer, gold, pattern)
    if scorer == "list":
        if pattern is None:
            raise ValueError("the list scorer needs a pattern for candidate items")
        return score_list(answer, gold, pattern)
    if scorer == "numeric":
        return score_numeric(answer, gold)
    if scorer == "pairs":
        return score_pairs(answer, gold)
    raise ValueError(f"unknown scorer {scorer!r}: use exact, list, numeric or pairs")
