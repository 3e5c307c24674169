"""Look at the question and the context before the first turn: which words occur, and what shape the question has.

Two cheap facts change what a good first program is:

- **Which of the question's words occur in the text, and in how many lines.** A question
  whose words are field values of the records ("how many shipments went to Accra with
  state held?") is answered by matching; one whose words do not occur ("how many writers
  are dissatisfied?") needs reading. The counts go into the first message for every model,
  so none has to guess (small models otherwise search for the question's words, find
  nothing, and answer 0).
- **How the text words things**: the sentence of the first mention of the question's
  rarest words (or one record line), so the first pattern comes from the text, not from
  the question. For a lookup that sentence may hold the answer; no model is called here.
- **The question's shape**: look one thing up, list every match, count, group records
  that share a value, or follow references from one thing to the next. With a model
  that asks for a worked example, the example shown is the one for this shape
  (`rlm_integrations.core.worked_examples`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from rlm_integrations.core.repl_helpers import split_items

__all__ = [
    "Probe",
    "Shape",
    "first_step",
    "probe_question",
    "question_shape",
    "question_terms",
]

Shape = Literal["lookup", "list", "count", "count_reading", "group", "chain"]

PROBE_CHARS = 32_000_000
"""Contexts longer than this are probed on their first 32 million characters (the probe says so)."""
MAX_TERMS = 8
"""At most this many of the question's words are counted."""
COMMON_SHARE = 0.9
"""A word in more than this share of the lines (a field name of every record) does not pick lines out."""
RARE_LINES = 3
"""A word found in at most this many lines is shown where it is first mentioned (its sentence);
when no word is that rare, the least common one is (a look at how the records read)."""
MAX_SAMPLES = 2
"""At most this many words are shown in place, the rarest first, each line once."""
SAMPLE_CHARS = 120
"""Characters kept on each side of a shown word."""

_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been being below between both but by can
    could did do does doing done each every few for from further give had has have having he her here hers him
    his how i if in into is it its itself just list me more most much my name names no nor not number of off
    on once one only or other our out over own please same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what when where which
    while who whom whose why will with would you your answer answers reply count many value values just
    only exactly text context document find tell show give given get ones i.e e.g""".split()
)
_NEWLINE = re.compile(r"\n")
_NON_EMPTY_LINE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'-]*[A-Za-z0-9]|[A-Za-z0-9]")
_COUNT = re.compile(r"\bhow\s+many\b|\bhow\s+often\b|\bnumber\s+of\b|\bcount\b|\bhow\s+much\b", re.IGNORECASE)
_GROUP = re.compile(r"\bthe\s+same\b|\bshare\b|\bin\s+common\b|\bidentical\b", re.IGNORECASE)
_CHAIN = re.compile(r"\bindirectly\b|\bthrough\s+(?:an)?other\b|\btransitively\b|\bchain\s+of\b", re.IGNORECASE)
_LIST = re.compile(r"\blist\b|\bevery\b|\ball\b|\beach\b|\bboth\b", re.IGNORECASE)


@dataclass(frozen=True)
class Probe:
    """Where the question's words occur: `found` maps a word to the number of lines (items) holding it."""

    lines: int
    found: dict[str, int]
    missing: list[str]
    sampled_chars: int | None = None
    """Set when only the first this many characters were probed (a very large context)."""
    samples: dict[str, str] = field(default_factory=dict)
    """For the rarest found words: the sentence of their first mention (how the text words things)."""

    @property
    def selective(self) -> list[str]:
        """Found words that do not occur in (nearly) every line: they pick lines out."""
        return [word for word, count in self.found.items() if count <= max(1, self.lines * COMMON_SHARE)]

    def literal(self) -> bool:
        """True when matching can answer: most of the question's words occur, and one of them picks lines out."""
        total = len(self.found) + len(self.missing)
        return bool(total) and bool(self.selective) and len(self.found) * 2 >= total

    def describe(self, *, samples: bool = True) -> str:
        """One paragraph for the first message (`samples`: with the rare words' first lines)."""
        if not self.found and not self.missing:
            return ""
        parts = [f"{word!r} in {count:,}" for word, count in self.found.items()]
        where = (
            f"The first {self.sampled_chars:,} characters of `context` have" if self.sampled_chars else "`context` has"
        )
        text = f"{where} {self.lines:,} non-empty lines."
        if parts:
            text += f" Lines containing the question's words: {', '.join(parts)}."
        if self.missing:
            text += f" Not in the text: {', '.join(repr(word) for word in self.missing)}."
        for word, sample in self.samples.items() if samples else ():
            text += f"\nFirst mention of {word!r}: {sample}"
        return text

    def describe_for(self, shape: Shape) -> str:
        """`describe` for a question of this shape.

        A list or chain question gets no first mentions: small models copy the one value (or the
        one name) shown as the whole answer.
        """
        return self.describe(samples=shape not in ("list", "chain"))


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


def _literal_first(word: str) -> str:
    """A whole-word pattern that starts with the literal, so the engine's fast substring search finds candidates."""
    escaped = re.escape(word)
    return rf"{escaped}(?<![\w-]{escaped})(?![\w-])"


