"""Record families (after OOLONG): counting with code, counting that needs reading, and pairs.

The context is one record per line, padded to the exact size with a final line of ``=``.
"""

from __future__ import annotations

import random

from longctx_suite._draft import Draft
from longctx_suite._messages import COMPLAINT, PRAISE, make_message
from longctx_suite._text import CITIES, PRODUCTS, STATUSES, pad_lines, usernames

_RECORD = {
    "train": "order={id} | city={city} | product={product} | qty={qty} | status={status}\n",
    "heldout": "Shipment {id}: destination {city}; item {product}; units {qty}; state {status}.\n",
}
_ASK_COUNT = {
    "train": "How many orders have city {city} and status {status}? Answer with a number.",
    "heldout": "How many shipments went to {city} with state {status}? Reply with the count.",
}
_COUNT_CODE = {
    "train": """import re
rows = re.findall(r"city=(\\w+) \\| product=\\w+ \\| qty=\\d+ \\| status=(\\w+)", context)
n = sum(1 for city, status in rows if city == {city!r} and status == {status!r})
print(len(rows), n)
FINAL(n)
""",
    "heldout": """import re
rows = re.findall(r"destination (\\w+); item \\w+; units \\d+; state (\\w+)\\.", context)
n = sum(1 for city, status in rows if city == {city!r} and status == {status!r})
print(len(rows), n)
FINAL(n)
""",
}

_MESSAGE_LINE = {"train": "[msg {id:05d}] {user}: {text}\n", "heldout": "Review #{id} by {user} - {text}\n"}
_ASK_READ = {
    "train": (
        "How many of these customer messages are complaints, i.e. written by a customer who is unhappy with "
        "the product or the service? Answer with a number."
    ),
    "heldout": "In how many of these reviews is the writer dissatisfied? Reply with the count.",
}
SUB_PROMPT = "Is the customer who wrote this message unhappy? Answer yes or no.\nMessage: "
"""The per-message sub-question of the reference program (the scripted reader keys on it)."""

_READ_CODE = {
    "train": """import re
messages = re.findall(r"^\\[msg \\d+\\] \\S+: (.*)$", context, re.M)
replies = llm_query_batched([{prompt!r} + m for m in messages])
n = sum(1 for r in replies if str(r).strip().lower().startswith("yes"))
print(len(messages), n)
FINAL(n)
""",
    "heldout": """import re
messages = re.findall(r"^Review #\\d+ by \\S+ - (.*)$", context, re.M)
replies = llm_query_batched([{prompt!r} + m for m in messages])
n = sum(1 for r in replies if str(r).strip().lower().startswith("yes"))
print(len(messages), n)
FINAL(n)
""",
}

_MEMBER = {
    "train": "Member {name} joined in {year}; their locker code is {code}.\n",
    "heldout": "{name} (team {team}) uses badge PIN {code}.\n",
}
_TEAMS = ("north", "south", "east", "west")
_ASK_PAIRS = {
    "train": "Which pairs of members share the same locker code? List every pair of names.",
    "heldout": "Find every two people whose badge PIN is the same. List each pair of names.",
}
_PAIR_CODE = """import re
from collections import defaultdict
by_code = defaultdict(list)
for name, code in re.findall(r"([a-z]+\\.[a-z]+\\d{{2,3}})\\b[^\\n]*?(?<!\\d)(\\d{{6}})\\.", context):
    by_code[code].append(name)
pairs = [tuple(names) for names in by_code.values() if len(names) == 2]
print(len(by_code), pairs)
FINAL("; ".join(a + " & " + b for a, b in pairs))
"""


