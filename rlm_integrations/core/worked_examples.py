"""Worked exchanges shown to small models before the real question, one per question shape.

A small model copies the exchange it was shown more than it follows a description, so
the exchange should be the right *kind* of program for the question at hand: look one
thing up, list every match, count matching records with code, count by reading each
item with sub-calls, or group records by a value they share.
`rlm_integrations.core.question_shape` picks the shape; models that do not ask for a
worked example (`prefers_worked_example` false) never see these.

Every question, text and number below is invented, so nothing in an example can be
copied as an answer to a real question.
"""

from __future__ import annotations

from rlm_integrations.core import prompts
from rlm_integrations.core.events import ContextInfo
from rlm_integrations.core.question_shape import Shape

__all__ = ["example_for"]

_Turn = tuple[str, str]
"""(code the model writes, what the REPL printed)."""


def _dialogue(question: str, info: ContextInfo, probe: str, turns: list[_Turn], final: str) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompts.first_message(question, info, 10, probe=probe)}]
    left = 9
    for code, output in turns:
        messages.append({"role": "assistant", "content": f"```repl\n{code}\n```"})
        feedback = f"Output ({len(output):,} characters):\n{output}"
        messages.append({"role": "user", "content": prompts.next_turn_message(feedback, left)})
        left -= 1
    messages.append({"role": "assistant", "content": final})
    return messages


def _lookup() -> list[dict[str, str]]:
    return _dialogue(
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


def _list() -> list[dict[str, str]]:
    return _dialogue(
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


def _count() -> list[dict[str, str]]:
    return _dialogue(
        "How many invoices from Tromso are unpaid?",
        ContextInfo(type="str", chars=402_113, preview="Invoice 7001: client Bergen; amount 120; status paid."),
        "`context` has 5,120 non-empty lines. Lines containing the question's words: 'invoices' in 5,120, "
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


def _count_reading() -> list[dict[str, str]]:
    return _dialogue(
        "How many of the letters are thank-you notes?",
        ContextInfo(type="str", chars=96_540, preview="Letter 1 from ana.silva: Dear team, the parcel came"),
        "`context` has 830 non-empty lines. Not in the text: 'letters', 'thank-you', 'notes'.",
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


def _group() -> list[dict[str, str]]:
    code = (
        "groups = collections.defaultdict(list)\n"
        "for line in context.splitlines():\n"
        '    m = re.search(r"room (\\d+)", line)\n'
        "    if m:\n"
        "        groups[m.group(1)].append(line)\n"
        "same = [g for g in groups.values() if len(g) > 1]\n"
        "print(len(same))\n"
        "for g in same:\n"
        "    print(g)"
    )
    output = (
        "2\n['ana.silva12 (floor 2) checked in to room 214.', 'tom.berg7 (floor 2) checked in to room 214.']\n"
        "['li.wong30 (floor 5) checked in to room 508.', 'eva.roth4 (floor 5) checked in to room 508.']"
    )
    return _dialogue(
        "Which guests stayed in the same room? List each pair.",
        ContextInfo(type="str", chars=152_880, preview="ana.silva12 (floor 2) checked in to room 214."),
        "`context` has 2,410 non-empty lines. Lines containing the question's words: 'room' in 2,410. "
        "Not in the text: 'guests', 'stayed', 'pair'.",
        [(code, output)],
        'FINAL([["ana.silva12", "tom.berg7"], ["li.wong30", "eva.roth4"]])',
    )


_BY_SHAPE = {"lookup": _lookup, "list": _list, "count": _count, "count_reading": _count_reading, "group": _group}


def example_for(shape: Shape) -> list[dict[str, str]]:
    """The worked exchange for a question shape (user / assistant messages)."""
    return _BY_SHAPE[shape]()
