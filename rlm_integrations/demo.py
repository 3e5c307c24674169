"""The README's main job: an RLM finds a fact hidden in about a million characters.

Run with ``python -m rlm_integrations.demo``. With a model string in ``RLM_MODEL`` (any
LiteLLM model, e.g. ``openai/gpt-5-mini``, with its API key in the environment) the demo
uses that model. Without one it uses a built-in scripted model that replays a fixed
search strategy, so the sandbox, the loop, sub-calls and the trajectory all run for real
on a machine with no API key and no network; it says so plainly. (The embedded local
model is tracked separately and will become the no-key default.)
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Sequence

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.rlm import RLM
from rlm_integrations.lm.protocol import LanguageModel
from rlm_integrations.lm.scripted import ScriptedLM

__all__ = ["build_haystack", "main"]

_WORDS = (
    "river stone market lantern orchard harbor meadow signal copper violet winter garden "
    "engine ledger candle bridge thunder saddle mirror quarry willow beacon"
).split()

_SCRIPT = [
    "I will look at the size and the start of the context first.\n"
    "```repl\nprint(len(context))\nprint(context[:200])\n```",
    "The fact is probably stated as a sentence with 'code'. I will search for it with a regex.\n"
    "```repl\nimport re\nhits = [m.start() for m in re.finditer(r'secret code', context)]\nprint(hits)\n"
    "for h in hits:\n    print(repr(context[h - 80:h + 80]))\n```",
    "I will ask the sub-model to read the passage around the hit, and extract the code with code too.\n"
    "```repl\npassage = context[hits[0] - 200:hits[0] + 200]\n"
    "reply = llm_query('What is the secret code in this passage? ' + passage)\nprint(reply)\n"
    "code = re.search(r'secret code is (\\d+)', passage).group(1)\nprint(code)\n```",
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


def _choose_model() -> tuple[LanguageModel, str]:
    model_string = os.environ.get("RLM_MODEL")
    if model_string:
        from rlm_integrations.lm.litellm import LiteLLMModel

        return LiteLLMModel(model_string), f"{model_string} (from RLM_MODEL, through LiteLLM)"
    model = ScriptedLM(_SCRIPT, name="scripted-demo")
    return model, "the built-in scripted demo model (no RLM_MODEL set: it replays a fixed search strategy)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit code (0 when the answer is right)."""
    del argv
    text, secret = build_haystack()
    model, description = _choose_model()
    sub_model = (
        ScriptedLM(lambda messages: "The passage says the secret code is there.", name="scripted-sub")
        if (isinstance(model, ScriptedLM))
        else model
    )
    print(f"Model: {description}")
    print(f"Context: {len(text):,} characters of generated prose with one hidden fact")
    rlm = RLM(model, sub_model, config=RLMConfig(max_iterations=8, cell_timeout_s=30))
    started = time.monotonic()
    result = rlm.completion("What is the secret code?", context=text)
    elapsed = time.monotonic() - started
    print()
    for event in result.trajectory.iter_events("cell_end"):
        code_shown = getattr(event, "stdout", "").strip().splitlines()
        print(
            f"[cell {event.cell_id}] printed {len(code_shown)} line(s)"
            + (f": {code_shown[0][:100]}" if code_shown else "")
        )
    print()
    print(f"Answer: {result.answer!r}  (expected {secret!r}: {'correct' if str(result.answer) == secret else 'WRONG'})")
    usage = result.usage
    print(
        f"Status: {result.status}; {result.iterations} iterations; {usage.calls} model calls; "
        f"{usage.total_tokens:,} tokens; {elapsed:.2f} s"
    )
    return 0 if str(result.answer) == secret else 1


if __name__ == "__main__":
    sys.exit(main())
