"""Look at the question and the context before the first turn: which words occur, and what shape the question has.

Two cheap facts change what a good first program is:

- **Which of the question's words occur in the text, and in how many lines.** A question
  whose words are field values of the records ("how many shipments went to Accra with
  state held?") is answered by matching; one whose words do not occur ("how many writers
  are dissatisfied?") needs reading. The counts go into the first message for every model,
  so none has to guess (small models otherwise search for the question's words, find
  nothing, and answer 0).
- **The question's shape**: look one thing up, list every match, count, or find records
  that share a value. With a model
  that asks for a worked example, the example shown is the one for this shape
  (`rlm_integrations.core.worked_examples`).

Nothing here reads the answer: the probe only counts lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from rlm_integrations.core.repl_helpers import split_items

__all__ = ["Probe", "Shape", "probe_question", "question_shape", "question_terms"]

Shape = Literal["lookup", "list", "count", "count_reading", "group"]

MAX_TERMS = 8
"""At most this many of the question's words are counted."""
COMMON_SHARE = 0.9
"""A word in more than this share of the lines (a field name of every record) does not pick lines out."""

_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been being below between both but by can
    could did do does doing done each every few for from further give had has have having he her here hers him
    his how i if in into is it its itself just list me more most much my name names no nor not number of off
    on once one only or other our out over own please same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what when where which
    while who whom whose why will with would you your answer answers reply count many value values just
    only exactly text context document find tell show give given get ones i.e e.g""".split()
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'-]*[A-Za-z0-9]|[A-Za-z0-9]")
_COUNT = re.compile(r"\bhow\s+many\b|\bhow\s+often\b|\bnumber\s+of\b|\bcount\b|\bhow\s+much\b", re.IGNORECASE)
_GROUP = re.compile(r"\bthe\s+same\b|\bshare\b|\bin\s+common\b|\bidentical\b", re.IGNORECASE)
_LIST = re.compile(r"\blist\b|\bevery\b|\ball\b|\beach\b|\bboth\b", re.IGNORECASE)


@dataclass(frozen=True)
class Probe:
    """Where the question's words occur: `found` maps a word to the number of lines (items) holding it."""

    lines: int
    found: dict[str, int]
    missing: list[str]

    @property
    def selective(self) -> list[str]:
        """Found words that do not occur in (nearly) every line: they pick lines out."""
        return [word for word, count in self.found.items() if count <= max(1, self.lines * COMMON_SHARE)]

    def literal(self) -> bool:
        """True when matching can answer: most of the question's words occur, and one of them picks lines out."""
        total = len(self.found) + len(self.missing)
        return bool(total) and bool(self.selective) and len(self.found) * 2 >= total

    def describe(self) -> str:
        """One paragraph for the first message."""
        if not self.found and not self.missing:
            return ""
        parts = [f"{word!r} in {count:,}" for word, count in self.found.items()]
        text = f"`context` has {self.lines:,} non-empty lines."
        if parts:
            text += f" Lines containing the question's words: {', '.join(parts)}."
        if self.missing:
            text += f" Not in the text: {', '.join(repr(word) for word in self.missing)}."
        return text


def question_terms(query: str) -> list[str]:
    """The question's content words, in order, without stopwords or repeats (at most `MAX_TERMS`)."""
    terms: list[str] = []
    for word in _WORD.findall(query):
        lowered = word.lower()
        if lowered in _STOPWORDS or (len(lowered) < 3 and not lowered.isdigit()):
            continue
        if lowered not in terms:
            terms.append(lowered)
    return terms[:MAX_TERMS]


def _variants(term: str) -> list[str]:
    """The word and its singular (a plural question word often names singular records: shipments -> Shipment)."""
    forms = [term]
    if len(term) > 4 and term.endswith("ies"):
        forms.append(term[:-3] + "y")
    elif len(term) > 3 and term.endswith("es") and term[-3] in "sxz":
        forms.append(term[:-2])
    elif len(term) > 3 and term.endswith("s") and not term.endswith("ss"):
        forms.append(term[:-1])
    return forms


def probe_question(query: str, context: Any) -> Probe:
    """Count, for each of the question's words, the lines (items) of `context` that contain it (case-insensitive)."""
    items = split_items(context)
    lowered = [item.lower() for item in items]
    found: dict[str, int] = {}
    missing: list[str] = []
    for term in question_terms(query):
        pattern = re.compile("|".join(rf"(?<![\w-]){re.escape(form)}(?![\w-])" for form in _variants(term)))
        count = sum(1 for item in lowered if pattern.search(item))
        if count:
            found[term] = count
        else:
            missing.append(term)
    return Probe(lines=len(items), found=found, missing=missing)


def question_shape(query: str, probe: Probe | None) -> Shape:
    """Group records by a shared value, count (by matching or by reading), list every match, or look one thing up."""
    if _GROUP.search(query):
        return "group"
    if _COUNT.search(query):
        return "count" if probe is None or probe.literal() else "count_reading"
    if _LIST.search(query):
        return "list"
    return "lookup"
