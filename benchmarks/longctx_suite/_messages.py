"""Short customer messages whose label a reader sees but no keyword gives away.

Templates come in pairs that share most of their words: the complaint and the praise
differ in how the words are arranged (an expectation met or broken, sarcasm, a delay
against an early arrival), not in sentiment words. No message contains a label word
("complaint", "praise", "negative", ...) or a stock sentiment word ("bad", "great",
"terrible", "love", ...); the tests check both, and that no single word separates the
two classes. Each split has its own template pairs, openers and products.
"""

from __future__ import annotations

import random

COMPLAINT = "complaint"
PRAISE = "praise"

_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        COMPLAINT: (
            "I expected the {x} to last for years, but it stopped working after {n} days.",
            "I ordered the {x} {n} days ago and I am still waiting for it to arrive.",
            "The support team promised a refund for the {x} {n} days ago; nothing has happened since.",
            "Out of the box the {x} looked fine, but after {n} days it makes a grinding noise every time I use it.",
            "The {x} works, I suppose, if you enjoy reading the manual for {n} days before it does anything useful.",
            "I would not recommend the {x} to anyone; I regret paying for it after {n} days.",
        ),
        PRAISE: (
            "I expected the {x} to stop working after {n} days, like my last one, but it has lasted for years.",
            "I ordered the {x} and it arrived {n} days early; I am still surprised.",
            "The support team promised a refund for my old {x} and it arrived within {n} days; nothing more to ask.",
            "Out of the box the {x} looked plain, but after {n} days I would not trade it for anything I use.",
            "I read the manual for the {x} for {n} minutes, and since then it does everything useful I need.",
            "I would recommend the {x} to anyone; I do not regret paying for it, even after {n} days.",
        ),
    },
    "heldout": {
        COMPLAINT: (
            "My {x} gave up on day {n}; I had hoped it would survive at least a season.",
            "Day {n} of waiting for the {x}, and the tracking page for it has not changed once.",
            "Called about the {x} {n} times now and each agent tells me something different about it.",
            "The {x} does exactly one thing well: collecting dust since day {n}, because the setup never finished.",
            "For what it cost, I expected more from the {x} than a wobbling mess by day {n}.",
            "Sent the {x} back on day {n}. Never again.",
        ),
        PRAISE: (
            "I had hoped my {x} would survive at least a season; on day {n} it still runs like new.",
            "The {x} came on day {n}, earlier than the tracking page said.",
            "Called about the {x} once; the agent finished my setup in {n} minutes.",
            "The {x} has not been collecting dust since day {n}; I use it every morning.",
            "For what it cost, I expected a wobbling mess from the {x}, but by day {n} it is rock solid.",
            "Kept the {x} after day {n}, and I would buy it again.",
        ),
    },
}

_OPENERS = {
    "train": ("", "", "Hi, ", "Quick note: ", "Hello team, ", "Update: "),
    "heldout": ("", "", "Hey, ", "FYI: ", "Dear shop, ", "So, "),
}
_CLOSERS = {
    "train": ("", "", " Thanks.", " Regards.", " Just so you know."),
    "heldout": ("", "", " Cheers.", " Later.", " That is all."),
}

LABEL_WORDS = ("complaint", "complain", "praise", "negative", "positive", "unhappy", "happy", "dissatisfied")
"""Words a keyword search would try first; no message contains them."""

SENTIMENT_WORDS = (
    "bad",
    "good",
    "great",
    "terrible",
    "awful",
    "excellent",
    "love",
    "hate",
    "amazing",
    "horrible",
    "disappointed",
    "disappointing",
    "angry",
    "perfect",
    "worst",
    "best",
    "broken",
)
"""A stock sentiment lexicon; no message contains any of these words."""


def templates(split: str) -> dict[str, tuple[str, ...]]:
    """The split's templates by label (for tests and documentation)."""
    return _TEMPLATES[split]


def make_message(rng: random.Random, split: str, label: str, product: str) -> str:
    """One message with `label` about `product`, with a seeded template, opener and closer."""
    template = rng.choice(_TEMPLATES[split][label])
    body = template.format(x=product, n=rng.randint(2, 40))
    opener = rng.choice(_OPENERS[split])
    if opener:
        body = body[0].lower() + body[1:] if not body.startswith("I ") else body
    return opener + body + rng.choice(_CLOSERS[split])
