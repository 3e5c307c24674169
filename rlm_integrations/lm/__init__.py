"""Language models: the `LanguageModel` protocol, its adapters, and the model-string registry.

`resolve_model("...")` turns a model string into a model (see `rlm_integrations.lm.registry`
for the rule); `register_provider(prefix, factory)` adds an adapter. Adapters:
`LiteLLMModel` (any LiteLLM model string), `OpenAICompatibleModel` (an OpenAI-compatible
endpoint on the official `openai` SDK), `LocalModel` (the embedded GGUF default) and
`ScriptedLM` (a fake for tests). `ProviderModel` is the base a new adapter subclasses.

Adapters are imported on first access, so importing this package never loads LiteLLM,
the openai SDK or llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rlm_integrations.lm.protocol import Completion, LanguageModel, Message, TokenUsage
from rlm_integrations.lm.registry import provider_prefixes, register_provider, resolve_model, unregister_provider

if TYPE_CHECKING:
    from rlm_integrations.lm.base import MalformedReplyError, ProviderModel, Reply
    from rlm_integrations.lm.litellm import LiteLLMModel
    from rlm_integrations.lm.local import LocalModel
    from rlm_integrations.lm.openai_compatible import OpenAICompatibleModel
    from rlm_integrations.lm.scripted import ScriptedLM

__all__ = [
    "Completion",
    "LanguageModel",
    "LiteLLMModel",
    "LocalModel",
    "MalformedReplyError",
    "Message",
    "OpenAICompatibleModel",
    "ProviderModel",
    "Reply",
    "ScriptedLM",
    "TokenUsage",
    "provider_prefixes",
    "register_provider",
    "resolve_model",
    "unregister_provider",
]

_LAZY = {
    "LiteLLMModel": "rlm_integrations.lm.litellm",
    "LocalModel": "rlm_integrations.lm.local",
    "MalformedReplyError": "rlm_integrations.lm.base",
    "OpenAICompatibleModel": "rlm_integrations.lm.openai_compatible",
    "ProviderModel": "rlm_integrations.lm.base",
    "Reply": "rlm_integrations.lm.base",
    "ScriptedLM": "rlm_integrations.lm.scripted",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ImportError(
            f"{name} is not available in this installation of rlm-integrations: its module {module_name} is "
            "missing. Use LiteLLMModel with a provider or a local OpenAI-compatible server meanwhile.",
            name=module_name,
        ) from error
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
