"""`RLMConfig`: the limits and knobs of a run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RLMConfig"]


class RLMConfig(BaseModel):
    """Limits and knobs for an RLM run. Budgets are shared by the whole recursion tree.

    Every field is keyword-only and validated; a bad value raises pydantic's
    `ValidationError` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_iterations: int = Field(20, ge=1)
    """Root-model turns per run (each child run has its own count)."""
    max_depth: int = Field(1, ge=0)
    """How deep `rlm_query` may recurse: at this depth it becomes a plain model call."""
    max_llm_calls: int | None = Field(200, ge=1)
    """Model calls in the whole tree (root turns, sub-calls, child runs)."""
    max_tokens: int | None = Field(None, ge=1)
    """Prompt plus completion tokens in the whole tree."""
    max_cost_usd: float | None = Field(None, gt=0)
    """Spend in US dollars in the whole tree; calls with unknown prices are counted as unknown and reported."""
    timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit for the whole run."""
    cell_timeout_s: float | None = Field(30.0, gt=0)
    """Wall-clock limit per code cell (time in sub-calls excluded)."""
    max_output_chars: int = Field(10_000, ge=100)
    """Bound on what one cell keeps of its printed output."""
    feedback_chars: int = Field(4_000, ge=200)
    """Bound on each cell's output as shown to the root model (head and tail kept)."""
    sub_concurrency: int = Field(8, ge=1)
    """Concurrent sub-calls from `llm_query_batched` / `rlm_query_batched`."""
    memory_limit_mb: int | None = Field(None, ge=16)
    """REPL worker memory beyond the loaded context (None: 2048)."""
    context_preview_chars: int = Field(400, ge=0)
    """How much of the context the root model sees up front."""
    sub_max_tokens: int | None = Field(None, ge=1)
    """`max_tokens` passed to sub-model calls (None: the provider's default)."""
