"""Needle families (after RULER): single needle, multi-key with look-alikes, multi-value, variable tracking.

Each split words its needles and questions differently, so a prompt tuned on the train
split cannot lean on the held-out wording.
"""

from __future__ import annotations

import random

from longctx_suite._draft import Draft
from longctx_suite._text import ADJECTIVES, NOUNS, VAR_LETTERS, compound_keys, prose_with_inserts

SEVEN_DIGITS = r"(?<!\d)\d{7}(?!\d)"

_NEEDLE = {
    "train": "The special magic number for {key} is {value}.",
    "heldout": "Note for the archive: the access code assigned to {key} is {value}.",
}
_ASK_ONE = {
    "train": "What is the special magic number for {key}? Answer with the number only.",
    "heldout": "Which access code is assigned to {key}? Give just the code.",
}
_MULTI = {
    "train": "One of the special magic numbers for {key} is {value}.",
    "heldout": "One more access code assigned to {key} is {value}.",
}
_ASK_ALL = {
    "train": "What are all the special magic numbers for {key}? List every one of them.",
    "heldout": "List every access code assigned to {key}.",
}
_VAR_ROOT = {"train": "VAR {name} = {value}.", "heldout": "Let {name} equal {value}."}
_VAR_HOP = {"train": "VAR {name} = VAR {source}.", "heldout": "Let {name} equal {source}."}
_ASK_VARS = {
    "train": (
        "Find every variable that is assigned the value {value}, directly or through other variables. List their names."
    ),
    "heldout": "Which names end up equal to {value}, directly or through a chain of other names? List them all.",
}

_FIND_ONE = """import re
key = {key!r}
hits = re.findall(r"(?<![\\w-])" + re.escape(key) + r"(?![\\w-])\\D*?(\\d{{7}})", context)
print(hits)
FINAL(hits[0] if hits else "not found")
"""

_FIND_ALL = """import re
key = {key!r}
hits = re.findall(r"(?<![\\w-])" + re.escape(key) + r"(?![\\w-])\\D*?(\\d{{7}})", context)
print(hits)
FINAL(", ".join(hits))
"""

_TRACK = """import re
pairs = re.findall(r"(?:VAR |Let )([A-Z]{{5}}) (?:=|equal) (?:VAR )?([A-Z]{{5}}|\\d+)\\.", context)
value = {value!r}
names = set()
changed = True
while changed:
    changed = False
    for name, source in pairs:
        if name not in names and (source == value or source in names):
            names.add(name)
            changed = True
print(len(pairs), sorted(names))
FINAL(", ".join(sorted(names)))
"""


def _value(rng: random.Random, used: set[str]) -> str:
    while True:
        value = str(rng.randrange(1_000_000, 10_000_000))
        if value not in used:
            used.add(value)
            return value


def _depth(rng: random.Random) -> float:
    return rng.uniform(0.03, 0.97)


def single_needle(rng: random.Random, split: str, chars: int) -> Draft:
    """One key-value needle in filler prose; the question asks for the value."""
    key = compound_keys(rng, split)[0]
    value = _value(rng, set())
    needle = _NEEDLE[split].format(key=key, value=value)
    context = prose_with_inserts(rng, split, chars, [(_depth(rng), needle)])
    return Draft(
        context=context,
        question=_ASK_ONE[split].format(key=key),
        gold=value,
        scorer="exact",
        pattern=SEVEN_DIGITS,
        reference_code=_FIND_ONE.format(key=key),
        meta={"key": key, "needles": {needle: 1}},
    )


def _look_alikes(rng: random.Random, split: str, target: str, extra: int) -> list[str]:
    """Keys that share the target's adjective or noun, then unrelated keys."""
    adjective, noun = target.split("-")
    same_adjective = [f"{adjective}-{n}" for n in NOUNS[split] if n != noun]
    same_noun = [f"{a}-{noun}" for a in ADJECTIVES[split] if a != adjective]
    rng.shuffle(same_adjective)
    rng.shuffle(same_noun)
    chosen = same_adjective[:2] + same_noun[:2]
    others = [k for k in compound_keys(rng, split) if k != target and k not in chosen]
    return chosen + others[:extra]


