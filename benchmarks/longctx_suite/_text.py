"""Seeded vocabulary and filler prose for the long-context suite.

Every word pool comes in two disjoint halves, one per split (``train`` and ``heldout``),
so a prompt tuned on the train split has never seen a held-out key, city, name or filler
word. Filler words never occur in any key, value or record pool, so a needle is present
exactly as many times as the generator put it there.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SPLITS = ("train", "heldout")

FILLER = {
    "train": (
        "river stone market lantern orchard harbor meadow signal copper violet winter garden engine "
        "ledger candle bridge thunder saddle mirror quarry willow beacon the a of and under over "
        "quietly slowly bright old new small heavy across beside morning evening travelers merchants "
        "carried watched built painted followed remembered village tower road field letter window "
        "song story crowd shadow glass iron wheel basket"
    ).split(),
    "heldout": (
        "valley forest chapel anvil pitcher tapestry ferry harvest pasture cellar granite ribbon "
        "compass lighthouse furnace barrel spindle parchment cart chimney into beyond near with "
        "softly gently narrow broad ancient fresh cold warm sailors weavers farmers gathered "
        "noticed mended sold described cloud rain hill gate rope bell path journey dusk "
        "tide torch cloak feather trail"
    ).split(),
}

ADJECTIVES = {
    "train": "crimson silver amber quiet rapid golden hollow frozen lucky bitter gentle hidden".split(),
    "heldout": "scarlet dusky ivory silent swift misty brave hungry noble sleepy velvet distant".split(),
}
NOUNS = {
    "train": "falcon pepper glacier tulip walrus saffron pelican juniper otter mango oyster raven".split(),
    "heldout": "badger cinnamon fjord orchid lynx nutmeg heron cedar beaver papaya clam magpie".split(),
}

FIRST_NAMES = {
    "train": "maria omar lena tomas aiko ravi nadia pablo greta ivan chen sara yusuf elena kofi".split(),
    "heldout": "ines malik freya diego hana arjun leila marco ingrid sergei mei lucia tariq olga kwame".split(),
}
LAST_NAMES = {
    "train": "okafor lindqvist moreau tanaka silva novak haddad brennan kowalski ortiz".split(),
    "heldout": "adeyemi berglund fontaine watanabe pereira dvorak nasser quinlan zielinski ramos".split(),
}
CITIES = {
    "train": "lisbon oslo nairobi lima hanoi quebec perth tbilisi".split(),
    "heldout": "porto bergen accra cusco hue montreal darwin yerevan".split(),
}
PRODUCTS = {
    "train": "kettle lamp backpack drill monitor blender tent scooter".split(),
    "heldout": "toaster heater suitcase router speaker juicer hammock stroller".split(),
}
STATUSES = {
    "train": "shipped pending returned cancelled".split(),
    "heldout": "delivered delayed lost held".split(),
}
VAR_LETTERS = {"train": "ABCDEFGHIJKLM", "heldout": "NOPQRSTUVWXYZ"}


def compound_keys(rng: random.Random, split: str) -> list[str]:
    """Every ``adjective-noun`` key of a split, shuffled."""
    keys = [f"{a}-{n}" for a in ADJECTIVES[split] for n in NOUNS[split]]
    rng.shuffle(keys)
    return keys


def usernames(rng: random.Random, split: str, count: int) -> list[str]:
    """`count` distinct user names like ``maria.okafor17`` (seeded)."""
    seen: set[str] = set()
    names: list[str] = []
    capacity = len(FIRST_NAMES[split]) * len(LAST_NAMES[split]) * 990
    if count > capacity:
        raise ValueError(f"at most {capacity} distinct names in split {split!r}, asked for {count}")
    while len(names) < count:
        name = f"{rng.choice(FIRST_NAMES[split])}.{rng.choice(LAST_NAMES[split])}{rng.randrange(10, 1000)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def filler_sentences(rng: random.Random, split: str, n_chars: int) -> list[str]:
    """Sentences of prose from the split's filler words, at least `n_chars` characters in all."""
    words = FILLER[split]
    sentences: list[str] = []
    size = 0
    while size < n_chars:
        body = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
        sentence = body.capitalize() + ". "
        if rng.random() < 0.12:
            sentence += "\n"
        sentences.append(sentence)
        size += len(sentence)
    return sentences


def prose_with_inserts(rng: random.Random, split: str, n_chars: int, inserts: Sequence[tuple[float, str]]) -> str:
    """Filler prose of exactly `n_chars` characters with each insert placed at its depth (0..1).

    Inserts go between sentences, whole, so a needle is never cut; the filler's tail is
    trimmed to make the length exact.

    Raises:
        ValueError: the inserts alone do not fit in `n_chars`.
    """
    pieces = [text if text.endswith((" ", "\n")) else text + " " for _, text in inserts]
    needed = sum(len(p) for p in pieces)
    if needed > n_chars:
        raise ValueError(f"{needed} characters of needles do not fit in {n_chars}")
    sentences = filler_sentences(rng, split, n_chars - needed)
    filler_len = n_chars - needed
    # Trim the filler to the exact length first; inserts then land between whole sentences.
    total = 0
    kept: list[str] = []
    for sentence in sentences:
        if total + len(sentence) >= filler_len:
            kept.append(sentence[: filler_len - total])
            total = filler_len
            break
        kept.append(sentence)
        total += len(sentence)
    positions = sorted(
        (
            (min(len(kept) - 1, int(depth * len(kept))), order, piece)
            for order, ((depth, _), piece) in enumerate(zip(inserts, pieces, strict=True))
        ),
    )
    out: list[str] = []
    cursor = 0
    for index, _, piece in positions:
        out.extend(kept[cursor:index])
        cursor = max(cursor, index)
        out.append(piece)
    out.extend(kept[cursor:])
    return "".join(out)


def pad_lines(lines: list[str], n_chars: int, filler: str = "=") -> str:
    """Join whole lines (each ending in a newline) and pad to exactly `n_chars` with one filler line.

    Lines that would overflow are dropped by the caller; this adds the padding line.
    """
    body = "".join(lines)
    gap = n_chars - len(body)
    if gap < 0:
        raise ValueError(f"{len(body)} characters of lines exceed {n_chars}")
    if gap == 0:
        return body
    return body + (filler * (gap - 1) + "\n" if gap > 1 else "\n")
