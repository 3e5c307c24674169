"""Prices and context windows from LiteLLM's local model map (shipped with LiteLLM, read offline)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["MapPrices"]


class MapPrices:
    """One model's entry in LiteLLM's price map: its window, and the price of a call.

    Whether the map prices the model is asked once, on the first price asked for, so a
    price added with `litellm.register_model` counts for objects that have not priced a
    call yet. For an unpriced model (a local server's alias, say) `cost_per_token`
    searches the map and raises on every call; asking once saves that work (~80 us a call).
    """

    def __init__(self, litellm: ModuleType, bare_model: str, provider: str) -> None:
        self._litellm = litellm
        self.bare_model = bare_model
        self.provider = provider
        self._priced: bool | None = None

    def context_window(self) -> int | None:
        """The model's input window in tokens from the map, or None if it does not say."""
        try:
            info = self._litellm.get_model_info(self.bare_model, custom_llm_provider=self.provider)
        except Exception:
            return None
        window = info.get("max_input_tokens") or info.get("max_tokens")
        return int(window) if isinstance(window, int) and window > 0 else None

    def cost(self, prompt_tokens: int, completion_tokens: int, usage: Any) -> float | None:
        """The call's price in USD, or None when the map has no price for the model."""
        if self._priced is None:
            self._priced = self._has_price()
        if not self._priced:
            return None
        try:
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=self.bare_model,
                custom_llm_provider=self.provider,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                usage_object=usage,
            )
        except Exception:
            return None
        return float(prompt_cost) + float(completion_cost)

    def _has_price(self) -> bool:
        try:
            self._litellm.cost_per_token(
                model=self.bare_model, custom_llm_provider=self.provider, prompt_tokens=1, completion_tokens=1
            )
        except Exception:
            return False
        return True
