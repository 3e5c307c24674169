"""Worked exchanges shown to small models before the real question, one per question shape.

A small model copies the exchange it was shown more than it follows a description, so
the exchange should be the right *kind* of program for the question at hand: look one
thing up, list every match, count matching records with code, count by reading each
item with sub-calls, group records by a value they share, or follow references from one
thing to the next until nothing new turns up.
`rlm_integrations.core.question_shape` picks the shape; models that do not ask for a
worked example (`prefers_worked_example` false) never see these.

Every question, text and number below is invented, so nothing in an example can be
copied as an answer to a real question.

Each example is data (`WorkedExample`: the question, the context's description, the probe
paragraph, the code turns with their outputs, the final reply; `worked_example(shape)`).
The core loop shows it as chat messages (`example_for(shape)`); the DSPy face builds its
`generate_code` demos from the same parts (`rlm_integrations.dspy.orientation`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from rlm_integrations.core import prompts
from rlm_integrations.core.events import ContextInfo
from rlm_integrations.core.question_shape import Shape

__all__ = ["Turn", "WorkedExample", "example_for", "normal_answer", "worked_example"]


class Turn(NamedTuple):
    """One turn of a worked exchange: the code the model writes and what the REPL printed."""

    code: str
    output: str

    @property
    def feedback(self) -> str:
        """What the loop tells the model about the turn's output (before the nudge to go on)."""
        return f"Output ({len(self.output):,} characters):\n{self.output}"


@dataclass(frozen=True)
class WorkedExample:
    """A worked exchange as parts, so each face renders it in its own form.

    The core loop shows it as chat messages (`messages`, what `example_for` returns); the
    DSPy face turns the same parts into `generate_code` demos.
    """

    shape: Shape
    """The question shape this example teaches."""
    question: str
    """The invented question."""
    context: ContextInfo
    """The invented context, as the first message describes it."""
    probe: str
    """The probe paragraph: where the question's words occur in the invented text."""
    turns: tuple[Turn, ...]
    """The code turns before the answer, each with its output."""
    final: str
    """The reply that submits the answer (``FINAL(...)`` or ``FINAL_VAR(...)``)."""
    max_iterations: int = 10
    """The turn budget the first message announces."""

    @property
    def answer(self) -> str | None:
        """The answer the example submits, normalised by `normal_answer` (None for ``FINAL_VAR``)."""
        if not self.final.startswith("FINAL("):
            return None
        return normal_answer(self.final.removeprefix("FINAL(").removesuffix(")"))

    def messages(self) -> list[dict[str, str]]:
        """The exchange as user / assistant chat messages, rendered with `rlm_integrations.core.prompts`."""
        first = prompts.first_message(self.question, self.context, self.max_iterations, probe=self.probe)
        messages = [{"role": "user", "content": first}]
        left = self.max_iterations - 1
        for turn in self.turns:
            messages.append({"role": "assistant", "content": f"```repl\n{turn.code}\n```"})
            messages.append({"role": "user", "content": prompts.next_turn_message(turn.feedback, left)})
            left -= 1
        messages.append({"role": "assistant", "content": self.final})
        return messages


def normal_answer(answer: object) -> str:
    """An answer as comparable text: case, quotes and spaces left out (``["BEX", "KELL"]`` -> ``[bex,kell]``)."""
    return re.sub(r"[\s'\"]", "", str(answer)).casefold()


def _example(
    shape: Shape, question: str, info: ContextInfo, probe: str, turns: list[tuple[str, str]], final: str
) -> WorkedExample:
    return WorkedExample(shape, question, info, probe, tuple(Turn(code, output) for code, output in turns), final)


def _lookup() -> WorkedExample:
    return _example(
        "lookup",
        "What is the capital of Zubrowka?",
        ContextInfo(type="str", chars=1_204_332, preview="Chapter one. The train left the station at dawn"),
        "`context` has 18,220 non-empty lines. Lines containing the question's words: 'capital' in 14, "
        "'zubrowka' in 3.",
        [
            (
                'hits = grep("Zubrowka", "capital")\nprint(len(hits))\nfor h in hits[:10]:\n    print(h)',
                "1\n...over the mountains. The capital of Zubrowka is Lutz, a town on the river where trains stop...",
            )
        ],
        'FINAL("Lutz")',
    )


