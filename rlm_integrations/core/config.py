"""`RLMConfig`: the limits and knobs of a run, and the one way a config is built from overrides."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlm_integrations.core.cache import check_cache_spec

Route = Literal["rlm", "direct", "auto"]
"""How a run answers: the loop, one direct call, or the choice `core.routing` makes."""

__all__ = ["ModelPrice", "REPLOptions", "RLMConfig"]


class ModelPrice(BaseModel):
    """What one model charges, in US dollars per token.

    Used by the cost budget when the provider does not price a call (a local server, a
    LangChain chat model, an unpriced LiteLLM or DSPy model), and to estimate what a call
    may cost before it is made.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_usd_per_token: float = Field(ge=0, allow_inf_nan=False)
    """Price of one prompt token."""
    output_usd_per_token: float = Field(ge=0, allow_inf_nan=False)
    """Price of one completion token."""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The price of a call with these token counts."""
        return prompt_tokens * self.input_usd_per_token + completion_tokens * self.output_usd_per_token


class REPLOptions(TypedDict):
    """The REPL's own options that a run's `RLMConfig` sets (see `RLMConfig.repl_options`).

    Every REPL factory passes them on as keyword arguments, e.g.
    ``LocalREPL(**config.repl_options())``.
    """

    cell_timeout_s: float | None
    """Wall-clock limit per code cell."""
    memory_limit_mb: int | None
    """Worker memory beyond the loaded context (None: the REPL's own default)."""
    max_output_chars: int
    """Bound on what one cell keeps of its printed output."""


class RLMConfig(BaseModel):
    """Limits and knobs for an RLM run. Budgets are shared by the whole recursion tree.

    Every field is keyword-only and validated; a bad value raises pydantic's
    `ValidationError` naming the field. Per-call overrides go through the same
    validation (`with_overrides`), so a bad override is refused before anything starts.

    The field defaults here are the library's defaults: every face (`RLM`, the DSPy
    module, the LangChain runnable, the CLI) starts from them and declares none of its
    own. `repl_options` is the one mapping from a config to a REPL's options.

    Budgets are ceilings (see the limits section of the concepts page): a model call
    starts only if its reserved share fits, and every run keeps back what its closing
    request needs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_iterations: int = Field(20, ge=1)
    """Root-model turns per run (each child run has its own count)."""
    max_depth: int = Field(1, ge=0)
    """How deep `rlm_query` may recurse: at this depth it becomes a plain model call."""
    max_llm_calls: int | None = Field(200, ge=1)
    """Model calls in the whole tree (root turns, closing requests, sub-calls, child runs)."""
    max_tokens: int | None = Field(None, ge=1)
    """Prompt plus completion tokens in the whole tree."""
    max_cost_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Spend in US dollars in the whole tree. Every model must be priced (by its provider or `prices`)."""
    timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Wall-clock limit for the whole run, closing request included (a slice is kept for it)."""
    cell_timeout_s: float | None = Field(30.0, gt=0, allow_inf_nan=False)
    """Wall-clock limit per code cell (time in sub-calls excluded)."""
    max_output_chars: int = Field(10_000, ge=100, le=2_097_152)
    """Bound on what one cell keeps of its printed output."""
    feedback_chars: int = Field(4_000, ge=200)
    """Bound on each cell's output as shown to the root model (head and tail kept)."""
    sub_concurrency: int = Field(8, ge=1)
    """Tree-wide bound on model calls in flight and on child runs (each holds a REPL worker) at once."""
    memory_limit_mb: int | None = Field(None, ge=16)
    """REPL worker memory beyond the loaded context (None: 2048)."""
    context_preview_chars: int = Field(400, ge=0)
    """How much of the context the root model sees up front."""
    sub_max_tokens: int | None = Field(None, ge=1)
    """`max_tokens` passed to sub-model calls (None: the provider's default, or `reply_reserve_tokens`)."""
    reply_reserve_tokens: int | None = Field(None, ge=16)
    """Completion cap (`max_tokens`) each call carries when `max_tokens` or `max_cost_usd` is set, and what the
    budget reserves for its reply. None: 4,096, or a tenth of `max_tokens` when that is smaller (at least 64)."""
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Prices per model name, for models whose provider reports none (e.g. every LangChain chat model)."""
    history_reply_chars: int = Field(20_000, ge=500)
    """Bound on each root-model reply as kept in the conversation (the trajectory keeps it whole)."""
    history_feedback_chars: int = Field(20_000, ge=500)
    """Bound on each feedback message (all of a turn's cell outputs) as kept in the conversation."""
    compact_at_fraction: float = Field(0.75, gt=0, le=1)
    """Compact older root turns into a digest once the prompt passes this fraction of the root model's window."""
    history_keep_turns: int = Field(4, ge=1)
    """Recent root turns kept verbatim when compacting (the first turn is kept too)."""
    history_window_tokens: int | None = Field(None, ge=1_000)
    """The root window to assume when the model reports none (None: 128,000 tokens)."""
    max_context_bytes: int | None = Field(1 << 30, ge=1)
    """Largest context accepted (str: characters; bytes: bytes; containers: summed), refused before any copy."""
    cache: str | None = None
    """Replay identical model calls: None (off), ``"memory"`` (this `RLM`'s runs), or a directory (on disk, shared
    across processes). A hit replays the recorded completion whatever the temperature and costs nothing in budgets."""
    route: Route = "rlm"
    """``"rlm"``: always the loop; ``"direct"``: one call with the whole (str) context in the prompt when it fits the
    root model's window; ``"auto"``: direct only for a lookup that fits comfortably (see `core.routing`)."""
    citations: bool = True
    """Find `RLMResult.citations` after the run: verified spans of the context behind the answer."""

    @field_validator("cache", mode="before")
    @classmethod
    def _check_cache(cls, value: Any) -> str | None:
        return check_cache_spec(value)

    def with_overrides(self, **overrides: Any) -> RLMConfig:
        """A copy with `overrides` applied, validated exactly like the constructor.

        Raises:
            pydantic.ValidationError: an override out of range, of the wrong type, or
                not a field of `RLMConfig` (the error names it).
        """
        if not overrides:
            return self
        return RLMConfig.model_validate({**self.model_dump(), **overrides})

    def repl_options(self) -> REPLOptions:
        """The options a REPL factory passes to its REPL for this config (the one config-to-REPL mapping)."""
        return REPLOptions(
            cell_timeout_s=self.cell_timeout_s,
            memory_limit_mb=self.memory_limit_mb,
            max_output_chars=self.max_output_chars,
        )
