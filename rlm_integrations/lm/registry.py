"""Model strings to language models: ``RLM(model="...")`` and the CLI's ``--model`` resolve here.

`resolve_model(spec, **options)` picks an adapter by this rule:

1. The longest registered prefix that `spec` starts with picks the adapter; its factory
   gets the rest of the string as the model name. A prefix that ends in ``/`` or ``:``
   also matches its bare name (``"local"`` matches ``"local:"`` with an empty model).
   Registered here:
   - ``"openai-compatible/"``: `OpenAICompatibleModel` on the official `openai` SDK
     (endpoint from `base_url=` or `OPENAI_BASE_URL`, key from `api_key=` or `OPENAI_API_KEY`);
   - ``"litellm/"``: `LiteLLMModel`, explicitly;
   - ``"local:"``: `LocalModel`, the embedded GGUF model (``"local:qwen2.5-coder-1.5b"``).
2. Otherwise, with `base_url=` among the options, `OpenAICompatibleModel` (a leading
   ``openai/`` is dropped: ``"openai/qwen"`` asks the server for ``"qwen"``).
3. Otherwise `LiteLLMModel` with the whole string (``"openai/gpt-5-mini"``,
   ``"anthropic/claude-sonnet-4-5"``, any LiteLLM model string), so plain provider
   strings keep LiteLLM's routing and its offline price map.

Add an adapter with `register_provider`; every factory imports its SDK on first call, so
registering imports nothing heavy:

```python
from rlm_integrations.lm import ScriptedLM, register_provider, resolve_model

register_provider("canned/", lambda model, **options: ScriptedLM(["42"], name=model, **options))
resolve_model("canned/answer").name   # "answer"
```
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rlm_integrations.errors import UnknownModelError, UsageError
from rlm_integrations.lm.protocol import LanguageModel

__all__ = ["ProviderFactory", "provider_prefixes", "register_provider", "resolve_model", "unregister_provider"]

ProviderFactory = Callable[..., LanguageModel]
"""Builds a model: ``factory(model: str, **options) -> LanguageModel`` (`model`: the spec after the prefix)."""


def _openai_compatible(model: str, **options: Any) -> LanguageModel:
    from rlm_integrations.lm.openai_compatible import OpenAICompatibleModel

    return OpenAICompatibleModel(model, **options)


def _litellm(model: str, **options: Any) -> LanguageModel:
    from rlm_integrations.lm.litellm import LiteLLMModel

    return LiteLLMModel(model, **options)


def _local(model: str, **options: Any) -> LanguageModel:
    from rlm_integrations.lm.local import LocalModel

    return LocalModel(model=model or None, **options)


_lock = threading.Lock()
_providers: dict[str, ProviderFactory] = {
    "openai-compatible/": _openai_compatible,
    "litellm/": _litellm,
    "local:": _local,
}


def register_provider(prefix: str, factory: ProviderFactory, *, replace: bool = False) -> None:
    """Make model strings that start with `prefix` resolve through `factory`.

    Args:
        prefix: the start of the model strings this adapter serves, e.g. ``"mycloud/"``
            (non-empty, no whitespace; end it with ``/`` or ``:`` so it reads as a provider).
        factory: ``factory(model, **options) -> LanguageModel``, called with the spec
            after the prefix and the options given to `resolve_model`.
        replace: allow replacing a factory already registered under `prefix` (a built-in
            one included). Without it a second registration raises, so two libraries
            cannot silently take one prefix.

    Raises:
        UsageError: a bad prefix, a factory that is not callable, or a prefix already taken.
    """
    if not isinstance(prefix, str) or not prefix or any(char.isspace() for char in prefix):
        raise UsageError(f"a provider prefix must be a non-empty str without whitespace, got {prefix!r}")
    if not callable(factory):
        raise UsageError(
            f"the factory for provider prefix {prefix!r} must be callable as factory(model, **options), "
            f"got {type(factory).__name__}"
        )
    with _lock:
        if prefix in _providers and not replace and _providers[prefix] is not factory:
            raise UsageError(
                f"a provider is already registered for the prefix {prefix!r}; pass replace=True to replace it, "
                "or choose another prefix"
            )
        _providers[prefix] = factory


def unregister_provider(prefix: str) -> None:
    """Remove a registered prefix (for tests and plugins that clean up); unknown prefixes are ignored."""
    with _lock:
        _providers.pop(prefix, None)


def provider_prefixes() -> list[str]:
    """The registered prefixes, sorted."""
    with _lock:
        return sorted(_providers)


def _match(spec: str) -> tuple[str, ProviderFactory] | None:
    with _lock:
        candidates = [
            (prefix, factory)
            for prefix, factory in _providers.items()
            if spec.startswith(prefix) or (prefix[-1] in "/:" and spec == prefix[:-1])
        ]
    return max(candidates, key=lambda item: len(item[0])) if candidates else None


def resolve_model(spec: str, **options: Any) -> LanguageModel:
    """The language model a model string names (see the module docs for the rule).

    Args:
        spec: a model string: ``"openai-compatible/qwen"``, ``"local"``, ``"openai/gpt-5-mini"``...
        **options: passed to the adapter (`api_key`, `base_url` or `api_base`, `timeout_s`,
            `temperature`, ...).

    Returns:
        A new model object; nothing is sent until its first call.

    Raises:
        UnknownModelError: `spec` is empty or no adapter can serve it.
        MissingAPIKeyError: the adapter needs a key that is neither passed nor in the environment.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownModelError(
            "a model string must be non-empty, e.g. 'openai/gpt-5-mini' or 'openai-compatible/<name>'",
            model=str(spec),
        )
    found = _match(spec)
    if found is not None:
        prefix, factory = found
        model = spec[len(prefix) :] if spec.startswith(prefix) else ""
        return factory(model, **options)
    if options.get("base_url") is not None:
        return _openai_compatible(spec.removeprefix("openai/"), **options)
    return _litellm(spec, **options)
