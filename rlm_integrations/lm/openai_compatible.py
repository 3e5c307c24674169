"""`OpenAICompatibleModel`: any OpenAI-compatible chat endpoint through the official `openai` SDK.

OpenAI itself, vLLM, llama.cpp's `llama-server`, Ollama's `/v1`, LM Studio, or
`FakeOpenAIServer` in tests: anything that answers `POST /v1/chat/completions`. The SDK's
`AsyncOpenAI` costs far less CPU per call than LiteLLM, which matters when a cell fans
out dozens of `llm_query` calls at once.

Retries, `Retry-After`, error translation and usage are `ProviderModel`'s (the SDK's own
retries are off). Cost: `input_cost_per_token` / `output_cost_per_token` when given, else
None (unknown), which `RLMConfig.prices` can fill in; this adapter never imports LiteLLM
for its price map.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import openai

from rlm_integrations.errors import MissingAPIKeyError, UnknownModelError
from rlm_integrations.lm._errors import ErrorKind
from rlm_integrations.lm._per_loop import PerLoop
from rlm_integrations.lm.base import ProviderModel, Reply, reply_from_chat_completion
from rlm_integrations.lm.protocol import Message

__all__ = ["OpenAICompatibleModel"]

_NO_KEY = "no-key"
"""What a keyless local server is sent as the key (the SDK refuses an empty one)."""

_create_parameters: frozenset[str] | None = None


def _known_parameters() -> frozenset[str]:
    """The keyword arguments `chat.completions.create` takes (others travel in `extra_body`)."""
    global _create_parameters
    if _create_parameters is None:
        from openai.resources.chat.completions import AsyncCompletions

        _create_parameters = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"}
    return _create_parameters


class OpenAICompatibleModel(ProviderModel):
    """A `LanguageModel` on an OpenAI-compatible endpoint, through `openai.AsyncOpenAI`.

    ```python
    model = OpenAICompatibleModel("gpt-4o-mini")                                # OpenAI, OPENAI_API_KEY
    model = OpenAICompatibleModel("qwen", base_url="http://127.0.0.1:8000/v1")  # vLLM, llama-server
    ```

    Through the model registry the same is ``resolve_model("openai-compatible/qwen",
    base_url=...)``, or ``RLM(model="openai-compatible/gpt-4o-mini")``.

    Parameters the SDK does not name (`top_k`, `repetition_penalty`, ... for vLLM) are
    sent in the request body as they are (`extra_body`). One `AsyncOpenAI` client (one
    connection pool) serves every call on an event loop and is closed when the loop ends.

    Attributes:
        name: the name in usage reports (default: `model`).
        model: the model name sent to the endpoint.
        base_url: the endpoint, or None for OpenAI's.
        context_window: the model's input window in tokens, or None if unknown (the
            endpoint is not asked; pass it to have the engine refuse oversized prompts).
        timeout_s: seconds one attempt may take.
        max_retries: retries after the first attempt for transient errors.
        params: default completion parameters sent with every call.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        context_window: int | None = None,
        retry_initial_delay_s: float = 1.0,
        retry_max_delay_s: float = 60.0,
        default_headers: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        """Check the model and its key; makes no network call.

        Args:
            model: the model name the endpoint serves, e.g. `"gpt-4o-mini"` or a vLLM alias.
            base_url: the endpoint, e.g. `"http://127.0.0.1:8000/v1"`; None reads
                `OPENAI_BASE_URL`, else OpenAI's own.
            api_key: the key; None reads `OPENAI_API_KEY`. A custom `base_url` needs none.
            name: the name in usage reports and `RLMConfig.prices` (default: `model`).
            timeout_s: seconds one attempt may take before it counts as a timeout.
            max_retries: how many times a transient failure is retried (0 for none).
            context_window: the input window in tokens, or None if unknown.
            retry_initial_delay_s: the first backoff delay; later ones double, with jitter.
            retry_max_delay_s: the longest wait between attempts, `Retry-After` included.
            default_headers: extra HTTP headers for every request.
            **params: completion parameters sent with every call (`temperature`,
                `max_tokens`, ...); `input_cost_per_token` and `output_cost_per_token` set
                the price instead.

        Raises:
            UnknownModelError: `model` is empty.
            MissingAPIKeyError: OpenAI's own endpoint and no key passed or in `OPENAI_API_KEY`.
            ConfigError: an option is out of range or a reserved parameter was passed.
        """
        if not isinstance(model, str) or not model.strip():
            raise UnknownModelError("model must be a non-empty model name such as 'gpt-4o-mini'", model=str(model))
        super().__init__(
            name or model,
            context_window=context_window,
            timeout_s=timeout_s,
            max_retries=max_retries,
            retry_initial_delay_s=retry_initial_delay_s,
            retry_max_delay_s=retry_max_delay_s,
            **params,
        )
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url is None:
                raise MissingAPIKeyError(
                    f"{model} on OpenAI's endpoint needs an API key: set OPENAI_API_KEY or pass api_key=... "
                    "(a local OpenAI-compatible server needs none: pass base_url='http://host:port/v1')",
                    model=model,
                    env_vars=["OPENAI_API_KEY"],
                )
            key = _NO_KEY
        self._api_key = key
        self._headers = dict(default_headers or {})
        self._clients: PerLoop[openai.AsyncOpenAI] = PerLoop(self._new_client, _close_client)

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=0,  # ours retry
            default_headers=self._headers or None,
        )

    async def send(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        """One `chat.completions.create` call on this loop's client."""
        client = await self._clients.get()
        known = _known_parameters()
        if any(key not in known for key in params):
            extra = dict(params.get("extra_body") or {})
            extra.update({key: value for key, value in params.items() if key not in known})
            params = {key: value for key, value in params.items() if key in known}
            params["extra_body"] = extra
        response = await client.chat.completions.create(model=self.model, messages=messages, **params)  # type: ignore[arg-type]
        return reply_from_chat_completion(response)

    def classify_error(self, error: BaseException) -> ErrorKind:
        """The SDK's exception types first, then what any HTTP error exposes."""
        if isinstance(error, openai.APIResponseValidationError):
            return "malformed"
        if isinstance(error, openai.APITimeoutError):
            return "timeout"
        if isinstance(error, openai.APIConnectionError):
            return "transient"
        return super().classify_error(error)

    def __repr__(self) -> str:
        base = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"OpenAICompatibleModel({self.model!r}{base})"


async def _close_client(client: openai.AsyncOpenAI) -> None:
    await client.close()
