"""Routing: answer by reading the context directly, or run the RLM loop.

``RLMConfig(route=...)``:

- ``"rlm"`` (the default): always the loop.
- ``"direct"``: one root-model call with the whole context in the prompt (a str context only;
  anything else, or a context that does not fit the window, runs the loop).
- ``"auto"``: direct only where the long-context suite shows reading is as good as the loop
  and cheaper: the context, question and reply take at most `DIRECT_SHARE` (5%) of the root
  model's window, and the question is a lookup (one fact). Counting and listing always go through the loop, where code
  counts exactly (see benchmarks/README.md, "Routing", for the numbers behind both constants).

The decision needs the model's window (`context_window`) and the budget's token estimate
(`core.limits.estimate_tokens`: `count_tokens` where the model has it, with a quarter's
margin); a model that reports no window is never routed direct by ``"auto"``.
"""

from __future__ import annotations

from typing import Any, Literal

from rlm_integrations.core.config import Route
from rlm_integrations.core.limits import estimate_tokens
from rlm_integrations.core.question_shape import Shape
from rlm_integrations.lm.protocol import LanguageModel

__all__ = ["DIRECT_REPLY_TOKENS", "DIRECT_SHAPES", "DIRECT_SHARE", "Route", "choose_route"]

DIRECT_SHARE = 0.05
"""`auto` reads directly only when the prompt takes at most this share of the root model's window.

Measured with the embedded 0.5B model (window 32,768 tokens) on the long-context suite's held-out
split: at 8K characters (about 6% of the window) reading directly tied the loop on a single
needle (faster: 18 s against 26 s) but lost on look-alike keys (0 against 1), counts (0.75
against 1) and pairs; so `auto` reads directly only below that, and only lookups."""
DIRECT_SHAPES: frozenset[Shape] = frozenset({"lookup"})
"""Question shapes `auto` may answer by reading (counts and lists go through code)."""
DIRECT_REPLY_TOKENS = 256
"""Room kept for the reply of a direct answer."""


def choose_route(
    route: Route, query: str, context: Any, model: LanguageModel, shape: Shape
) -> Literal["rlm", "direct"]:
    """Where this run goes: ``"direct"`` (one call with the context in the prompt) or ``"rlm"`` (the loop)."""
    if route == "rlm" or not isinstance(context, str):
        return "rlm"
    window = getattr(model, "context_window", None)
    if not isinstance(window, int) or window <= 0:
        return "direct" if route == "direct" else "rlm"
    needed = estimate_tokens(model, context) + estimate_tokens(model, query) + DIRECT_REPLY_TOKENS + 200
    if route == "direct":
        return "direct" if needed <= window else "rlm"
    return "direct" if needed <= DIRECT_SHARE * window and shape in DIRECT_SHAPES else "rlm"
