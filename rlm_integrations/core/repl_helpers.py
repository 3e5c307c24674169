"""Higher-level REPL functions that make the right program short: `grep`, `follow`, `llm_map`, `llm_filter`.

Small models write one short block well and a long one badly. Four question shapes need
more than "search and print": counting records that match a condition (`len(grep(...))`),
listing every match (`grep(...)`), judging items that no keyword marks
(`llm_filter(items, question)`), and following references from one name to the next
(`follow(start, pattern)`, see `rlm_integrations.core.reference_chain`). These functions
are host callbacks like `llm_query`: they run outside the sandbox, on the host's copy of
the context, and their model calls go through the run's budgets, concurrency limit and
call cache like any other sub-call.

They also notice when a search came back empty: `HelperNotes` collects a note for the
turn's feedback, and a run whose answer is "nothing" right after an empty search is asked
once to check (the commonest small-model failure: a question's words that do not occur
in the text, taken as "the answer is 0").
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from rlm_integrations.core.reference_chain import MAX_NAMES, ReferencePattern, follow_references, infer_reference
from rlm_integrations.core.shared_values import MAX_GROUPS as SAME_GROUPS_CAP
from rlm_integrations.core.shared_values import same_value_groups
from rlm_integrations.repl.worker.notebook import CALL_ERROR_KEY

__all__ = ["HELPER_DOCS", "HelperNotes", "ReplHelpers", "find_lines", "split_items"]


class SubCall(Protocol):
    """The engine's sub-call, with budgets and recording: ``(function name, prompt, max_tokens) -> reply``."""

    def __call__(self, function: str, prompt: str, max_tokens: int | None = None) -> Awaitable[str]: ...


LONG_LINE_CHARS = 400
"""A matching line longer than this is returned as a window around the match."""
WINDOW_CHARS = 160
"""Characters kept on each side of a match inside a long line."""
FILTER_ANSWER_TOKENS = 8
"""`llm_filter` needs a yes or a no: its replies are capped here (small models otherwise explain at length)."""
PACK_ABOVE = 32
"""`llm_filter` makes one sub-call per item up to this many items; beyond, items share calls."""
MAX_PACKED_CALLS = 32
"""About how many sub-calls a long `llm_filter` makes (more only if the items do not fit the prompts)."""
MAX_ITEM_CHARS = 4_000
"""`llm_map` sends at most this much of one item (the rest is cut, and the prompt says so)."""

TEXT_ARG_CHARS = 500
"""A `grep` argument longer than this (or spanning lines) is the text to search, passed where a word goes."""

HELPER_DOCS: dict[str, str] = {
    "grep": (
        "`grep(*words, text=None)`: the lines of `context` (or of `text`, a str or list) that contain every "
        "word, case-insensitive; a list of str. `len(grep('red', 'large'))` counts matching records."
    ),
    "follow": (
        "`follow(start, pattern=None, text=None)`: every name reached from `start` by following references: "
        "`follow('Orva')` returns the towns that draw from Orva, then those that draw from them, and so on, "
        "reading how references are written from the line that mentions Orva. To say it yourself, `pattern` is "
        "a line of the text with the next name as a group and {} where the current name goes: "
        "`follow('Orva', r'Town (\\w+) draws its water from {}')`."
    ),
    "same": (
        "`same(word, text=None, names=False)`: the lines grouped by the value written after `word` (the first "
        "token holding a digit, else the next word), only values two or more lines share: a list of lists of "
        "lines, or with `names=True` of each line's name (its first word no other line holds); "
        "`same('room', names=True)` gives the guests who gave the same room number."
    ),
    "llm_map": (
        "`llm_map(items, instruction)`: ask the helper model `instruction` about each item (a list of str); "
        "returns one answer per item, in order, answered concurrently."
    ),
    "llm_filter": (
        "`llm_filter(items, question)`: the items for which the helper model answers yes to `question`; "
        "use it when a condition needs reading, not matching (long lists share sub-calls)."
    ),
}
"""One line per function for the system prompt."""

_EMPTY_ANSWERS = frozenset({"", "0", "none", "no", "[]", "not found", "nothing", "n/a", "unknown", "zero"})


def split_items(text: Any) -> list[str]:
    """A context's items: its non-empty lines (a str), its elements (a list or tuple), its values (a dict)."""
    if isinstance(text, str):
        return [line for line in text.splitlines() if line.strip()]
    if isinstance(text, dict):
        return [str(value) for value in text.values()]
    if isinstance(text, list | tuple):
        return [item if isinstance(item, str) else str(item) for item in text]
    if text is None:
        return []
    return split_items(str(text))


