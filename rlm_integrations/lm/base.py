"""`ProviderModel`: the base of provider adapters. An adapter writes one call; the base does the rest.

A subclass implements `send` (one attempt of the provider call, returning a `Reply`) and
may override `classify_error` (to sort its SDK's exceptions) and `price` (to price calls
from its own source). The base supplies what every adapter needs the same way:

- `acomplete`, and `complete` (blocking, also inside a running event loop);
- retries with `tenacity`: rate limits, server errors, timeouts and dropped connections
  are retried with exponential backoff and jitter, waiting at least as long as the
  provider's `Retry-After` (or `retry-after-ms`) asks, capped by `retry_max_delay_s`; a
  caller error and a malformed reply fail at once;
- translation into our typed errors (`ModelError`, `ContextWindowExceededError`), with
  the provider's exception chained as `__cause__`;
- usage: the provider's token counts, estimated when a reply carries none (never zero);
- cost: `input_cost_per_token` / `output_cost_per_token` when given, else the adapter's
  `price`, else None (unknown; `RLMConfig.prices` can still price it);
- `count_tokens` and `estimate_cost`, which the engine uses to budget calls.

```python
from rlm_integrations.lm import ProviderModel, Reply

class Shout(ProviderModel):
    async def send(self, messages, params):
        return Reply(text=messages[-1]["content"].upper())

Shout("shout").complete([{"role": "user", "content": "hi"}]).text   # "HI"
```
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from rlm_integrations._sync import run_sync
from rlm_integrations.errors import ConfigError
from rlm_integrations.lm._errors import RETRIED, ErrorKind, MalformedReplyError, classify, describe, retry_after_s
from rlm_integrations.lm._errors import translate as _translate
from rlm_integrations.lm.protocol import Completion, Message, TokenUsage
from rlm_integrations.lm.tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["MalformedReplyError", "ProviderModel", "Reply", "reply_from_chat_completion"]

logger = logging.getLogger("rlm_integrations.lm")


@dataclass(frozen=True, slots=True)
class Reply:
    """What one provider call returned, before usage is settled and priced.

    Attributes:
        text: the reply's text ("" for a reply with no text content).
        prompt_tokens: tokens the provider counted for the prompt; None if it did not say.
        completion_tokens: tokens generated; None if the provider did not say.
        model: the model that answered, as the provider names it (None: the adapter's name).
        usage: the provider's own usage object, handed to `ProviderModel.price` as is.
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    usage: Any = None


def reply_from_chat_completion(response: Any) -> Reply:
    """Read an OpenAI-shaped chat completion (the openai SDK's, LiteLLM's) into a `Reply`.

    Raises:
        MalformedReplyError: no choices, no message, or content that is not text.
    """
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedReplyError("it has no choices")
    message = getattr(choices[0], "message", None)
    if message is None:
        raise MalformedReplyError("its first choice has no message")
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedReplyError(f"content is {type(content).__name__}, not text")
    usage = getattr(response, "usage", None)
    model = getattr(response, "model", None)
    return Reply(
        text=content or "",
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        model=model if isinstance(model, str) and model else None,
        usage=usage,
    )


def _exception_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


class ProviderModel(ABC):
    """Base class of `LanguageModel` adapters: implement `send`; retries, errors, usage and cost come free.

    Attributes:
        name: the model's name in usage reports (also in error messages).
        context_window: the model's input window in tokens, or None if unknown.
        timeout_s: seconds one attempt may take.
        max_retries: retries after the first attempt for transient failures.
        retry_initial_delay_s: the first backoff delay; later ones double, with jitter.
        retry_max_delay_s: the longest wait between attempts, `Retry-After` included.
        params: default completion parameters sent with every call.
        prefers_worked_example: whether `ChatPolicy` should show a worked exchange first
            (True for small models that follow the REPL format only after an example).
    """

    reserved_params: ClassVar[frozenset[str]] = frozenset({"model", "messages", "stream"})
    """Parameters the adapter sets itself; passing them per call is refused with `ConfigError`."""

    prefers_worked_example: bool = False

    def __init__(
        self,
        name: str,
        *,
        context_window: int | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        retry_initial_delay_s: float = 1.0,
        retry_max_delay_s: float = 60.0,
        input_cost_per_token: float | None = None,
        output_cost_per_token: float | None = None,
        **params: Any,
    ) -> None:
        """Check the options; makes no network call.

        Args:
            name: the model's name in usage reports.
            context_window: the input window in tokens, or None if unknown.
            timeout_s: seconds one attempt may take before it counts as a timeout.
            max_retries: how many times a transient failure is retried (0 for none).
            retry_initial_delay_s: the first backoff delay; later ones double, with jitter.
            retry_max_delay_s: the longest wait between attempts, `Retry-After` included.
            input_cost_per_token: USD per prompt token (give both prices, or neither).
            output_cost_per_token: USD per completion token.
            **params: completion parameters sent with every call (`temperature`, `max_tokens`, ...).

        Raises:
            ConfigError: an option out of range, one price without the other, or a reserved parameter.
        """
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if retry_initial_delay_s < 0 or retry_max_delay_s < 0:
            raise ConfigError("retry delays must be >= 0")
        if context_window is not None and context_window <= 0:
            raise ConfigError(f"context_window must be positive or None, got {context_window}")
        if (input_cost_per_token is None) != (output_cost_per_token is None):
            raise ConfigError("pass both input_cost_per_token and output_cost_per_token, or neither")
        self._check_reserved(params)
        self.name = name
        self.context_window = context_window
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.retry_initial_delay_s = retry_initial_delay_s
        self.retry_max_delay_s = retry_max_delay_s
        self.params: dict[str, Any] = params
        self._custom_prices: tuple[float, float] | None = (
            None
            if input_cost_per_token is None or output_cost_per_token is None
            else (float(input_cost_per_token), float(output_cost_per_token))
        )

    # -- what an adapter writes ------------------------------------------------------------

    @abstractmethod
    async def send(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        """Make one attempt of the provider call (the base retries it; call `acomplete` instead).

        Args:
            messages: the chat messages.
            params: the completion parameters of this call (defaults merged with per-call ones).

        Returns:
            The reply; raise `MalformedReplyError` for a reply that is not a chat completion,
            and let the provider's own exceptions propagate for `classify_error` to sort.
        """

    def classify_error(self, error: BaseException) -> ErrorKind:
        """Sort a failed attempt; override to recognise your SDK's exception types, then call super()."""
        return classify(error)

    def price(self, prompt_tokens: int, completion_tokens: int, usage: Any) -> float | None:
        """The USD price of a call of this size when no custom prices were given; None: unknown.

        Override to price calls from your provider's own table; `usage` is the reply's
        `Reply.usage` (None when the engine asks before a call).
        """
        return None

    # -- the protocol ----------------------------------------------------------------------

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Send `messages` and return the reply, retrying transient failures.

        Args:
            messages: the chat messages.
            **params: completion parameters for this call only (they override the defaults).

        Returns:
            The reply with its usage (estimated when the provider reports none) and cost
            (None when the price is unknown).

        Raises:
            ContextWindowExceededError: the provider says the prompt exceeds the window.
            ModelError: a caller error (4xx), a malformed reply, or a transient failure
                that outlived its retries; the provider's exception is chained as `__cause__`.
            ConfigError: a reserved parameter (`model`, `messages`, `stream`, ...) was passed.
        """
        if params:
            self._check_reserved(params)
        request = {**self.params, **params} if params else dict(self.params)
        sent = list(messages)
        started = time.monotonic()
        try:  # the first attempt runs bare: most calls succeed, and then retrying costs nothing
            reply = await self.send(sent, request)
        except Exception as error:
            failure = error
        else:
            return self._completion(reply, sent)
        reply = await self._after_failure(failure, sent, request, started)
        return self._completion(reply, sent)

    async def _after_failure(
        self, first: Exception, messages: list[Message], request: dict[str, Any], started: float
    ) -> Reply:
        """Retry after a failed first attempt while failures are transient; else raise our typed error."""
        # Classify each failure once, when it happens: tenacity re-raises the last one from
        # inside its own handler, which rewrites the exception's `__context__` chain.
        kinds: dict[int, tuple[BaseException, ErrorKind]] = {}

        def kind_of(error: BaseException) -> ErrorKind:
            if id(error) not in kinds:
                kinds[id(error)] = (error, self.classify_error(error))
            return kinds[id(error)][1]

        error: Exception = first
        attempts = 1
        if kind_of(first) in RETRIED and self.max_retries > 0:
            delay = self._delay(1, first)
            self._log_retry(1, first, delay)
            await asyncio.sleep(delay)
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.max_retries),
                    wait=lambda state: self._delay(state.attempt_number + 1, _exception_of(state)),
                    retry=retry_if_exception(lambda failed: kind_of(failed) in RETRIED),
                    before_sleep=lambda state: self._log_retry(
                        state.attempt_number + 1,
                        _exception_of(state),
                        state.next_action.sleep if state.next_action is not None else 0.0,
                    ),
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        reply = await self.send(messages, request)
                return reply
            except Exception as later:
                error = later
        raise _translate(
            error,
            kind_of(error),
            model=self.name,
            messages=messages,
            context_window=self.context_window,
            timeout_s=self.timeout_s,
            attempts=attempts,
            elapsed_s=time.monotonic() - started,
        ) from error

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Blocking form of `acomplete`; also works inside a running event loop."""
        return run_sync(self.acomplete(messages, **params))

    def count_tokens(self, text: str) -> int:
        """Estimate the tokens of `text` (about one per four UTF-8 bytes).

        A real tokenizer would cost milliseconds per call and is unavailable offline for
        most providers; the engine only needs a size to budget with and to refuse
        prompts that clearly exceed the window, so this stays an estimate.
        """
        return estimate_tokens(text)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What a call of this size costs in USD, or None if unpriced (the engine reserves it from `max_cost_usd`)."""
        return self._cost(prompt_tokens, completion_tokens, None)

    # -- the machinery ---------------------------------------------------------------------

    def _check_reserved(self, params: dict[str, Any]) -> None:
        reserved = sorted(self.reserved_params.intersection(params))
        if reserved:
            raise ConfigError(
                f"{type(self).__name__} sets {', '.join(reserved)} itself; do not pass them as parameters"
            )

    def _completion(self, reply: Reply, messages: Sequence[Message]) -> Completion:
        prompt_tokens = int(reply.prompt_tokens or 0)
        completion_tokens = int(reply.completion_tokens or 0)
        reported = prompt_tokens > 0 or completion_tokens > 0
        if not reported:  # the provider sent no usage: estimate rather than report zero
            prompt_tokens = estimate_messages_tokens(messages)
            completion_tokens = estimate_tokens(reply.text)
        cost = self._cost(prompt_tokens, completion_tokens, reply.usage if reported else None)
        usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost, calls=1)
        return Completion(text=reply.text, usage=usage, model=reply.model or self.name)

    def _cost(self, prompt_tokens: int, completion_tokens: int, usage: Any) -> float | None:
        if self._custom_prices is not None:
            input_price, output_price = self._custom_prices
            return prompt_tokens * input_price + completion_tokens * output_price
        return self.price(prompt_tokens, completion_tokens, usage)

    def _delay(self, attempt_number: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt `attempt_number` (1-based).

        Exponential from `retry_initial_delay_s` plus up to one initial delay of jitter,
        at least what the error's `Retry-After` asks, at most `retry_max_delay_s`.
        """
        initial = self.retry_initial_delay_s
        doubled = initial * 2.0 ** min(attempt_number - 1, 64)  # capped exponent: no float overflow
        backoff = min(doubled, self.retry_max_delay_s) + random.uniform(0, initial)
        retry_after = retry_after_s(error) if error is not None else None
        if retry_after is not None:
            backoff = max(backoff, retry_after)
        return min(backoff, self.retry_max_delay_s)

    def _log_retry(self, attempt_number: int, error: BaseException | None, delay: float) -> None:
        logger.info("%s: attempt %d failed (%s); retrying in %.2fs", self.name, attempt_number, describe(error), delay)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
