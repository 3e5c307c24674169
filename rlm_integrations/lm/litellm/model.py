"""`LiteLLMModel`: any LiteLLM model string as a `LanguageModel`.

Retries are ours (`ProviderModel`'s), not LiteLLM's or the OpenAI SDK's: both are turned
off per request.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rlm_integrations.errors import UnknownModelError
from rlm_integrations.lm._errors import ErrorKind
from rlm_integrations.lm.base import ProviderModel, Reply, reply_from_chat_completion
from rlm_integrations.lm.litellm._errors import (
    AMBIENT_CREDENTIAL_PROVIDERS,
    check_environment,
    classify_litellm,
    route,
)
from rlm_integrations.lm.litellm._pricing import MapPrices
from rlm_integrations.lm.litellm._session import import_litellm, session_for_running_loop
from rlm_integrations.lm.protocol import Message

__all__ = ["LiteLLMModel"]


class LiteLLMModel(ProviderModel):
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

    Retries (rate limits, 5xx, timeouts, dropped connections; `Retry-After` honoured) and
    error translation come from `ProviderModel`. Cost comes from LiteLLM's local price
    map. When the model has no price there, `cost_usd` is None (unknown), never 0; pass
    `input_cost_per_token` and `output_cost_per_token` to price it yourself (0 for a free
    local model).

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

    reserved_params: ClassVar[frozenset[str]] = frozenset({"model", "messages", "stream", "num_retries"})

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
        super().__init__(
            model,
            context_window=context_window,
            timeout_s=timeout_s,
            max_retries=max_retries,
            retry_initial_delay_s=retry_initial_delay_s,
            retry_max_delay_s=retry_max_delay_s,
            **params,
        )
        litellm = import_litellm()
        bare_model, provider = route(litellm, model, api_base)
        if api_key is None and api_base is None and provider not in AMBIENT_CREDENTIAL_PROVIDERS:
            check_environment(litellm, model)
        self.model = model
        self.provider: str = provider
        self.api_base = api_base
        self._api_key = api_key
        self._litellm = litellm
        self._map = MapPrices(litellm, bare_model, provider)
        if context_window is None:
            self.context_window = self._map.context_window()

    async def send(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        """One `litellm.acompletion` call, with LiteLLM's and the SDK's own retries off."""
        request: dict[str, Any] = {"timeout": self.timeout_s, **params}
        request.update(model=self.model, messages=messages, max_retries=0, num_retries=0)
        if self.api_base is not None:
            request["api_base"] = self.api_base
        if self._api_key is not None:
            request["api_key"] = self._api_key
        if request.get("shared_session") is None:
            request["shared_session"] = await session_for_running_loop()
        return reply_from_chat_completion(await self._litellm.acompletion(**request))

    def classify_error(self, error: BaseException) -> ErrorKind:
        """LiteLLM's exception types first, then what any HTTP error exposes."""
        return classify_litellm(self._litellm, error)

    def price(self, prompt_tokens: int, completion_tokens: int, usage: Any) -> float | None:
        """The price from LiteLLM's local map (by the model name, even behind `api_base`), or None."""
        return self._map.cost(prompt_tokens, completion_tokens, usage)

    def __repr__(self) -> str:
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"LiteLLMModel({self.model!r}{base})"
