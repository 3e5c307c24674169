"""Language models: the `LanguageModel` protocol and its backends.

`LiteLLMModel` (any LiteLLM model string), `LocalModel` (the embedded GGUF default) and
`ScriptedLM` (a fake for tests) are imported on first access, so importing this package
never loads LiteLLM or llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rlm_integrations.lm.protocol import Completion, LanguageModel, Message, TokenUsage

if TYPE_CHECKING:
    from rlm_integrations.lm.litellm import LiteLLMModel
    from rlm_integrations.lm.scripted import ScriptedLM

__all__ = [
    "Completion",
    "LanguageModel",
    "LiteLLMModel",
    "LocalModel",
    "Message",
    "ScriptedLM",
    "TokenUsage",
]

_LAZY = {
    "LiteLLMModel": "rlm_integrations.lm.litellm",
    "LocalModel": "rlm_integrations.lm.local",
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
