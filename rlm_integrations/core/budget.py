"""The budget shared by every run in one recursion tree, kept as a ceiling.

Every model call reserves its share before it starts (one call, its prompt plus its
completion cap in tokens, and the price of those tokens) and settles with what it really
used when it returns. A call whose share does not fit is never started: it waits while
calls in flight may hand back what they reserved, and fails with `BudgetExceeded` when
even that would not make room. Each run also holds a standing reservation for its
closing request (the request for a final answer once a limit is hit), so the closing
request of the top-level run and of every child fits inside the limits too.

Reserve and settle take no `await` between the check and the update, so on one event
loop they are atomic; a lock keeps them atomic across threads as well.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.usage import Usage
from rlm_integrations.lm.protocol import TokenUsage

__all__ = ["Budget", "BudgetExceeded", "Reservation", "Share"]


class BudgetExceeded(Exception):
    """Raised inside the engine when a limit forbids another model call.

    Attributes:
        limit: the config field that ran out (``"max_llm_calls"``, ``"max_tokens"``,
            ``"max_cost_usd"``, ``"timeout_s"`` or ``"max_iterations"``).
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Share:
    """An amount of every budget at once: calls, tokens and dollars."""

    calls: int = 0
    tokens: int = 0
    cost: float = 0.0

    def __add__(self, other: Share) -> Share:
        return Share(self.calls + other.calls, self.tokens + other.tokens, self.cost + other.cost)

    def __sub__(self, other: Share) -> Share:
        return Share(self.calls - other.calls, self.tokens - other.tokens, self.cost - other.cost)


@dataclass
class Reservation:
    """A share held back for one call (in flight) or one run's closing request (standing).

    Attributes:
        share: what is held.
        standing: True while it is a run's closing reserve, False once a call uses it.
        open: False once settled or released.
    """

    share: Share
    standing: bool = False
    open: bool = True


@dataclass
class _ModelTally:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    known_cost: float = 0.0
    priced_calls: int = 0


