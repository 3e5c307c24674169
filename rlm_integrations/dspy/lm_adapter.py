"""`DSPyLanguageModel`: a `dspy.BaseLM` seen through our `LanguageModel` protocol.

The engine's sub-calls (`llm_query`, `rlm_query` at `max_depth`) and child runs go through
this adapter, so they are ordinary DSPy LM calls: DSPy's usage tracker, history, cache and
callbacks see them, and the engine's budgets count their tokens, calls and (where DSPy
prices the model) cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy
from dspy.lm15 import Config, Message, Request
from dspy.utils.callback import BaseCallback

from rlm_integrations._sync import run_sync
from rlm_integrations.errors import ModelError
from rlm_integrations.lm.protocol import Completion, TokenUsage
from rlm_integrations.lm.protocol import Message as ChatMessage
from rlm_integrations.lm.tokens import estimate_tokens

__all__ = ["CostProbe", "DSPyLanguageModel", "usage_from_tracker"]

# `dspy.LM` keyword defaults that have a field in an explicit lm15 request's config.
_CONFIG_KEYS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
# How far back `lm.history` is searched for a call's own entry (to read its cost).
_HISTORY_SCAN = 64


class DSPyLanguageModel:
    """A DSPy language model as a `LanguageModel` for the RLM engine.

    Args:
        lm: any `dspy.BaseLM` (`dspy.LM`, `DummyLM`, a custom subclass).
        context_window: the model's window in tokens, if known; the engine then refuses
            sub-prompts that cannot fit instead of sending them.

    A single user message is sent as a plain prompt (`lm(prompt)`), so the LM's own
    defaults (temperature, max_tokens, ...) apply exactly as in any DSPy call. A longer
    conversation is sent as a `dspy.lm15.Request` carrying those defaults. Failures are
    raised as `ModelError` (the original exception is its `__cause__`).
    """

    prefers_worked_example = False
    """DSPy drives the prompt itself: the chat policy's worked example does not apply (the DSPy face offers its own
    as demos, see `rlm_integrations.dspy.orientation`)."""

    def __init__(self, lm: dspy.BaseLM, *, context_window: int | None = None) -> None:
        self.lm = lm
        self.name: str = str(getattr(lm, "model", type(lm).__name__))
        self.context_window = context_window

    async def acomplete(self, messages: Sequence[ChatMessage], **params: Any) -> Completion:
        """Call the DSPy LM and return its reply with the usage DSPy recorded for it."""
        lm = self.lm
        try:
            with dspy.track_usage() as tracker:
                if len(messages) == 1 and messages[0]["role"] == "user" and not params:
                    outputs = await lm.acall(messages[0]["content"])
                    text, response = _first_text(outputs), None
                elif hasattr(lm, "_engine_spec"):
                    response = await lm.acall(self._request(messages, params))
                    text, outputs = response.text or "", response
                else:  # a legacy BaseLM subclass that only takes OpenAI-style messages
                    outputs = await lm.acall(messages=[dict(m) for m in messages], **params)
                    text, response = _first_text(outputs), None
        except Exception as error:
            raise ModelError(f"{self.name}: {type(error).__name__}: {error}", model=self.name) from error
        usage = usage_from_tracker(tracker.usage_data, prompt="".join(m["content"] for m in messages), reply=text)
        cost = _cost_of(lm, outputs)
        return Completion(text=text, usage=usage.model_copy(update={"cost_usd": cost}), model=self.name)

    def complete(self, messages: Sequence[ChatMessage], **params: Any) -> Completion:
        """Blocking form of `acomplete`."""
        return run_sync(self.acomplete(messages, **params))

    def count_tokens(self, text: str) -> int:
        """Estimated tokens of `text` (about one per four bytes)."""
        return estimate_tokens(text)

    def _request(self, messages: Sequence[ChatMessage], params: dict[str, Any]) -> Request:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
        chat = tuple(
            Message.user(m["content"]) if m["role"] == "user" else Message.assistant(m["content"])
            for m in messages
            if m["role"] != "system"
        ) or (Message.user(""),)
        defaults = {**getattr(self.lm, "kwargs", {}), **params}
        fields = {key: defaults[key] for key in _CONFIG_KEYS if defaults.get(key) is not None}
        max_tokens = defaults.get("max_tokens") or defaults.get("max_completion_tokens")
        if max_tokens:
            fields["max_tokens"] = int(max_tokens)
        if defaults.get("stop"):
            stop = defaults["stop"]
            fields["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return Request(model=self.lm.model, messages=chat, system=system, config=Config(**fields))

    def __repr__(self) -> str:
        return f"DSPyLanguageModel({self.name!r})"


class CostProbe(BaseCallback):
    """A DSPy callback that adds up the cost DSPy recorded for the LM calls it sees.

    Installed (with `dspy.context(callbacks=[..., probe])`) around one predictor call, it
    prices exactly that call's LM requests, even when other calls run concurrently.
    """

    def __init__(self) -> None:
        self.cost = 0.0
        self.calls = 0
        self.priced = 0
        self._lms: dict[str, Any] = {}

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """Remember which LM this call went to."""
        self._lms[call_id] = instance

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: BaseException | None = None) -> None:
        """Read the call's cost from the LM's history."""
        lm = self._lms.pop(call_id, None)
        if lm is None or exception is not None:
            return
        self.calls += 1
        cost = _cost_of(lm, outputs)
        if cost is not None:
            self.cost += cost
            self.priced += 1

    @property
    def total(self) -> float | None:
        """The summed cost, or None unless every call was priced."""
        return self.cost if self.calls and self.priced == self.calls else None


def usage_from_tracker(usage_data: dict[str, list[dict[str, Any]]], *, prompt: str, reply: str) -> TokenUsage:
    """Sum what a `dspy.track_usage()` block recorded into one `TokenUsage`.

    A call DSPy recorded no usage for (a cache hit, a model that reports none) still counts
    as one call, with tokens estimated from the text.
    """
    prompt_tokens = completion_tokens = calls = 0
    for entries in usage_data.values():
        for entry in entries:
            calls += 1
            prompt_tokens += int(entry.get("prompt_tokens") or 0)
            completion_tokens += int(entry.get("completion_tokens") or 0)
    if calls == 0:
        return TokenUsage(
            prompt_tokens=estimate_tokens(prompt), completion_tokens=estimate_tokens(reply), cost_usd=None, calls=1
        )
    return TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=None, calls=calls)


def _first_text(outputs: Any) -> str:
    if isinstance(outputs, list) and outputs:
        first = outputs[0]
        if isinstance(first, dict):
            return str(first.get("text") or "")
        return str(first)
    text = getattr(outputs, "text", None)
    if isinstance(text, str):
        return text
    raise TypeError(f"the LM returned {type(outputs).__name__}, expected a list of outputs or a Response")


def _cost_of(lm: Any, outputs: Any) -> float | None:
    """The price DSPy recorded for this call in `lm.history` (matched by identity), or None."""
    history = getattr(lm, "history", None) or []
    for entry in reversed(history[-_HISTORY_SCAN:]):
        if entry.get("outputs") is outputs or entry.get("response") is outputs:
            cost = entry.get("cost")
            return float(cost) if isinstance(cost, int | float) else None
    return None
