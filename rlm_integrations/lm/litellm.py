"""`LiteLLMModel`: any LiteLLM model string as a `LanguageModel`.

LiteLLM is imported on first use (it takes seconds to import), with
`LITELLM_LOCAL_MODEL_COST_MAP=True` set beforehand so that it reads prices from the copy
it ships instead of fetching them from the internet.

Retries are ours, not LiteLLM's or the OpenAI SDK's (both are turned off per request):
`tenacity` retries rate limits (429), server errors (5xx), timeouts and connection
errors with exponential backoff and jitter, waiting at least as long as the provider's
`Retry-After` asks. A caller error (any other 4xx) and a malformed response fail at once.

Connections: LiteLLM caches one HTTP client per event loop and never closes it when the
loop ends, which leaks sockets (and `ResourceWarning`s) every time `asyncio.run` or our
sync `complete()` finishes. So every `LiteLLMModel` call on a loop shares one
`aiohttp.ClientSession` that this module owns (passed as LiteLLM's `shared_session`), and
that session is closed when the loop shuts down its async generators, which
`asyncio.run`, `asyncio.Runner` and pytest-asyncio all do. Connections are still pooled
and reused for the lifetime of a loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from rlm_integrations._sync import run_sync
from rlm_integrations.errors import (
    ConfigError,
    ContextWindowExceededError,
    MissingAPIKeyError,
    ModelError,
    UnknownModelError,
)
from rlm_integrations.lm._tokens import estimate_messages_tokens, estimate_tokens
from rlm_integrations.lm.protocol import Completion, Message, TokenUsage

if TYPE_CHECKING:
    import aiohttp

__all__ = ["LiteLLMModel"]

logger = logging.getLogger("rlm_integrations.lm")

_litellm: ModuleType | None = None

# Providers whose credentials usually come from somewhere other than an `*_API_KEY`
# variable (cloud credential chains, Azure AD tokens), so a missing variable proves nothing.
_AMBIENT_CREDENTIAL_PROVIDERS = frozenset({"azure", "bedrock", "sagemaker", "sagemaker_chat", "vertex_ai"})

# Parameters the model object owns; passing them per call would break retries or parsing.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "num_retries"})

_CONNECTION_LIMIT = 256
"""Simultaneous connections per event loop, across all models."""

ErrorKind = Literal["context_window", "malformed", "transient", "fatal"]


def _import_litellm() -> ModuleType:
    """Import LiteLLM once, offline and quiet."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Without this LiteLLM prints provider lists and "Give Feedback" banners to stdout.
        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


_loop_sessions: dict[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncIterator[None]]] = {}


