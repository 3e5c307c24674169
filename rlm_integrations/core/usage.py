"""Usage accounting per model, summed over a whole recursion tree."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.lm.protocol import TokenUsage

__all__ = ["Usage"]


class Usage(BaseModel):
    """Tokens, calls and cost of a run, in total and per model (children included).

    Attributes:
        total: the sum over every model.
        by_model: usage per model name.
        cost_complete: False if any call had an unknown price, so `total.cost_usd`
            is a lower bound (or None when nothing was priced).
        cached_calls: calls replayed by the call cache (`RLMConfig.cache`), counted
            only here: they are in neither `total` nor `by_model`.
        cached_by_model: replayed calls per model name.
    """

    model_config = ConfigDict(frozen=True)

    total: TokenUsage = Field(default_factory=TokenUsage)
    by_model: dict[str, TokenUsage] = Field(default_factory=dict)
    cost_complete: bool = True
    cached_calls: int = 0
    """Calls the call cache replayed (not in `total`: they cost nothing)."""
    cached_by_model: dict[str, int] = Field(default_factory=dict)
    """Replayed calls per model name."""

    @property
    def calls(self) -> int:
        """Model calls in total."""
        return self.total.calls

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens in total."""
        return self.total.total_tokens

    @property
    def cost_usd(self) -> float | None:
        """Known cost in USD (None if no call had a known price)."""
        return self.total.cost_usd