def _list() -> WorkedExample:
    return _example(
        "list",
        "List every departure time of the ferry from Port Vell.",
        ContextInfo(type="str", chars=860_410, preview="Harbour log, spring season. Wind from the west"),
        "`context` has 9,012 non-empty lines. Lines containing the question's words: 'departure' in 41, "
        "'time' in 388, 'ferry' in 95, 'port' in 310, 'vell' in 3.",
        [
            (
                'hits = grep("ferry", "Vell")\nprint(len(hits))\nfor h in hits:\n    print(h)',
                "3\n...gulls over the quay. The ferry from Port Vell leaves at 07:15 on weekdays. Nets dried...\n"
                "...A later ferry from Port Vell leaves at 11:40 in summer. The wind turned...\n"
                "...The last ferry from Port Vell leaves at 16:05. Lamps were lit...",
            )
        ],
        'FINAL(["07:15", "11:40", "16:05"])',
    )


def _count() -> WorkedExample:
    return _example(
        "count",
        "How many invoices from Tromso are unpaid?",
        ContextInfo(type="str", chars=402_113, preview="Invoice 7001: client Bergen; amount 120; status paid."),
        "`context` has 5,120 non-empty lines. Lines containing the question's words: 'invoice' in 5,120, "
        "'tromso' in 402, 'unpaid' in 1,310.",
        [
            (
                'hits = grep("Tromso", "unpaid")\nprint(len(hits))\nprint(hits[:3])',
                "57\n['Invoice 7013: client Tromso; amount 75; status unpaid.', 'Invoice 7102: client Tromso; "
                "amount 310; status unpaid.', 'Invoice 7160: client Tromso; amount 42; status unpaid.']",
            )
        ],
        "FINAL(57)",
    )


def _count_reading() -> WorkedExample:
    return _example(
        "count_reading",
        "How many of the letters are thank-you notes?",
        ContextInfo(type="str", chars=96_540, preview="Letter 1 from ana.silva: Dear team, the parcel came"),
        "`context` has 830 non-empty lines. Lines containing the question's words: 'letter' in 830. "
        "Not in the text: 'thank-you', 'notes'.",
        [
            (
                "items = context.splitlines()\nprint(len(items))\nprint(items[:2])\nyes = llm_filter(items, "
                '"Does the writer thank someone?")\nprint(len(yes))',
                "830\n['Letter 1 from ana.silva: Dear team, the parcel came today, so kind of you to hurry.', "
                "'Letter 2 from tom.berg: The handle broke again.']\n214",
            )
        ],
        "FINAL(214)",
    )


def _group() -> WorkedExample:
    code = 'groups = same("room", names=True)\nprint(len(groups))\nprint(groups)'
    output = "2\n[['ana.silva12', 'tom.berg7'], ['li.wong30', 'eva.roth4']]"
    return _example(
        "group",
        "Which guests have the same room number? List each pair.",
        ContextInfo(type="str", chars=152_880, preview="On 4 May ana.silva12 came; the room number given was 214."),
        "`context` has 2,410 non-empty lines. Lines containing the question's words: 'room' in 2,410. "
        "Not in the text: 'guests', 'pair'.\n"
        "First mention of 'room': On 4 May ana.silva12 came; the room number given was 214.",
        [(code, output)],
        'FINAL_VAR("groups")',
    )


def _chain() -> WorkedExample:
    return _example(
        "chain",
        "Which towns get their water from Lake Orva, directly or through other towns? List their names.",
        ContextInfo(type="str", chars=388_120, preview="The road bent north. Carts and mules passed the old gate"),
        "`context` has 3,920 non-empty lines. Lines containing the question's words: 'town' in 38, "
        "'water' in 11, 'lake' in 4, 'orva' in 1. Not in the text: 'directly'.",
        [('found = follow("Orva")\nprint(found)', "['BEX', 'KELL', 'ARNO']")],
        'FINAL(["BEX", "KELL", "ARNO"])',
    )


_BY_SHAPE: dict[Shape, WorkedExample] = {
    "lookup": _lookup(),
    "list": _list(),
    "count": _count(),
    "count_reading": _count_reading(),
    "group": _group(),
    "chain": _chain(),
}


def worked_example(shape: Shape) -> WorkedExample:
    """The worked example for a question shape, as parts (frozen: shared, never changed)."""
    return _BY_SHAPE[shape]


def example_for(shape: Shape) -> list[dict[str, str]]:
    """The worked exchange for a question shape (user / assistant messages)."""
    return _BY_SHAPE[shape].messages()
