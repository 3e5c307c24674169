"""What a family's generator returns: everything about a task except its identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Draft:
    """A generated task body.

    Attributes:
        context: the text the question is about (exactly the size asked for).
        question: the question, with the answer format it expects.
        gold: the answer (a string, an int, a list of strings, or a list of name pairs).
        scorer: ``exact``, ``list``, ``numeric`` or ``pairs`` (see `scoring`).
        pattern: a regex for the candidate items an answer may name (exact and list scorers).
        reference_code: a REPL program that computes the answer from ``context`` and calls
            ``FINAL``; the scripted smoke mode and the tests run it through the RLM.
        meta: facts the tests check (needles and how often each occurs, labels, counts).
    """

    context: str
    question: str
    gold: Any
    scorer: str
    pattern: str | None
    reference_code: str
    meta: dict[str, Any] = field(default_factory=dict)
