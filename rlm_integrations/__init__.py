"""rlm-integrations: Recursive Language Models for DSPy, LangChain and plain Python.

Importing the package is cheap; `RLM` and friends load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm_integrations.core.citations import Citation
    from rlm_integrations.core.config import RLMConfig
    from rlm_integrations.core.result import RLMResult
    from rlm_integrations.core.rlm import RLM
    from rlm_integrations.core.session import RLMSession

__all__ = ["RLM", "Citation", "RLMConfig", "RLMResult", "RLMSession", "__version__"]

__version__ = "0.1.0"

_LOCATIONS = {
    "Citation": "rlm_integrations.core.citations",
    "RLM": "rlm_integrations.core.rlm",
    "RLMConfig": "rlm_integrations.core.config",
    "RLMResult": "rlm_integrations.core.result",
    "RLMSession": "rlm_integrations.core.session",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm_integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
