"""`ScriptedLM`: a language model that plays back scripted replies, for tests and demos."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from rlm_integrations._sync import run_sync
from rlm_integrations.errors import ConfigError, ModelError
from rlm_integrations.lm.protocol import Completion, Message, TokenUsage
from rlm_integrations.lm.tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["ReplyFunction", "ScriptedLM"]

ReplyFunction = Callable[[list[Message]], str | Awaitable[str]]
"""A function of the messages that returns the reply text (or an awaitable of it)."""


def _copy(messages: Sequence[Message]) -> list[Message]:
    return [cast(Message, dict(message)) for message in messages]


class ScriptedLM:
    r"""A fake `LanguageModel` whose replies are written in advance.

    It makes no network calls and needs no key, so engine tests and examples run offline
    and deterministically:

    ```python
    lm = ScriptedLM(["```repl\nprint(len(context))\n```", "```repl\nFINAL(42)\n```"])
    lm.complete([{"role": "user", "content": "hi"}]).text   # the first reply
    lm.calls                                                # every call's messages
    ```

    Replies are handed out in order; concurrent callers each get a distinct reply (the
    next one is claimed before the call awaits anything). An item of the list may be an
    exception instance, which that call raises instead of replying, to script provider
    failures. Alternatively `replies` is a function of the messages, sync or async,
    called once per request.

    Usage is estimated from the text (see `estimate_tokens`), and every call costs
    `cost_per_call` (None scripts a model whose price is unknown).

    Attributes:
        name: the model name reported in completions and per-model usage.
        context_window: the window the engine should assume, or None for unknown.
        latency_s: seconds each call sleeps before replying, to simulate a provider.
        cost_per_call: the USD cost reported for each call, or None for unknown.
        calls: a copy of the messages of every call made so far, in call order.
    """

    prefers_worked_example: bool = False
    """Whether `ChatPolicy` shows a worked exchange first (set True in a subclass to script a small model)."""

    def __init__(
        self,
        replies: Sequence[str | BaseException] | ReplyFunction,
        *,
        name: str = "scripted",
        context_window: int | None = None,
        latency_s: float = 0.0,
        cost_per_call: float | None = 0.0,
    ) -> None:
        """Create a scripted model.

        Args:
            replies: the reply texts in order (exception instances are raised in their
                turn), or a function of the messages returning the reply text.
            name: the model name to report.
            context_window: the model's window in tokens, or None if unknown.
            latency_s: simulated latency per call, in seconds (0 for none).
            cost_per_call: USD reported per call; None means the price is unknown.

        Raises:
            ConfigError: a negative latency, cost or window, or `replies` of the wrong type.
        """
        if isinstance(replies, str | bytes):
            raise ConfigError("ScriptedLM replies must be a sequence of strings or a function, not a single string")
        if latency_s < 0:
            raise ConfigError(f"latency_s must be >= 0, got {latency_s}")
        if cost_per_call is not None and cost_per_call < 0:
            raise ConfigError(f"cost_per_call must be >= 0 or None, got {cost_per_call}")
        if context_window is not None and context_window <= 0:
            raise ConfigError(f"context_window must be positive or None, got {context_window}")
        self.name = name
        self.context_window = context_window
        self.latency_s = latency_s
        self.cost_per_call = cost_per_call
        self.calls: list[list[Message]] = []
        self._function: ReplyFunction | None = None
        self._replies: tuple[str | BaseException, ...] = ()
        if callable(replies):
            self._function = replies
        else:
            self._replies = tuple(replies)
            for item in self._replies:
                if not isinstance(item, str | BaseException):
                    raise ConfigError(f"ScriptedLM replies must be strings or exceptions, got {type(item).__name__}")
        self._next = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        """How many scripted replies are left, or None when replies come from a function."""
        if self._function is not None:
            return None
        return len(self._replies) - self._next

    def _claim(self, messages: list[Message]) -> int:
        """Record a call and claim its index in the script (thread- and task-safe)."""
        with self._lock:
            index = self._next
            self._next += 1
            self.calls.append(messages)
        return index

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Return the next scripted reply to `messages`.

        Args:
            messages: the chat messages; a copy is recorded in `calls`.
            **params: accepted for compatibility with real models and ignored.

        Returns:
            The reply, with usage estimated from the prompt and reply text.

        Raises:
            ModelError: the script ran out of replies.
            BaseException: a scripted exception, or whatever the reply function raised.
        """
        recorded = _copy(messages)
        index = self._claim(recorded)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self._function is not None:
            outcome = self._function(_copy(messages))
            text = await outcome if inspect.isawaitable(outcome) else outcome
            if not isinstance(text, str):
                raise ModelError(
                    f"ScriptedLM reply function returned {type(text).__name__}, expected str", model=self.name
                )
        else:
            if index >= len(self._replies):
                raise ModelError(
                    f"ScriptedLM ran out of replies: {len(self._replies)} scripted, this was call {index + 1}",
                    model=self.name,
                )
            item = self._replies[index]
            if isinstance(item, BaseException):
                raise item
            text = item
        usage = TokenUsage(
            prompt_tokens=estimate_messages_tokens(recorded),
            completion_tokens=estimate_tokens(text),
            cost_usd=self.cost_per_call,
            calls=1,
        )
        return Completion(text=text, usage=usage, model=self.name)

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Blocking form of `acomplete`; also works inside a running event loop."""
        return run_sync(self.acomplete(messages, **params))

    def count_tokens(self, text: str) -> int:
        """Estimated tokens of `text` (about one per four bytes)."""
        return estimate_tokens(text)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What a call will cost: `cost_per_call` (None: unknown), whatever its size."""
        return self.cost_per_call

    def __repr__(self) -> str:
        source = "function" if self._function is not None else f"{len(self._replies)} replies"
        return f"ScriptedLM(name={self.name!r}, {source}, calls={len(self.calls)})"