@dataclass
class Budget:
    """Counts calls, tokens, cost and time for a whole tree of runs, and keeps them under the limits.

    One `Budget` is created per top-level run and handed to every child run, so a
    child's spending (its closing request included) counts against the parent's limits.
    """

    config: RLMConfig
    started: float = field(default_factory=time.monotonic)
    _tallies: dict[str, _ModelTally] = field(default_factory=dict)
    _charged_cost: float = 0.0
    _standing: Share = field(default_factory=Share)
    _inflight: Share = field(default_factory=Share)
    _inflight_count: int = 0
    _wake: asyncio.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cached: dict[str, int] = field(default_factory=dict)

    def elapsed(self) -> float:
        """Seconds since the top-level run started."""
        return time.monotonic() - self.started

    # -- what is spent ------------------------------------------------------------------------
    def spent(self) -> Share:
        """What settled calls used (cost as charged: the provider's price, a configured one, or the estimate)."""
        total = self._total()
        return Share(total.calls, total.prompt_tokens + total.completion_tokens, self._charged_cost)

    def held(self) -> Share:
        """What is reserved right now: closing reserves plus calls in flight."""
        return self._standing + self._inflight

    def exhausted(self) -> BudgetExceeded | None:
        """The first limit that settled spending has used up, or None."""
        config = self.config
        if config.timeout_s is not None and self.elapsed() >= config.timeout_s:
            return BudgetExceeded("timeout_s", f"the run's {config.timeout_s:g} s time limit is used up")
        return self._over(self.spent(), Share(), strict=False)

    def check(self) -> None:
        """Raise `BudgetExceeded` if a limit is used up."""
        problem = self.exhausted()
        if problem is not None:
            raise problem

    def _over(self, base: Share, need: Share, *, strict: bool) -> BudgetExceeded | None:
        """The limit that `base + need` crosses (`strict`: exceeds; otherwise: reaches), or None."""
        config = self.config
        after = base + need

        def crosses(value: float, limit: float) -> bool:
            return value > limit if strict else value >= limit

        if config.max_llm_calls is not None and crosses(after.calls, config.max_llm_calls):
            return BudgetExceeded("max_llm_calls", f"all {config.max_llm_calls} model calls are used")
        if config.max_tokens is not None and crosses(after.tokens, config.max_tokens):
            return BudgetExceeded("max_tokens", f"the {config.max_tokens:,}-token budget is used")
        if config.max_cost_usd is not None and crosses(after.cost, config.max_cost_usd + 1e-12):
            return BudgetExceeded("max_cost_usd", f"the ${config.max_cost_usd:g} cost budget is used")
        return None

    # -- reservations -------------------------------------------------------------------------
    def try_reserve(self, need: Share, *, standing: bool = False) -> Reservation:
        """Hold `need` if it fits beside everything spent and held; raise `BudgetExceeded` if not."""
        with self._lock:
            problem = self._over(self.spent() + self.held(), need, strict=True)
            if problem is not None:
                raise problem
            self._add(need, standing=standing)
            return Reservation(need, standing=standing)

    async def reserve(self, need: Share) -> Reservation:
        """Hold `need` for a call, waiting while calls in flight may hand back room.

        Raises:
            BudgetExceeded: `need` does not fit even if every call in flight gave back
                all it holds.
        """
        while True:
            with self._lock:
                problem = self._over(self.spent() + self.held(), need, strict=True)
                if problem is None:
                    self._add(need, standing=False)
                    return Reservation(need)
                hopeless = self._over(self.spent() + self._standing, need, strict=True)
                if hopeless is not None or self._inflight_count == 0:
                    raise problem
                if self._wake is None:
                    self._wake = asyncio.Event()
                wake = self._wake
            await wake.wait()

    def resize(self, reservation: Reservation, share: Share) -> BudgetExceeded | None:
        """Change what `reservation` holds to `share`; a growth that does not fit is refused (returned)."""
        with self._lock:
            if not reservation.open:
                return None
            growth = share - reservation.share
            if _grows(growth):
                problem = self._over(self.spent() + self.held(), growth, strict=True)
                if problem is not None:
                    return problem
            self._remove(reservation)
            reservation.share = share
            self._add(share, standing=reservation.standing)
            self._notify()
            return None

    def use(self, reservation: Reservation) -> Reservation:
        """Turn a standing closing reserve into the reservation of the call that uses it."""
        with self._lock:
            if reservation.open and reservation.standing:
                self._remove(reservation)
                reservation.standing = False
                self._add(reservation.share, standing=False)
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Give back what `reservation` holds (a call that failed, a closing request not needed)."""
        with self._lock:
            if reservation.open:
                self._remove(reservation)
                reservation.open = False
                self._notify()

    def settle(
        self,
        reservation: Reservation | None,
        model: str,
        usage: TokenUsage,
        *,
        price: Callable[[int, int], float | None] | None = None,
    ) -> None:
        """Record a finished call's usage in place of what it reserved.

        A call the provider did not price is priced with `price` (the configured price),
        or else charged what was reserved for it, so an unpriced call can never make the
        cost budget look emptier than it is.
        """
        with self._lock:
            estimate = reservation.share.cost if reservation is not None and reservation.open else 0.0
            if reservation is not None and reservation.open:
                self._remove(reservation)
                reservation.open = False
            cost = usage.cost_usd
            if cost is None and price is not None:
                cost = price(usage.prompt_tokens, usage.completion_tokens)
            tally = self._tallies.setdefault(model, _ModelTally())
            tally.prompt_tokens += usage.prompt_tokens
            tally.completion_tokens += usage.completion_tokens
            tally.calls += max(usage.calls, 1)
            if cost is not None:
                tally.known_cost += cost
                tally.priced_calls += max(usage.calls, 1)
            self._charged_cost += cost if cost is not None else estimate
            self._notify()

    def record(self, model: str, usage: TokenUsage) -> None:
        """Add one call's usage that had no reservation."""
        self.settle(None, model, usage)

    def count_cached(self, model: str) -> None:
        """Count a call the call cache replayed: reported in usage, never charged to a limit."""
        with self._lock:
            self._cached[model] = self._cached.get(model, 0) + 1

    def _add(self, share: Share, *, standing: bool) -> None:
        if standing:
            self._standing = self._standing + share
        else:
            self._inflight = self._inflight + share
            self._inflight_count += 1

    def _remove(self, reservation: Reservation) -> None:
        if reservation.standing:
            self._standing = self._standing - reservation.share
        else:
            self._inflight = self._inflight - reservation.share
            self._inflight_count -= 1

    def _notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    # -- reporting ----------------------------------------------------------------------------
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
        return Usage(
            total=_as_usage(total),
            by_model=by_model,
            cost_complete=total.priced_calls == total.calls,
            cached_calls=sum(self._cached.values()),
            cached_by_model=dict(self._cached),
        )


def _grows(share: Share) -> bool:
    return share.calls > 0 or share.tokens > 0 or share.cost > 0


def _as_usage(tally: _ModelTally) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
        cost_usd=tally.known_cost if tally.priced_calls else (None if tally.calls else 0.0),
        calls=tally.calls,
    )