async def _session_for_running_loop(litellm: ModuleType) -> aiohttp.ClientSession:
    """The HTTP session shared by every call on the running loop, created on first use.

    Its closer is an async generator parked at its `yield`: the loop records it when it
    first runs, and `loop.shutdown_asyncgens()` (called by `asyncio.run` and
    `asyncio.Runner` before the loop closes) resumes it, which closes the session.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    entry = _loop_sessions.get(loop)
    if entry is not None and not entry[0].closed:
        return entry[0]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=_CONNECTION_LIMIT),
        cookie_jar=aiohttp.DummyCookieJar(),
        # proxies from the environment only where LiteLLM itself would use them
        trust_env=bool(getattr(litellm, "aiohttp_trust_env", False))
        or os.environ.get("AIOHTTP_TRUST_ENV", "").lower() in {"1", "true", "yes"},
    )

    async def closer() -> AsyncIterator[None]:
        try:
            yield
        finally:
            if _loop_sessions.get(loop, (None,))[0] is session:
                del _loop_sessions[loop]
            await _drain_litellm_logging(loop)
            await session.close()

    keeper = closer()
    _loop_sessions[loop] = (session, keeper)
    await anext(keeper)
    return session


async def _drain_litellm_logging(loop: asyncio.AbstractEventLoop) -> None:
    """Run LiteLLM's queued logging callbacks before `loop` closes (best effort).

    LiteLLM queues a logging coroutine per call on a global worker bound to one loop; left
    pending when the loop closes, they are carried to the next loop with a warning.
    """
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER as worker

        if getattr(worker, "_bound_loop", None) is not loop:
            return
        if worker.pending_count:
            await asyncio.wait_for(worker.flush(), timeout=1.0)
        await worker.stop(timeout=1.0)
    except Exception:  # pragma: no cover - depends on LiteLLM internals
        logger.debug("could not drain LiteLLM's logging worker", exc_info=True)


class LiteLLMModel:
    """A `LanguageModel` backed by LiteLLM: OpenAI, Anthropic, Gemini, Bedrock, Ollama, vLLM...

    ```python
    model = LiteLLMModel("openai/gpt-5-mini")                   # key from OPENAI_API_KEY
    model = LiteLLMModel("anthropic/claude-sonnet-4-5", temperature=0.2)
    model = LiteLLMModel("openai/qwen", api_base="http://127.0.0.1:8080/v1")  # a local server
    completion = await model.acomplete([{"role": "user", "content": "Hello"}])
    completion.text, completion.usage.cost_usd
    ```

    The constructor validates before anything is spent: a model string LiteLLM cannot
    route raises `UnknownModelError`, a provider key that is neither passed nor in the
    environment raises `MissingAPIKeyError` (skipped when `api_base` is given, as local
    servers need no key, and for providers with ambient credentials: Azure, Bedrock,
    SageMaker, Vertex AI).

    Cost comes from LiteLLM's local price map. When the model has no price there,
    `cost_usd` is None (unknown), never 0; pass `input_cost_per_token` and
    `output_cost_per_token` to price it yourself (0 for a free local model). Whether the
    map prices the model is asked once, on the object's first call, so a price added with
    `litellm.register_model` counts for objects that have not made a call yet.

    Attributes:
        name: the model string as given (used for per-model usage).
        model: the same model string.
        provider: the LiteLLM provider that serves it, e.g. `"openai"`.
        api_base: the endpoint override, or None for the provider's default.
        context_window: the model's input window in tokens, or None if unknown.
        timeout_s: seconds one HTTP attempt may take.
        max_retries: retries after the first attempt for transient errors.
        params: default completion parameters sent with every call.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        context_window: int | None = None,
        retry_initial_delay_s: float = 1.0,
        retry_max_delay_s: float = 60.0,
        **params: Any,
    ) -> None:
        """Validate the model and its credentials; makes no network call.

        Args:
            model: a LiteLLM model string, e.g. `"openai/gpt-5-mini"`, or `"openai/<alias>"`
                with `api_base` for any OpenAI-compatible server.
            api_base: the endpoint to call instead of the provider's default.
            api_key: the provider key; None reads the provider's environment variable.
            timeout_s: seconds one attempt may take before it counts as a timeout.
            max_retries: how many times a transient failure is retried (0 for none).
            context_window: the input window in tokens; None looks it up in LiteLLM's map.
            retry_initial_delay_s: the first backoff delay; later ones double, with jitter.
            retry_max_delay_s: the longest wait between attempts, `Retry-After` included.
            **params: completion parameters sent with every call (`temperature`,
                `max_tokens`, `reasoning_effort`, ...). `input_cost_per_token` and
                `output_cost_per_token` set the price instead.

        Raises:
            UnknownModelError: LiteLLM cannot route `model`.
            MissingAPIKeyError: the provider's key is neither passed nor in the environment.
            ConfigError: an option is out of range or a reserved parameter was passed.
        """
        if not isinstance(model, str) or not model.strip():
            raise UnknownModelError(
                "model must be a non-empty LiteLLM model string such as 'openai/gpt-5-mini'", model=str(model)
            )
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if retry_initial_delay_s < 0 or retry_max_delay_s < 0:
            raise ConfigError("retry delays must be >= 0")
        if context_window is not None and context_window <= 0:
            raise ConfigError(f"context_window must be positive or None, got {context_window}")
        reserved = sorted(_RESERVED_PARAMS.intersection(params))
        if reserved:
            raise ConfigError(f"LiteLLMModel sets {', '.join(reserved)} itself; do not pass them as parameters")
        input_price = params.pop("input_cost_per_token", None)
        output_price = params.pop("output_cost_per_token", None)
        if (input_price is None) != (output_price is None):
            raise ConfigError("pass both input_cost_per_token and output_cost_per_token, or neither")

        litellm = _import_litellm()
        try:
            bare_model, provider, _, _ = litellm.get_llm_provider(model, api_base=api_base)
        except Exception as error:
            raise UnknownModelError(
                f"LiteLLM cannot route the model {model!r}. Prefix it with its provider, e.g. "
                f"'openai/{model}' or 'anthropic/{model}' (see https://docs.litellm.ai/docs/providers); "
                f"for an OpenAI-compatible server use 'openai/<name>' with api_base='http://host:port/v1'.",
                model=model,
            ) from error

        if api_key is None and api_base is None and provider not in _AMBIENT_CREDENTIAL_PROVIDERS:
            _check_environment(litellm, model)

        self.name = model
        self.model = model
        self.provider: str = provider
        self.api_base = api_base
        self._api_key = api_key
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.retry_initial_delay_s = retry_initial_delay_s
        self.retry_max_delay_s = retry_max_delay_s
        self.params: dict[str, Any] = params
        # exponential from the initial delay, plus up to one initial delay of jitter
        self._backoff = wait_exponential(multiplier=retry_initial_delay_s, max=retry_max_delay_s) + wait_random(
            0, retry_initial_delay_s
        )
        self._bare_model: str = bare_model
        self._custom_prices: tuple[float, float] | None = (
            None if input_price is None else (float(input_price), float(output_price))
        )
        # Whether LiteLLM's price map knows this model; None until the first call asks.
        self._priced: bool | None = None
        self.context_window = context_window if context_window is not None else self._lookup_window(litellm)

    def _lookup_window(self, litellm: ModuleType) -> int | None:
        try:
            info = litellm.get_model_info(self._bare_model, custom_llm_provider=self.provider)
        except Exception:
            return None
        window = info.get("max_input_tokens") or info.get("max_tokens")
        return int(window) if isinstance(window, int) and window > 0 else None

    # -- the protocol ------------------------------------------------------------------

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Send `messages` and return the reply, retrying transient failures.

        Args:
            messages: the chat messages.
            **params: completion parameters for this call only (they override the defaults).

        Returns:
            The reply with its usage and cost. Usage is the provider's (estimated when the
            response carries none); cost is priced by the model name from LiteLLM's local
            map, even behind `api_base`, and is None when the price is unknown. A reply with
            no text content (only tool calls, say) has `text == ""`.

        Raises:
            ContextWindowExceededError: the provider says the prompt exceeds the window.
            ModelError: a caller error (4xx), a malformed response, or a transient failure
                that outlived its retries; the provider's exception is chained as `__cause__`.
        """
        litellm = _import_litellm()
        reserved = sorted(_RESERVED_PARAMS.intersection(params))
        if reserved:
            raise ConfigError(f"LiteLLMModel sets {', '.join(reserved)} itself; do not pass them as parameters")
        request: dict[str, Any] = {"timeout": self.timeout_s, **self.params, **params}
        request.update(model=self.model, messages=list(messages), max_retries=0, num_retries=0)
        if self.api_base is not None:
            request["api_base"] = self.api_base
        if self._api_key is not None:
            request["api_key"] = self._api_key
        if request.get("shared_session") is None:
            request["shared_session"] = await _session_for_running_loop(litellm)

        # Classify each failure once, when it happens: tenacity re-raises the last one from
        # inside its own handler, which rewrites the exception's `__context__` chain.
        kinds: dict[int, tuple[BaseException, ErrorKind]] = {}

        def classify(error: BaseException) -> ErrorKind:
            if id(error) not in kinds:
                kinds[id(error)] = (error, _classify(litellm, error))
            return kinds[id(error)][1]

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda error: classify(error) == "transient"),
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempts = 0
        started = time.monotonic()
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await litellm.acompletion(**request)
        except Exception as error:
            kind = classify(error)
            raise self._translate(litellm, error, kind, messages, attempts, time.monotonic() - started) from error
        return self._parse(litellm, response, messages)

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
        """What a call of this size costs in USD (own prices, else LiteLLM's map), or None if unpriced.

        The engine uses it to reserve a call's share of `max_cost_usd` before sending it.
        """
        return self._cost(_import_litellm(), prompt_tokens, completion_tokens, None)

    # -- retries -----------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = _retry_after_s(error) if error is not None else None
        if retry_after is not None:
            backoff = max(backoff, retry_after)
        return min(backoff, self.retry_max_delay_s)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            self.model,
            state.attempt_number,
            _describe(error),
            delay,
        )

    # -- results and errors ------------------------------------------------------------

    def _parse(self, litellm: ModuleType, response: Any, messages: Sequence[Message]) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            raise ModelError(f"{self.model} returned a malformed response: it has no choices", model=self.model)
        message = getattr(choices[0], "message", None)
        if message is None:
            raise ModelError(
                f"{self.model} returned a malformed response: its first choice has no message", model=self.model
            )
        content = getattr(message, "content", None)
        if content is not None and not isinstance(content, str):
            raise ModelError(
                f"{self.model} returned a malformed response: content is {type(content).__name__}, not text",
                model=self.model,
            )
        text = content or ""

        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        reported = prompt_tokens > 0 or completion_tokens > 0
        if not reported:  # the provider sent no usage: estimate rather than report zero
            prompt_tokens = estimate_messages_tokens(messages)
            completion_tokens = estimate_tokens(text)
        cost = self._cost(litellm, prompt_tokens, completion_tokens, usage if reported else None)
        return Completion(
            text=text,
            usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost, calls=1),
            model=str(getattr(response, "model", None) or self.model),
        )

    def _cost(self, litellm: ModuleType, prompt_tokens: int, completion_tokens: int, usage: Any) -> float | None:
        """The call's price in USD from the custom or the local price map; None if unknown."""
        if self._custom_prices is not None:
            input_price, output_price = self._custom_prices
            return prompt_tokens * input_price + completion_tokens * output_price
        if self._priced is None:
            self._priced = self._has_price(litellm)
        if not self._priced:
            return None
        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=self._bare_model,
                custom_llm_provider=self.provider,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                usage_object=usage,
            )
        except Exception:
            return None
        return float(prompt_cost) + float(completion_cost)

    def _has_price(self, litellm: ModuleType) -> bool:
        """Whether LiteLLM can price this model at all, asked once per model object.

        For an unpriced model (a local server's alias, say) `cost_per_token` searches the
        map and raises on every call; asking once saves that work (about 80 us a call).
        """
        try:
            litellm.cost_per_token(
                model=self._bare_model, custom_llm_provider=self.provider, prompt_tokens=1, completion_tokens=1
            )
        except Exception:
            return False
        return True

    def _translate(
        self,
        litellm: ModuleType,
        error: Exception,
        kind: ErrorKind,
        messages: Sequence[Message],
        attempts: int,
        elapsed_s: float,
    ) -> ModelError:
        if kind == "context_window":
            prompt_tokens = _parse_int(r"resulted in (\d+) tokens", str(error)) or estimate_messages_tokens(messages)
            window = _parse_int(r"maximum context length is (\d+)", str(error)) or self.context_window or 0
            return ContextWindowExceededError(
                f"{self.model}: the prompt (~{prompt_tokens} tokens) exceeds the model's context window"
                f"{f' of {window} tokens' if window else ''}: {_describe(error)}",
                model=self.model,
                prompt_tokens=prompt_tokens,
                max_tokens=window,
            )
        if kind == "malformed":
            return ModelError(f"{self.model} returned a malformed response: {_describe(error)}", model=self.model)
        if kind == "transient":
            reason = (
                f"timed out after {self.timeout_s:g}s (timeout_s)"
                if isinstance(error, litellm.Timeout)
                else _describe(error)
            )
            return ModelError(
                f"{self.model} failed after {attempts} attempt{'s' if attempts != 1 else ''} "
                f"in {elapsed_s:.1f}s: {reason}",
                model=self.model,
            )
        status = getattr(error, "status_code", None)
        if not isinstance(status, int):
            return ModelError(f"{self.model} call failed: {_describe(error)}", model=self.model)
        hint = ""
        if status in (401, 403):
            hint = " (check the API key: pass api_key=... or set the provider's environment variable)"
        return ModelError(f"{self.model} rejected the request{hint}: {_describe(error)}", model=self.model)

    def __repr__(self) -> str:
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"LiteLLMModel({self.model!r}{base})"


