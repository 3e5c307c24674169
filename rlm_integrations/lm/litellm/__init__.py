"""LiteLLM as a provider: any LiteLLM model string as a `LanguageModel`.

One job per module: `model` (the adapter, `LiteLLMModel`), `_session` (importing LiteLLM
offline and the HTTP session each event loop shares), `_errors` (sorting LiteLLM's
exceptions, refusing an unroutable model or a missing key before any call) and
`_pricing` (prices and windows from LiteLLM's local map). Retries and error
translation are `ProviderModel`'s, shared with every other adapter.
"""

from __future__ import annotations

from rlm_integrations.lm.litellm.model import LiteLLMModel

__all__ = ["LiteLLMModel"]
