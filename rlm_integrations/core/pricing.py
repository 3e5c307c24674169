"""What a model call costs before it is made: the price source behind the cost budget.

A model is priced when `RLMConfig.prices` names it, or when the model object offers
`estimate_cost(prompt_tokens, completion_tokens) -> float | None` and it returns a
number (`LiteLLMModel` with a price in LiteLLM's map or its own prices, `ScriptedLM`
with a `cost_per_call`). With `max_cost_usd` set, every model of the run must be priced,
or the run is refused up front with `BudgetConfigError`: a cost limit over calls whose
price is unknown could not hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rlm_integrations.core.config import ModelPrice, RLMConfig
from rlm_integrations.errors import BudgetConfigError

__all__ = ["PriceFunction", "check_prices", "configured_price", "price_for"]

PriceFunction = Callable[[int, int], float | None]
"""Dollars for (prompt tokens, completion tokens), or None when unknown."""


def configured_price(prices: Mapping[str, ModelPrice], *names: str | None) -> PriceFunction | None:
    """The configured price of the first of `names` that `prices` lists, or None."""
    for name in names:
        if name is not None and name in prices:
            return prices[name].cost
    return None


def price_for(model: Any, prices: Mapping[str, ModelPrice]) -> PriceFunction | None:
    """How to price calls to `model` before they are made, or None if nothing prices it."""
    configured = configured_price(prices, getattr(model, "name", None))
    if configured is not None:
        return configured
    estimate = getattr(model, "estimate_cost", None)
    if not callable(estimate):
        return None
    try:
        probe = estimate(1, 1)
    except Exception:  # a model that cannot price itself is unpriced, not broken
        return None
    return estimate if isinstance(probe, int | float) else None


def check_prices(config: RLMConfig, models: Iterable[Any]) -> None:
    """Refuse a cost budget over models with no price.

    Raises:
        BudgetConfigError: `max_cost_usd` is set and a model has no price.
    """
    if config.max_cost_usd is None:
        return
    missing: list[str] = []
    for model in models:
        name = str(getattr(model, "name", type(model).__name__))
        if name not in missing and price_for(model, config.prices) is None:
            missing.append(name)
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise BudgetConfigError(
            f"max_cost_usd is set but no price is known for {names}, so the cost limit could not hold. "
            f"Give the price in RLMConfig(prices={{{missing[0]!r}: ModelPrice(input_usd_per_token=..., "
            "output_usd_per_token=...)}), price the model itself (e.g. LiteLLMModel(..., "
            "input_cost_per_token=..., output_cost_per_token=...)), or drop max_cost_usd.",
            models=missing,
        )