def multikey_needle(rng: random.Random, split: str, chars: int) -> Draft:
    """The target needle among look-alike needles (keys sharing a word with it) and unrelated ones."""
    target = compound_keys(rng, split)[0]
    distractor_keys = _look_alikes(rng, split, target, extra=2 + min(6, chars // 200_000))
    used: set[str] = set()
    value = _value(rng, used)
    needles = {_NEEDLE[split].format(key=target, value=value): 1}
    distractors = {}
    for key in distractor_keys:
        distractors[key] = _value(rng, used)
        needles[_NEEDLE[split].format(key=key, value=distractors[key])] = 1
    inserts = [(_depth(rng), text) for text in needles]
    return Draft(
        context=prose_with_inserts(rng, split, chars, inserts),
        question=_ASK_ONE[split].format(key=target),
        gold=value,
        scorer="exact",
        pattern=SEVEN_DIGITS,
        reference_code=_FIND_ONE.format(key=target),
        meta={"key": target, "distractors": distractors, "needles": needles},
    )


def multi_value(rng: random.Random, split: str, chars: int) -> Draft:
    """The target key has 3-4 values spread through the text, beside look-alike keys with values of their own."""
    target = compound_keys(rng, split)[0]
    used: set[str] = set()
    values = [_value(rng, used) for _ in range(rng.randint(3, 4))]
    depths = sorted(_depth(rng) for _ in values)
    inserts = [(d, _MULTI[split].format(key=target, value=v)) for d, v in zip(depths, values, strict=True)]
    distractors: dict[str, list[str]] = {}
    for key in _look_alikes(rng, split, target, extra=1):
        distractors[key] = [_value(rng, used) for _ in range(rng.randint(1, 2))]
        inserts += [(_depth(rng), _MULTI[split].format(key=key, value=v)) for v in distractors[key]]
    return Draft(
        context=prose_with_inserts(rng, split, chars, inserts),
        question=_ASK_ALL[split].format(key=target),
        gold=values,
        scorer="list",
        pattern=SEVEN_DIGITS,
        reference_code=_FIND_ALL.format(key=target),
        meta={"key": target, "distractors": distractors, "needles": {text: 1 for _, text in inserts}},
    )


def _var_names(rng: random.Random, split: str, count: int) -> list[str]:
    letters = VAR_LETTERS[split]
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(letters) for _ in range(5))
        if name not in names:
            names.append(name)
    return names


def variable_tracking(rng: random.Random, split: str, chars: int) -> Draft:
    """Chains of assignments (RULER's variable tracking): which names hold the asked value?"""
    hops = 4
    chains = 3  # the asked one and two distractor chains
    names = _var_names(rng, split, chains * (hops + 1))
    used: set[str] = set()
    values = [str(rng.randrange(10_000, 100_000)) for _ in range(chains)]
    while len(set(values)) < chains:
        values = [str(rng.randrange(10_000, 100_000)) for _ in range(chains)]
    inserts: list[tuple[float, str]] = []
    gold: list[str] = []
    for c in range(chains):
        chain = names[c * (hops + 1) : (c + 1) * (hops + 1)]
        depths = sorted(_depth(rng) for _ in chain)
        for i, (depth, name) in enumerate(zip(depths, chain, strict=True)):
            if i == 0:
                text = _VAR_ROOT[split].format(name=name, value=values[c])
            else:
                text = _VAR_HOP[split].format(name=name, source=chain[i - 1])
            inserts.append((depth, text))
        if c == 0:
            gold = list(chain)
    del used
    letters = VAR_LETTERS[split]
    return Draft(
        context=prose_with_inserts(rng, split, chars, inserts),
        question=_ASK_VARS[split].format(value=values[0]),
        gold=gold,
        scorer="list",
        pattern=rf"(?<![A-Za-z])[{letters[0]}-{letters[-1]}]{{5}}(?![A-Za-z])",
        reference_code=_TRACK.format(value=values[0]),
        meta={"value": values[0], "names": names, "needles": {text: 1 for _, text in inserts}},
    )
