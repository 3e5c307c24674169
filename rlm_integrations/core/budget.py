"""The budget shared by every run in one recursion tree."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.usage import Usage
from rlm_integrations.lm.protocol import TokenUsage

__all__ = ["Budget", "BudgetExceeded"]


class BudgetExceeded(Exception):
    """Raised inside the engine when a limit forbids another model call.

    Attributes:
        limit: the config field that ran out (``"max_llm_calls"``, ``"max_tokens"``,
            ``"max_cost_usd"`` or ``"timeout_s"``).
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass
class _ModelTally:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    known_cost: float = 0.0
    priced_calls: int = 0


@dataclass
class Budget:
    """Counts calls, tokens, cost and time for a whole tree of runs, and says when a limit is hit.

    One `Budget` is created per top-level run and handed to every child run, so a
    child's spending counts against the parent's limits.
    """

    config: RLMConfig
    started: float = field(default_factory=time.monotonic)
    _tallies: dict[str, _ModelTally] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since the top-level run started."""
        return time.monotonic() - self.started

    def exhausted(self) -> BudgetExceeded | None:
        """The first limit that is used up, or None."""
        config = self.config
        total = self._total()
        if config.timeout_s is not None and self.elapsed() >= config.timeout_s:
            return BudgetExceeded("timeout_s", f"the run's {config.timeout_s:g} s time limit is used up")
        if config.max_llm_calls is not None and total.calls >= config.max_llm_calls:
            return BudgetExceeded("max_llm_calls", f"all {config.max_llm_calls} model calls are used")
        if config.max_tokens is not None and total.prompt_tokens + total.completion_tokens >= config.max_tokens:
            return BudgetExceeded("max_tokens", f"the {config.max_tokens:,}-token budget is used")
        if config.max_cost_usd is not None and total.known_cost >= config.max_cost_usd:
            return BudgetExceeded("max_cost_usd", f"the ${config.max_cost_usd:g} cost budget is used")
        return None

    def check(self) -> None:
        """Raise `BudgetExceeded` if a limit is used up."""
        problem = self.exhausted()
        if problem is not None:
            raise problem

    def record(self, model: str, usage: TokenUsage) -> None:
        """Add one call's usage."""
        tally = self._tallies.setdefault(model, _ModelTally())
        tally.prompt_tokens += usage.prompt_tokens
        tally.completion_tokens += usage.completion_tokens
        tally.calls += max(usage.calls, 1)
        if usage.cost_usd is not None:
            tally.known_cost += usage.cost_usd
            tally.priced_calls += max(usage.calls, 1)

    def _total(self) -> _ModelTally:
        total = _ModelTally()
        for tally in self._tallies.values():
            total.prompt_tokens += tally.prompt_tokens
            total.completion_tokens += tally.completion_tokens
            total.calls += tally.calls
            total.known_cost += tally.known_cost
            total.priced_calls += tally.priced_calls
        return total

    def usage(self) -> Usage:
        """Usage so far, in total and per model."""
        by_model = {name: _as_usage(tally) for name, tally in self._tallies.items()}
        total = self._total()
        return Usage(total=_as_usage(total), by_model=by_model, cost_complete=total.priced_calls == total.calls)


def _as_usage(tally: _ModelTally) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
        cost_usd=tally.known_cost if tally.priced_calls else (None if tally.calls else 0.0),
        calls=tally.calls,
    )
