"""Citations: the spans of the context that support a run's answer, found after the run and verified.

Where candidates come from, in order of trust:

1. ``cite(...)`` calls the model's code made (`CiteLog`): ``cite(text)`` with text copied
   from the context, or ``cite(start, end)`` offsets, each with ``item=`` for a list or
   dict context.
2. The answer itself: a long enough answer, or a sentence of it, found verbatim.
3. What the code printed (the cells' stdout in the trajectory): a printed line holding one
   of the answer's key tokens (numbers, names, codes) is matched back to the context
   around each occurrence of that token, and the longest verbatim stretch is cited.
4. A derived answer (a number: a count, a sum) that no printed line contains: the verbatim
   context lines printed by the last cell that printed any are cited as its evidence.

Every candidate is checked by exact substring search (`str.find`, never a regex over the
context), so ``context[c.start:c.end] == c.text`` (or ``context[c.item][c.start:c.end]``)
always holds. Work is bounded (tokens, occurrences, lines and citations are capped), so a
10M-character context costs milliseconds to a few hundred milliseconds.

Limits: printed text is matched as written, so output that was reformatted (``repr`` with
escapes, numbers reformatted, text the sub-model paraphrased) is not cited; a short answer
(a single digit, a common word) is never searched on its own because it would match by
chance; list and dict contexts are searched in their str items only (nested containers
and bytes contexts get no citations).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict


class _Event(Protocol):
    """What citation finding reads of an event (`core.events` is not imported: it carries `Citation`)."""

    @property
    def kind(self) -> str: ...


class _CellOutput(_Event, Protocol):
    @property
    def stdout(self) -> str: ...


__all__ = ["Citation", "CiteLog", "citations_for", "find_citations", "sources_lines"]

logger = logging.getLogger("rlm_integrations")

MAX_CITATIONS = 20
"""At most this many citations per result."""
MAX_CITATION_CHARS = 600
"""A longer span is cut to this many characters (around the token it was found for)."""
MAX_CITE_CALLS = 200
"""`cite(...)` calls recorded per run; later ones are ignored."""
_MIN_EVIDENCE = 20
_MIN_ANSWER = 12
_MAX_OCCURRENCES = 64
_MAX_LINES = 4_000
_MAX_LINE_CHARS = 2_000
_MAX_TOKENS = 12
_SEP = "\x00"

Source = Literal["cite", "answer", "printed", "evidence"]


class Citation(BaseModel):
    """A verified span of the context.

    Attributes:
        start: offset of the first character (into the context, or into `item`'s text).
        end: offset just past the last character.
        text: the quoted slice, always ``context[start:end]`` (or ``context[item][start:end]``).
        item: the list index or dict key for list/dict contexts, None for a str context.
        source: how it was found: ``"cite"`` (an explicit `cite()` call), ``"answer"`` (the
            answer quoted verbatim), ``"printed"`` (a printed line holding a key token of the
            answer) or ``"evidence"`` (lines printed before a derived answer).
    """

    model_config = ConfigDict(frozen=True)

    start: int
    end: int
    text: str
    item: int | str | None = None
    source: Source = "printed"


@dataclass
class CiteLog:
    """What `cite(...)` calls recorded during a run (the REPL function is `function()`)."""

    requests: list[tuple[Any, Any, Any]] = field(default_factory=list)

    def function(self, depth: int = 0) -> Callable[..., str]:
        """The host function registered in the REPL as `cite`, for a run at `depth`.

        A child run (`depth` > 0) has its own context: its quotes are searched in the
        top-level context, its offsets are ignored (they would point into the wrong text).
        """

        def cite(what: Any, end: Any = None, item: Any = None) -> str:
            """Record a citation: `cite(text)` with text copied from the context, or `cite(start, end)`."""
            if isinstance(what, bool) or not isinstance(what, str | int):
                raise TypeError(
                    f"cite() takes the quoted text (str) or a start offset (int), got {type(what).__name__}"
                )
            if isinstance(what, int) and not isinstance(end, int):
                raise TypeError("cite(start, end): give both offsets as int, or pass the quoted text instead")
            if item is not None and not isinstance(item, int | str):
                raise TypeError(f"cite(..., item=...) takes a list index or dict key, got {type(item).__name__}")
            if depth > 0 and isinstance(what, int):
                return "offsets in a child run are ignored; cite the quoted text instead"
            if len(self.requests) < MAX_CITE_CALLS:
                text = what[: MAX_CITATION_CHARS * 4] if isinstance(what, str) else what
                self.requests.append((text, end, item))
            return "noted; citations are checked against the context after the run"

        return cite


def sources_lines(citations: list[Citation], *, shown: int = 8, width: int = 100) -> list[str]:
    """A short "Sources:" list for a terminal: where each citation is, and its quote on one line."""
    if not citations:
        return []
    lines = ["Sources:"]
    for number, citation in enumerate(citations[:shown], 1):
        where = "" if citation.item is None else f"item {citation.item!r}, "
        quote = " ".join(citation.text.split())
        if len(quote) > width:
            quote = quote[: width - 1] + "\u2026"
        lines.append(f'  [{number}] {where}chars {citation.start:,}-{citation.end:,}: "{quote}"')
    if len(citations) > shown:
        lines.append(f"  ... and {len(citations) - shown} more (result.citations)")
    return lines


class _Corpus:
    """The searchable text of a context: one str, or the str items of a list/dict joined by NUL."""

    def __init__(self, context: Any) -> None:
        self.keys: list[int | str] | None = None
        self.starts: list[int] = []
        self._index: dict[int | str, int] | None = None
        if isinstance(context, str):
            self.text = context
            return
        pairs: Iterable[tuple[int | str, Any]]
        if isinstance(context, list | tuple):
            pairs = enumerate(context)
        elif isinstance(context, dict):
            pairs = ((str(key), value) for key, value in context.items())
        else:
            self.text = ""
            return
        keys: list[int | str] = []
        parts: list[str] = []
        position = 0
        for key, value in pairs:
            if isinstance(value, str) and _SEP not in value:
                keys.append(key)
                self.starts.append(position)
                parts.append(value)
                position += len(value) + 1
        self.keys = keys
        self.text = _SEP.join(parts)

    def locate(self, start: int, end: int, source: Source) -> Citation | None:
        """The citation for corpus span [start, end), in item coordinates for a container."""
        if end <= start or _SEP in self.text[start:end]:
            return None
        if end - start > MAX_CITATION_CHARS:
            end = start + MAX_CITATION_CHARS
        text = self.text[start:end]
        if self.keys is None:
            return Citation(start=start, end=end, text=text, source=source)
        index = bisect.bisect_right(self.starts, start) - 1
        base = self.starts[index]
        return Citation(start=start - base, end=end - base, text=text, item=self.keys[index], source=source)

    def item_span(self, item: int | str | None) -> tuple[int, int] | None:
        """The corpus span of `item` (the whole text for None)."""
        if item is None:
            return 0, len(self.text)
        if self.keys is None:
            return None
        if self._index is None:
            self._index = {key: number for number, key in enumerate(self.keys)}
        index = self._index.get(item)
        if index is None:
            return None
        start = self.starts[index]
        end = self.starts[index + 1] - 1 if index + 1 < len(self.starts) else len(self.text)
        return start, end

    def occurrences(self, token: str, limit: int = _MAX_OCCURRENCES) -> list[int]:
        found: list[int] = []
        at = self.text.find(token)
        while at >= 0 and len(found) < limit:
            found.append(at)
            at = self.text.find(token, at + 1)
        return found


def citations_for(config: Any, context: Any, answer: Any, events: Iterable[_Event], cites: CiteLog) -> list[Citation]:
    """`find_citations` when `config.citations` is on; a failure is logged and gives none (the run stands)."""
    if not getattr(config, "citations", True) or answer is None:
        return []
    try:
        return find_citations(context, answer, events, cites)
    except Exception:  # citations are a convenience: never lose a finished run to them
        logger.exception("finding citations failed; the result has none")
        return []


def find_citations(context: Any, answer: Any, events: Iterable[_Event], cites: CiteLog | None = None) -> list[Citation]:
    """The verified citations for `answer` over `context` (see the module docstring for the method)."""
    corpus = _Corpus(context)
    if not corpus.text:
        return []
    found = _Found(corpus)
    for what, end, item in cites.requests if cites is not None else ():
        found.add(_explicit(corpus, what, end, item))
    answer_text = _as_text(answer)
    for fragment in _answer_fragments(answer_text):
        at = corpus.text.find(fragment)
        if at >= 0:
            found.add(corpus.locate(at, at + len(fragment), "answer"))
    cells = [cast(_CellOutput, event) for event in events if event.kind == "cell_end"]
    lines_by_cell = [_printed_lines(cell.stdout) for cell in cells]
    matched = False
    for line, present in _lines_with(lines_by_cell, _key_tokens(answer_text)):
        for token in present:  # the most distinctive token first
            citation = _line_match(corpus, line, token)
            if citation is not None:
                matched = True
                found.add(citation)
                break
    if not matched and not found.items and _is_number(answer, answer_text):
        for lines in reversed(lines_by_cell):  # a derived answer: the last printed evidence
            verified = [c for c in (_whole_line(corpus, line) for line in lines) if c is not None]
            for citation in verified:
                found.add(citation)
            if verified:
                break
    return found.items


class _Found:
    """Citations kept in order: no duplicates, no span inside one already kept, overlaps joined."""

    def __init__(self, corpus: _Corpus) -> None:
        self.corpus = corpus
        self.items: list[Citation] = []

    def add(self, citation: Citation | None) -> None:
        if citation is None or len(self.items) >= MAX_CITATIONS:
            return
        for index, kept in enumerate(self.items):
            if kept.item != citation.item or kept.end < citation.start or citation.end < kept.start:
                continue
            if kept.start <= citation.start and citation.end <= kept.end:
                return
            if kept.source == "cite" or citation.source == "cite":
                continue  # an explicit citation stays as the model chose it
            joined = self._join(kept, citation)
            if joined is not None:
                self.items[index] = joined  # e.g. the printed line around a bare answer, or two windows
                return
        self.items.append(citation)

    def _join(self, one: Citation, other: Citation) -> Citation | None:
        start, end = min(one.start, other.start), max(one.end, other.end)
        span = self.corpus.item_span(one.item)
        if end - start > MAX_CITATION_CHARS or span is None:
            return None
        source = other.source if one.source == "answer" else one.source
        return self.corpus.locate(span[0] + start, span[0] + end, source)


def _explicit(corpus: _Corpus, what: Any, end: Any, item: Any) -> Citation | None:
    span = corpus.item_span(item)
    if span is None:
        return None
    lo, hi = span
    if isinstance(what, int):
        if not isinstance(end, int) or not 0 <= what < end <= hi - lo:
            return None
        return corpus.locate(lo + what, lo + end, "cite")
    text = what.strip()
    if not text or _SEP in text:
        return None
    at = corpus.text.find(text, lo, hi)
    return None if at < 0 else corpus.locate(at, at + len(text), "cite")


def _whole_line(corpus: _Corpus, line: str) -> Citation | None:
    if len(line) < _MIN_EVIDENCE:
        return None
    at = corpus.text.find(line)
    return None if at < 0 else corpus.locate(at, at + len(line), "evidence")


_NUMBER = re.compile(r"[-+]?\d[\d,_]*(\.\d+)?%?")


def _is_number(answer: Any, text: str) -> bool:
    """A derived answer: a count, a sum, an average (a number, or text that is only a number)."""
    if isinstance(answer, bool):
        return False
    return isinstance(answer, int | float) or _NUMBER.fullmatch(text.strip()) is not None


def _as_text(answer: Any) -> str:
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    try:
        return json.dumps(answer, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(answer)


def _answer_fragments(answer: str) -> list[str]:
    """The whole answer if long enough, and its sentences (each long enough to rule out chance)."""
    text = answer.strip()
    if len(text) < _MIN_ANSWER:
        return []
    pieces = [text] + [p.strip() for p in re.split(r"(?<=[.!?;\n])\s+", text[:20_000])]
    seen: set[str] = set()
    fragments: list[str] = []
    for piece in pieces:
        piece = piece.rstrip(".!?; ")
        if len(piece) >= _MIN_ANSWER and piece not in seen and len(fragments) < MAX_CITATIONS:
            seen.add(piece)
            fragments.append(piece[: MAX_CITATION_CHARS * 4])
    return fragments


_TOKEN = re.compile(r"[0-9][0-9,.:/\-]*[0-9]|[A-Za-z0-9][\w\-]*[0-9][\w\-]*|[A-Z][\w\-]{2,}|[a-z]{5,}")
_COMMON = frozenset(
    "about after again answer because before being between could during every found other there these "
    "their those through under where which while would the that this with from have".split()
)


def _key_tokens(answer: str) -> list[str]:
    """Numbers, codes, names and long words of the answer, most distinctive first."""
    text = answer.strip()
    tokens: list[str] = []
    if 2 <= len(text) <= 60 and "\n" not in text:
        tokens.append(text)
    for match in _TOKEN.finditer(text[:5_000]):
        token = match.group().rstrip(",.:/-")
        if len(token) >= 2 and token.lower() not in _COMMON and token not in tokens:
            tokens.append(token)
    tokens.sort(key=lambda t: (not any(c.isdigit() for c in t), -len(t)))
    return tokens[:_MAX_TOKENS]


def _printed_lines(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines()[:_MAX_LINES] if line.strip()]


def _lines_with(lines_by_cell: list[list[str]], tokens: list[str]) -> list[tuple[str, list[str]]]:
    """Printed lines holding key tokens (as whole words), with the tokens each holds, best first.

    A line with less than half the key tokens of the best line is left out: it shares a name
    with the answer (a place, a unit) but is about something else.
    """
    patterns = [(token, re.compile(r"(?<![\w.])" + re.escape(token) + r"(?!\w)")) for token in tokens]
    chosen: dict[str, list[str]] = {}
    budget = _MAX_LINES * 4
    for lines in lines_by_cell:
        for line in lines[:budget]:
            line = line[:_MAX_LINE_CHARS]
            present = [token for token, pattern in patterns if token in line and pattern.search(line)]
            if present and line not in chosen:
                chosen[line] = present
        budget -= len(lines)
        if budget <= 0:
            break
    if not chosen:
        return []
    best = max(len(present) for present in chosen.values())
    ranked = sorted(chosen.items(), key=lambda pair: -len(pair[1]))
    return [(line, present) for line, present in ranked if 2 * len(present) >= best][: MAX_CITATIONS * 2]


def _line_match(corpus: _Corpus, line: str, token: str) -> Citation | None:
    """The longest stretch of `line` around `token` that the context holds verbatim, if long enough."""
    if _SEP in line:
        return None
    p = line.find(token)
    best: tuple[int, int, int] | None = None
    for q in corpus.occurrences(token):
        left = _shared(line, p, corpus.text, q, min(p, q), backwards=True)
        after_p, after_q = p + len(token), q + len(token)
        room = min(len(line) - after_p, len(corpus.text) - after_q)
        right = _shared(line, after_p, corpus.text, after_q, room, backwards=False)
        if best is None or left + right > best[1] - best[0] - len(token):
            best = (q - left, q + len(token) + right, q)
            if best[1] - best[0] >= len(line):
                break
    if best is None:
        return None
    start, end, q = best
    whole = end - start >= len(line) and len(line) >= len(token) + 4
    if end - start < _MIN_EVIDENCE and not whole:
        return None
    if end - start > MAX_CITATION_CHARS:  # keep the token inside the cut span
        start = max(start, min(q - MAX_CITATION_CHARS // 2, end - MAX_CITATION_CHARS))
        end = min(end, start + MAX_CITATION_CHARS)
    return corpus.locate(start, end, "printed")


def _shared(a: str, i: int, b: str, j: int, most: int, *, backwards: bool) -> int:
    """How many characters `a` and `b` share going back from (or forward from) `a[i]`/`b[j]`, at most `most`.

    Binary search with slice comparisons (sharing is monotone), so a long line costs a few slices.
    """
    lo, hi = 0, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        same = a[i - mid : i] == b[j - mid : j] if backwards else a[i : i + mid] == b[j : j + mid]
        if same:
            lo = mid
        else:
            hi = mid - 1
    return lo
