"""The README's main job: an RLM finds a fact hidden in about a million characters.

Run with ``rlm demo`` (or ``python -m rlm_integrations.demo``). The model is chosen as
for ``rlm run``: ``--model``, then ``RLM_MODEL``, then a provider key in the environment,
then the embedded local model. ``--model scripted-demo`` replays a fixed search strategy
instead of a model, so the sandbox, the loop and sub-calls can be shown with no model at all.
"""

from __future__ import annotations

import random

from rlm_integrations.lm.scripted import ScriptedLM

__all__ = ["DEMO_QUESTION", "build_haystack", "main", "scripted_demo_model", "scripted_sub_model"]

DEMO_QUESTION = "What is the secret code?"

_WORDS = (
    "river stone market lantern orchard harbor meadow signal copper violet winter garden "
    "engine ledger candle bridge thunder saddle mirror quarry willow beacon"
).split()

_SCRIPT = [
    "I will look at the size and the start of the context first (as text, if it is a dict of files).\n"
    "```repl\nimport json\ntext = context if isinstance(context, str) else json.dumps(context, ensure_ascii=False)\n"
    "print(len(text))\nprint(text[:200])\n```",
    "The fact is probably stated as a sentence with 'code'. I will search for it with a regex.\n"
    "```repl\nimport re\nhits = [m.start() for m in re.finditer(r'secret code', text)]\nprint(hits)\n"
    "for h in hits:\n    print(repr(text[max(0, h - 80):h + 80]))\n```",
    "I will ask the sub-model to read the passage around the hit, and extract the code with code too.\n"
    "```repl\npassage = text[max(0, hits[0] - 200):hits[0] + 200] if hits else text[:400]\n"
    "reply = llm_query('What is the secret code in this passage? ' + passage)\nprint(reply)\n"
    "found = re.search(r'secret code is (\\d+)', passage)\ncode = found.group(1) if found else reply\n"
    "print(code)\n```",
    "```repl\nFINAL(code)\n```",
]


def build_haystack(chars: int = 1_000_000, *, seed: int = 7) -> tuple[str, str]:
    """Generated prose of about `chars` characters with one hidden fact; returns (text, secret)."""
    rng = random.Random(seed)
    secret = str(rng.randrange(100_000, 999_999))
    sentences: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))).capitalize() + ". "
        sentences.append(sentence)
        size += len(sentence)
    sentences.insert(rng.randrange(len(sentences) // 4, 3 * len(sentences) // 4), f"The secret code is {secret}. ")
    return "".join(sentences), secret


def scripted_demo_model() -> ScriptedLM:
    """The offline stand-in for a model: replays a fixed strategy (look, search, read, answer)."""
    return ScriptedLM(_SCRIPT, name="scripted-demo")


def scripted_sub_model() -> ScriptedLM:
    """The scripted demo's sub-model: acknowledges the passage it was given."""
    return ScriptedLM(lambda messages: "The passage states the secret code.", name="scripted-sub")