def _lines_with(text: str, pattern: re.Pattern[str]) -> tuple[int, re.Match[str] | None]:
    """How many lines of `text` hold a match, and the first match (linear in the text, however long its lines)."""
    lines = 0
    first: re.Match[str] | None = None
    searched_to = 0  # no newline between here and the last counted match: same line
    for match in pattern.finditer(text):
        if first is None or text.find("\n", searched_to, match.start()) >= 0:
            lines += 1
        first = first or match
        searched_to = match.start()
    return lines, first


def _sample(text: str, match: re.Match[str]) -> str:
    """The sentence around `match` (within its line), cut to `SAMPLE_CHARS` on each side."""
    line_start = text.rfind("\n", 0, match.start()) + 1
    line_end = text.find("\n", match.end())
    line_end = len(text) if line_end < 0 else line_end
    dot = text.rfind(". ", line_start, match.start())
    start = dot + 2 if dot >= 0 else line_start
    dot = text.find(". ", match.end(), line_end)
    end = dot + 1 if dot >= 0 else line_end
    cut_start = max(start, match.start() - SAMPLE_CHARS)
    cut_end = min(end, match.end() + SAMPLE_CHARS)
    return ("..." if cut_start > start else "") + text[cut_start:cut_end].strip() + ("..." if cut_end < end else "")


def _samples(text: str, found: dict[str, int], firsts: dict[str, re.Match[str]]) -> dict[str, str]:
    """The rarest words' first lines (or the least common word's, when none is rare), each line once."""
    by_rarity = sorted(found, key=lambda word: found[word])
    chosen = [word for word in by_rarity if found[word] <= RARE_LINES] or by_rarity[:1]
    samples: dict[str, str] = {}
    lines_shown: set[int] = set()
    for word in chosen:
        line = text.rfind("\n", 0, firsts[word].start())
        if line not in lines_shown and len(samples) < MAX_SAMPLES:
            lines_shown.add(line)
            samples[word] = _sample(text, firsts[word])
    return samples


def probe_question(query: str, context: Any) -> Probe:
    """Count, for each of the question's words, the lines (items) of `context` that contain it (case-insensitive).

    One regular-expression scan of the text per word (not one per line, and literal first,
    so the engine's substring search does the work): about a second for 32 MB; beyond
    `PROBE_CHARS` only the beginning is probed, and the probe says so.
    """
    text = context if isinstance(context, str) else "\n".join(item.replace("\n", " ") for item in split_items(context))
    sampled = len(text) > PROBE_CHARS
    if sampled:
        text = text[: text.rfind("\n", 0, PROBE_CHARS) + 1 or PROBE_CHARS]
    lowered = text.replace("\u0130", "I").lower()  # İ is the one character whose lower() is longer
    shown = text if len(lowered) == len(text) else lowered  # offsets agree, so quotes keep the text's case
    found: dict[str, int] = {}
    missing: list[str] = []
    firsts: dict[str, re.Match[str]] = {}
    for term in question_terms(query):
        lines, first = _lines_with(lowered, re.compile("|".join(_literal_first(form) for form in _variants(term))))
        if first is not None:
            word = first.group(0)  # the form the text uses ('member' for 'members'), so grep(word) finds it
            found.setdefault(word, lines)
            firsts.setdefault(word, first)
        else:
            missing.append(term)
    samples = _samples(shown, found, firsts)
    count = len(_NON_EMPTY_LINE.findall(lowered))
    return Probe(
        lines=count, found=found, missing=missing, sampled_chars=len(text) if sampled else None, samples=samples
    )


def first_step(shape: Shape, probe: Probe | None) -> str | None:
    """A first cell for a question of this shape, written from the probe's words (None when none fits).

    Shown when an answer comes before any code ran, so that a small model has the call to
    start from in front of it: `follow` from the question's rarest word for a chain, `grep`
    with the words that pick lines out for a list or a count, `same` with the last word found
    for a group. Lookups need none (the probe quotes the line); reading questions need code no
    single call writes.
    """
    if probe is None or not probe.found:
        return None
    rarest = min(reversed(probe.found), key=lambda word: probe.found[word])  # ties: the later word ('lake orva')
    if shape == "chain":
        return f"found = follow({rarest!r})\nprint(found)"
    picking = ", ".join(repr(word) for word in probe.selective) or repr(rarest)
    if shape == "list":
        return f"hits = grep({picking})\nprint(len(hits))\nfor hit in hits:\n    print(hit)"
    if shape == "count":
        return f"hits = grep({picking})\nprint(len(hits))\nprint(hits[:3])"
    if shape == "group":  # the attribute is usually named last: 'share the same locker code'
        attribute = list(probe.found)[-1]
        return f"groups = same({attribute!r}, names=True)\nprint(len(groups))\nprint(groups)"
    return None


def question_shape(query: str, probe: Probe | None) -> Shape:
    """The question's shape: group, follow references (chain), count (by matching or reading), list, or look up."""
    if _GROUP.search(query):
        return "group"
    if _COUNT.search(query):  # "how many ... directly or indirectly" is still a count
        return "count" if probe is None or probe.literal() else "count_reading"
    if _CHAIN.search(query):
        return "chain"
    if _LIST.search(query):
        return "list"
    return "lookup"
