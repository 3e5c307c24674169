"""The language-model seam: chat messages in, one completion with its usage out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = ["Completion", "LanguageModel", "Message", "TokenUsage"]


class Message(TypedDict):
    """One chat message, in the OpenAI shape every provider adapter accepts."""

    role: Literal["system", "user", "assistant"]
    content: str


class TokenUsage(BaseModel):
    """Tokens and money spent by one or more model calls.

    Attributes:
        prompt_tokens: tokens sent.
        completion_tokens: tokens generated.
        cost_usd: price in US dollars, or None when the price is unknown (never a made-up zero).
        calls: how many calls this usage covers.
    """

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        cost = None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=cost,
            calls=self.calls + other.calls,
        )


class Completion(BaseModel):
    """One model reply.

    Attributes:
        text: the reply's text.
        usage: what the call cost (`calls` is 1).
        model: the model that answered, as the provider names it.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    usage: TokenUsage
    model: str


@runtime_checkable
class LanguageModel(Protocol):
    """A chat model the engine can drive.

    Attributes:
        name: a stable, human-readable model name (used for per-model usage).
        context_window: the model's window in tokens, or None if unknown. The engine
            refuses sub-prompts larger than this before sending them.
        prefers_worked_example: whether `ChatPolicy` should show one worked exchange
            (search, read the output, answer) before the real question. Small models
            follow the REPL format only after an example (True for `LocalModel`). False
            by default: a class that subclasses `LanguageModel` or `ProviderModel`
            inherits it; any other implementation declares it.

    `acomplete` is the real implementation; `complete` is a blocking wrapper that also
    works when an event loop is already running. Implementations retry transient
    provider errors themselves and raise `ModelError` once retries are spent.
    """

    name: str
    context_window: int | None
    prefers_worked_example: bool = False

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Return the model's reply to `messages`."""
        ...

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Blocking form of `acomplete`."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` would take in this model's prompt (an estimate is acceptable)."""
        ...
