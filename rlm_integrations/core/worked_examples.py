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
        'for line in grep("room", "number"):\n'
        '    m = re.search(r"room number\\D*(\\d+)", line)\n'
        "    if m:\n"
        "        groups[m.group(1)].append(line.split()[1])\n"
        "same = [names for names in groups.values() if len(names) > 1]\n"
        "print(same)"
    )
    return _dialogue(
        "Which guests have the same room number? List each pair.",
        ContextInfo(type="str", chars=152_880, preview="Guest ana.silva12 came on 4 May; the room number given"),
        "`context` has 2,410 non-empty lines. Lines containing the question's words: 'guests' in 2,410, "
        "'room' in 2,410, 'number' in 2,410. Not in the text: 'pair'.\n"
        "First mention of 'guests': Guest ana.silva12 came on 4 May; the room number given was 214.",
        [(code, "[['ana.silva12', 'tom.berg7'], ['li.wong30', 'eva.roth4']]")],
        "FINAL_VAR(same)",
    )


def _chain() -> list[dict[str, str]]:
    code = (
        'found = []\ntodo = ["Orva"]\n'
        "while todo:\n"
        "    name = todo.pop()\n"
        "    for line in grep(name):\n"
        '        for m in re.finditer(r"Town (\\w+) draws its water from (?:Lake |town )?" + name, line):\n'
        "            if m.group(1) not in found:\n"
        "                found.append(m.group(1))\n"
        "                todo.append(m.group(1))\n"
        "print(found)"
    )
    return _dialogue(
        "Which towns get their water from Lake Orva, directly or through other towns? List their names.",
        ContextInfo(type="str", chars=388_120, preview="The road bent north. Carts and mules passed the old gate"),
        "`context` has 3,920 non-empty lines. Lines containing the question's words: 'water' in 11, "
        "'lake' in 4, 'orva' in 1. Not in the text: 'towns', 'directly'.\n"
        "First mention of 'orva': Town BEX draws its water from Lake Orva.",
        [(code, "['BEX', 'KELL', 'ARNO']")],
        'FINAL(["BEX", "KELL", "ARNO"])',
    )


_BY_SHAPE = {
    "lookup": _lookup,
    "list": _list,
    "count": _count,
    "count_reading": _count_reading,
    "group": _group,
    "chain": _chain,
}


def example_for(shape: Shape) -> list[dict[str, str]]:
    """The worked exchange for a question shape (user / assistant messages)."""
    return _BY_SHAPE[shape]()