def _fill(lines: list[str], chars: int) -> tuple[list[str], int]:
    """The longest prefix of `lines` that leaves room for the padding line."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) > chars:
            break
        kept.append(line)
        size += len(line)
    return kept, size


def count_records(rng: random.Random, split: str, chars: int) -> Draft:
    """Structured order lines; how many have a given city and status (code answers exactly)."""
    lines: list[str] = []
    fields: list[tuple[str, str]] = []
    size = 0
    while size < chars:
        city, status = rng.choice(CITIES[split]), rng.choice(STATUSES[split])
        line = _RECORD[split].format(
            id=100_000 + len(lines),
            city=city,
            product=rng.choice(PRODUCTS[split]),
            qty=rng.randint(1, 9),
            status=status,
        )
        lines.append(line)
        fields.append((city, status))
        size += len(line)
    kept, _ = _fill(lines, chars)
    if not kept:
        raise ValueError(f"{chars} characters cannot hold one record")
    city, status = fields[rng.randrange(len(kept))]
    gold = sum(1 for f in fields[: len(kept)] if f == (city, status))
    return Draft(
        context=pad_lines(kept, chars),
        question=_ASK_COUNT[split].format(city=city, status=status),
        gold=gold,
        scorer="numeric",
        pattern=None,
        reference_code=_COUNT_CODE[split].format(city=city, status=status),
        meta={"records": len(kept), "city": city, "status": status},
    )


def count_reading(rng: random.Random, split: str, chars: int) -> Draft:
    """Customer messages; how many are complaints (each must be read: no keyword marks them)."""
    rate = rng.uniform(0.2, 0.5)
    users = usernames(rng, split, 200)
    lines: list[str] = []
    labels: list[str] = []
    size = 0
    while size < chars:
        label = COMPLAINT if rng.random() < rate else PRAISE
        text = make_message(rng, split, label, rng.choice(PRODUCTS[split]))
        line = _MESSAGE_LINE[split].format(id=len(lines) + 1, user=rng.choice(users), text=text)
        lines.append(line)
        labels.append(label)
        size += len(line)
    kept, _ = _fill(lines, chars)
    if not kept:
        raise ValueError(f"{chars} characters cannot hold one message")
    labels = labels[: len(kept)]
    by_text = {
        line.split(": ", 1)[1].rstrip("\n") if split == "train" else line.split(" - ", 1)[1].rstrip("\n"): label
        for line, label in zip(kept, labels, strict=True)
    }
    gold = labels.count(COMPLAINT)
    return Draft(
        context=pad_lines(kept, chars),
        question=_ASK_READ[split],
        gold=gold,
        scorer="numeric",
        pattern=None,
        reference_code=_READ_CODE[split].format(prompt=SUB_PROMPT),
        meta={"messages": len(kept), "complaints": gold, "rate": rate, "labels": by_text},
    )


def pairs(rng: random.Random, split: str, chars: int) -> Draft:
    """Members with codes; a few pairs share a code. Which pairs? (OOLONG-Pairs style.)"""
    estimate = chars // 40 + 10
    names = usernames(rng, split, estimate)
    codes = [str(c) for c in rng.sample(range(100_000, 1_000_000), estimate)]
    extras = [str(rng.randint(2001, 2024)) if split == "train" else rng.choice(_TEAMS) for _ in names]

    def line(i: int) -> str:
        return _MEMBER[split].format(name=names[i], year=extras[i], team=extras[i], code=codes[i])

    kept, _ = _fill([line(i) for i in range(estimate)], chars)
    n = len(kept)
    if n < 8:
        raise ValueError(f"{chars} characters hold only {n} members; the pairs family needs at least 8")
    n_pairs = rng.randint(2, 4)
    chosen = rng.sample(range(n), 2 * n_pairs)
    gold: list[list[str]] = []
    for first, second in zip(chosen[::2], chosen[1::2], strict=True):
        codes[second] = codes[first]  # six digits either way, so the line keeps its length
        gold.append(sorted([names[first], names[second]]))
    kept = [line(i) for i in range(n)]
    return Draft(
        context=pad_lines(kept, chars),
        question=_ASK_PAIRS[split],
        gold=sorted(gold),
        scorer="pairs",
        pattern=None,
        reference_code=_PAIR_CODE.format(),
        meta={"members": n, "pairs": len(gold)},
    )