def _word_pattern(word: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive; the literal comes first so the engine's fast substring search finds it."""
    text = word.strip()
    escaped = re.escape(text)
    before = rf"(?<![\w-]{escaped})" if re.match(r"[\w-]", text[:1]) else ""
    after = r"(?![\w-])" if re.search(r"[\w-]$", text) else ""
    return re.compile(escaped + before + after, re.IGNORECASE)


def find_lines(items: Sequence[str], words: Sequence[str]) -> list[str]:
    """The items that contain every word (whole words, case-insensitive); long ones cut to a window."""
    patterns = [_word_pattern(word) for word in words if word.strip()]
    if not patterns:
        raise ValueError("grep() needs at least one non-empty word, e.g. grep('invoice', 'paid')")
    found: list[str] = []
    for item in items:
        first = None
        for pattern in patterns:
            match = pattern.search(item)
            if match is None:
                break
            first = match if first is None else first
        else:
            if first is None or len(item) <= LONG_LINE_CHARS:
                found.append(item)
            else:
                found.extend(_windows(item, patterns) or [_window(item, first)])
    return found


def _windows(item: str, patterns: Sequence[re.Pattern[str]]) -> list[str]:
    """In a long line, a window around each mention of the rarest word that has every other word near it.

    A long line may hold several records: the first word's first mention can belong to another
    one (a look-alike key's sentence before the asked key's), and one window would miss the rest.
    """
    mentions = [list(pattern.finditer(item)) for pattern in patterns]
    rarest = min(range(len(patterns)), key=lambda index: len(mentions[index]))
    windows: list[str] = []
    for anchor in mentions[rarest]:
        low, high = anchor.start() - WINDOW_CHARS, anchor.end() + WINDOW_CHARS
        if all(any(low <= m.start() and m.end() <= high for m in found) for found in mentions):
            windows.append(_window(item, anchor))
    return windows


def _window(item: str, match: re.Match[str]) -> str:
    if len(item) <= LONG_LINE_CHARS:
        return item
    start = max(0, match.start() - WINDOW_CHARS)
    end = min(len(item), match.end() + WINDOW_CHARS)
    return ("..." if start else "") + item[start:end] + ("..." if end < len(item) else "")


@dataclass
class HelperNotes:
    """What the helpers noticed during a run: searches that found nothing, for feedback and one check."""

    empty_searches: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    challenged: bool = False
    silent_turn: bool = False
    """Whether the last turn's code printed nothing at all (no output, no value, no error)."""

    def record_empty(self, words: Sequence[str]) -> None:
        """Note a search that found nothing (said in the next feedback)."""
        label = ", ".join(repr(word) for word in words)
        self.empty_searches.append(label)
        self.add(
            f"Note: grep({label}) found no line. The question's words often do not appear in the text as "
            "written: print a few lines (e.g. `print(context[:600])`) to see how the text words things, then "
            "search for those words; if the condition needs judgement, use `llm_filter(items, question)`."
        )

    def add(self, note: str) -> None:
        """A note for the next feedback."""
        self.pending.append(note)

    def take(self) -> list[str]:
        """The notes for this turn's feedback (each said once)."""
        notes, self.pending = self.pending, []
        return notes

    def challenge(self, answer: Any) -> str | None:
        """A request to check an empty or zero answer given after an empty search or a silent turn (once per run).

        None when the answer is not empty, nothing came back empty, or a check was already asked for.
        """
        if self.challenged or not _looks_empty(answer) or not (self.empty_searches or self.silent_turn):
            return None
        self.challenged = True
        if not self.empty_searches:
            return (
                f"Your answer is {answer!r}, but the code before it printed nothing, so nothing checked it: an "
                "empty result usually means a pattern or condition did not match the text. Print a few of the "
                "lines your code works on, and what your pattern takes from them, to see why; then answer. If "
                "you are sure, call FINAL again with the same answer."
            )
        return (
            f"Your answer is {answer!r}, but your search grep({self.empty_searches[-1]}) found nothing, which "
            "usually means the words differ, not that the answer is none. Look at how the text is written "
            "(print a few lines) and search again, or judge the items with llm_filter. If you are sure, "
            "call FINAL again with the same answer."
        )


def _looks_empty(answer: Any) -> bool:
    if answer is None:
        return True
    if isinstance(answer, list | tuple | dict | set):
        return len(answer) == 0
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        return answer == 0
    return str(answer).strip().strip("\"'.").lower() in _EMPTY_ANSWERS


class ReplHelpers:
    """The helper functions of one run, bound to its context and its sub-call.

    Args:
        context: the host's copy of the run's context (what `grep` searches by default).
        sub_call: the engine's sub-call for one prompt (budgets, cache and recording included).
        max_prompt_chars: the largest sub-prompt the sub-model takes.
        notes: where empty searches are noted (the run's; a fresh one if None).
    """

    def __init__(
        self, context: Any, sub_call: SubCall, *, max_prompt_chars: int, notes: HelperNotes | None = None
    ) -> None:
        self.context = context
        self.sub_call = sub_call
        self.max_prompt_chars = max_prompt_chars
        self.notes = HelperNotes() if notes is None else notes
        self._items: list[str] | None = None

    def functions(self) -> dict[str, Callable[..., Any]]:
        """The REPL functions by name."""
        return {
            "grep": self.grep,
            "follow": self.follow,
            "same": self.same,
            "llm_map": self.llm_map,
            "llm_filter": self.llm_filter,
        }

    def _context_items(self) -> list[str]:
        if self._items is None:
            self._items = split_items(self.context)
        return self._items

    async def grep(self, *words: Any, text: Any = None) -> list[str]:
        """The lines (items) containing every word; see `HELPER_DOCS`."""
        if text is None and words and _looks_like_text(words[-1]):  # grep("word", context): the text, not a word
            words, text = words[:-1], words[-1]
        flat = _flatten_words(words)
        items = self._context_items() if text is None else split_items(text)
        found = await asyncio.to_thread(find_lines, items, flat) if len(items) > 2_000 else find_lines(items, flat)
        if not found:
            self.notes.record_empty(flat)
        return found

    async def follow(self, start: Any, pattern: Any = None, text: Any = None) -> list[str]:
        """The names reached from `start` through `pattern` (read off the text when None); see `HELPER_DOCS`."""
        first = str(start).strip()
        if not first:
            raise ValueError(
                "follow(start, pattern): start must be a non-empty name or value, e.g. follow('Orva', ...)"
            )
        items = self._context_items() if text is None else split_items(text)
        if pattern is None:
            inferred = await asyncio.to_thread(infer_reference, items, first)
            if inferred is None:
                raise ValueError(
                    f"follow({first!r}): no line mentions {first!r} beside another word, so there is no reference to "
                    f"follow. Print grep({first!r}) to see how the text writes it, then pass the pattern: "
                    r"follow('Orva', r'Town (\w+) draws its water from {}')"
                )
            pattern = inferred.pattern
            self.notes.add(
                f"Note: follow({first!r}) read the references from the line {inferred.line!r}, taking "
                f"{inferred.name!r} as the next name: pattern r'{pattern}'. If that is not how the references are "
                "written, pass a pattern."
            )
        chain = ReferencePattern(pattern)
        found = await asyncio.to_thread(follow_references, items, first, chain)
        if not found:
            self.notes.add(
                f"Note: follow({first!r}, {pattern!r}) found nothing: no line matched the pattern with {first!r} "
                f"in place of {{}}. Print grep({first!r}) to see how those lines are written, and copy one of them "
                "into the pattern."
            )
        elif len(found) >= MAX_NAMES:
            self.notes.add(
                f"Note: follow({first!r}, {pattern!r}) stopped at {MAX_NAMES:,} names, so there may be more: the "
                "pattern probably matches more than references. Print a few of the names to check it."
            )
        return found

    async def same(self, word: Any, text: Any = None, names: bool = False) -> list[list[str]]:
        """The lines (or their names) grouped by the value after `word`, shared values only; see `HELPER_DOCS`."""
        if not isinstance(word, str):
            raise TypeError(f"same(word): word must be a str, the attribute's name, got {type(word).__name__}")
        items = self._context_items() if text is None else split_items(text)
        groups = await asyncio.to_thread(partial(same_value_groups, names=bool(names)), items, word)
        if not groups:
            self.notes.add(
                f"Note: same({word!r}) found no value that two lines write after {word!r}. Print grep({word!r})[:3] "
                "to see how the lines are written, and pass the word written right before the value."
            )
        elif len(groups) >= SAME_GROUPS_CAP:
            self.notes.add(
                f"Note: same({word!r}) stopped at {SAME_GROUPS_CAP:,} groups; the word may stand before values "
                "that repeat for other reasons. Print a few groups to check."
            )
        return groups

    async def llm_map(self, items: Any, instruction: Any) -> list[str | dict[str, str]]:
        """One helper-model answer per item (failures as CallErrors); see `HELPER_DOCS`."""
        texts, question = _check_map_args("llm_map", items, instruction)
        return await self._ask_each("llm_map", texts, question)

    async def llm_filter(self, items: Any, question: Any) -> list[str]:
        """The items the helper model says yes to; see `HELPER_DOCS`.

        Up to `PACK_ABOVE` items, one sub-call per item. Beyond, items share sub-calls
        (numbered, the reply names the numbers that match) so that a long list takes at most
        about `MAX_PACKED_CALLS` calls of the run's budget. An item whose call failed is left
        out and said in the next feedback.
        """
        texts, asked = _check_map_args("llm_filter", items, question)
        if len([text for text in texts if text.strip()]) <= PACK_ABOVE:
            prompt = f"{asked.rstrip()} Answer yes or no."
            replies = await self._ask_each("llm_filter", texts, prompt, max_tokens=FILTER_ANSWER_TOKENS)
            failed = sum(1 for reply in replies if isinstance(reply, dict))
            kept = [text for text, reply in zip(texts, replies, strict=True) if _is_yes(reply)]
        else:
            kept, failed = await self._filter_packed(texts, asked)
        if failed:
            self.notes.add(
                f"Note: llm_filter could not judge {failed} of {len(texts)} items (their sub-calls failed); "
                "they are not in its result."
            )
        return kept

    async def _filter_packed(self, texts: list[str], question: str) -> tuple[list[str], int]:
        chosen = [(index, text) for index, text in enumerate(texts) if text.strip()]
        room = max(500, self.max_prompt_chars - len(question) - 300)
        per_call = max(1, -(-len(chosen) // MAX_PACKED_CALLS))
        groups: list[list[tuple[int, str]]] = []
        for index, text in chosen:
            body = text[:MAX_ITEM_CHARS]
            current = groups[-1] if groups else None
            size = sum(len(t) + 8 for _, t in current) if current else 0
            if current is None or len(current) >= per_call or size + len(body) + 8 > room:
                groups.append([(index, body)])
            else:
                current.append((index, body))

        async def one(group: list[tuple[int, str]]) -> set[int] | None:
            listing = "\n".join(f"{number}. {text}" for number, (_, text) in enumerate(group, 1))
            prompt = (
                f"{question}\nBelow are {len(group)} numbered texts. Reply with the numbers of the texts for "
                f"which the answer is yes, separated by commas, or the word none.\n\n{listing}"
            )
            try:
                reply = await self.sub_call("llm_filter", prompt, 4 * len(group) + 8)
            except Exception:  # the group is reported as not judged
                return None
            numbers = {int(found) for found in re.findall(r"\d+", reply)}
            return {group[n - 1][0] for n in numbers if 1 <= n <= len(group)}

        results = await asyncio.gather(*(one(group) for group in groups))
        matched: set[int] = set()
        failed = 0
        for group, result in zip(groups, results, strict=True):
            if result is None:
                failed += len(group)
            else:
                matched |= result
        return [texts[index] for index in sorted(matched)], failed

    async def _ask_each(
        self, function: str, texts: list[str], instruction: str, *, max_tokens: int | None = None
    ) -> list[str | dict[str, str]]:
        budget = max(200, self.max_prompt_chars - len(instruction) - 40)
        room = min(MAX_ITEM_CHARS, budget)

        async def one(text: str) -> str | dict[str, str]:
            if not text.strip():
                return ""
            body = text if len(text) <= room else text[:room] + " [cut]"
            try:  # the instruction first: consecutive prompts share it, so the model's prefix cache reuses it
                return await self.sub_call(function, f"{instruction}\n\nText: {body}", max_tokens)
            except Exception as error:  # one failed item does not sink the rest
                return {CALL_ERROR_KEY: f"{type(error).__name__}: {error}"}

        return list(await asyncio.gather(*(one(text) for text in texts)))


def _flatten_words(words: Sequence[Any]) -> list[str]:
    flat: list[str] = []
    for word in words:
        if isinstance(word, list | tuple):
            flat.extend(str(part) for part in word)
        elif isinstance(word, str):
            flat.append(word)
        else:
            flat.append(str(word))
    return flat


def _looks_like_text(word: Any) -> bool:
    """Whether a `grep` argument is a text to search rather than a word: it spans lines or is too long for a word."""
    return isinstance(word, str) and ("\n" in word.strip() or len(word) > TEXT_ARG_CHARS)


def _check_map_args(function: str, items: Any, instruction: Any) -> tuple[list[str], str]:
    if isinstance(items, str):
        items = split_items(items)
    if not isinstance(items, list | tuple):
        raise TypeError(f"{function}() takes a list of str as items, got {type(items).__name__}")
    if not isinstance(instruction, str) or not instruction.strip():
        raise TypeError(f"{function}(items, question): the question must be a non-empty str")
    return [item if isinstance(item, str) else str(item) for item in items], instruction.strip()


_YES = re.compile(r"^\W*(yes|true|y)\b", re.IGNORECASE)


def _is_yes(reply: Any) -> bool:
    return isinstance(reply, str) and _YES.match(reply) is not None