def _check_environment(litellm: ModuleType, model: str) -> None:
    """Raise `MissingAPIKeyError` when the provider's `*_API_KEY` variable is unset."""
    try:
        report = litellm.validate_environment(model=model)
    except Exception:  # an unusual provider LiteLLM cannot check: let the call decide
        return
    missing = [name for name in report.get("missing_keys", []) if name.endswith("_API_KEY")]
    if report.get("keys_in_environment") or not missing:
        return
    names = " or ".join(missing)
    raise MissingAPIKeyError(
        f"{model} needs an API key: set {names} in the environment or pass api_key=... "
        "(a local OpenAI-compatible server needs none: pass api_base=...)",
        model=model,
        env_vars=missing,
    )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the exceptions it was raised from, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_MALFORMED_MARKERS = ("no 'choices'", "Empty or invalid response", "Invalid response object")


def _classify(litellm: ModuleType, error: BaseException) -> ErrorKind:
    """Sort a provider exception into what to do with it."""
    if isinstance(error, litellm.ContextWindowExceededError):
        return "context_window"
    chain = list(_causes(error))
    if any(isinstance(cause, json.JSONDecodeError) for cause in chain) or any(
        marker in str(cause) for cause in chain for marker in _MALFORMED_MARKERS
    ):
        return "malformed"
    transient_types = (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        TimeoutError,
        ConnectionError,
    )
    if isinstance(error, transient_types):
        return "transient"
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and (status >= 500 or status in (408, 429)):
        return "transient"
    return "fatal"


def _headers_of(error: BaseException) -> Mapping[str, str] | None:
    headers = getattr(error, "litellm_response_headers", None)
    if headers is None:
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else None


def _retry_after_s(error: BaseException) -> float | None:
    """The wait a `Retry-After` (or OpenAI's `retry-after-ms`) header asks for, in seconds."""
    headers = _headers_of(error)
    if not headers:
        return None
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    status = getattr(error, "status_code", None)
    text = str(error).strip().replace("\n", " ")
    if len(text) > 500:
        text = text[:500] + "..."
    return (
        f"{type(error).__name__} (HTTP {status}): {text}"
        if isinstance(status, int)
        else f"{type(error).__name__}: {text}"
    )


def _parse_int(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else None
