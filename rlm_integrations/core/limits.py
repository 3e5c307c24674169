"""Tree-wide limits the engine enforces around every model call and every child run.

`TreeLimits` is shared by all runs of one tree:

* call slots: at most `sub_concurrency` model calls in flight at once, whoever makes
  them (root turns, `llm_query`, `llm_query_batched`, child runs' turns, closing
  requests). A slot is held only for one model call, so slots never deadlock;
* worker slots (`WorkerSlots`): at most `max(sub_concurrency, max_depth)` child runs
  alive at once; each holds a REPL worker, so live workers stay at that number plus the
  top-level run's own one;
* the budget (`Budget`), with each call's share reserved before it starts;
* the clock: `timeout_s` is a wall. Turns must end by the step deadline, which keeps a
  slice of the timeout (`closing_slice_s`) for the closing request; the closing request
  must end by the wall.

`RunMeter` is one run's view: its prompt-size estimate and its standing closing reserve.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rlm_integrations.core import prompts
from rlm_integrations.core.budget import Budget, BudgetExceeded, Reservation, Share
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.pricing import PriceFunction, configured_price, price_for
from rlm_integrations.lm.protocol import Completion
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["RunMeter", "TreeLimits", "WorkerSlots", "closing_slice_s", "estimate_tokens", "prompt_tokens_of"]

_CLOSING_SLICE_SHARE = 0.2
_CLOSING_SLICE_MAX_S = 30.0
_MESSAGE_OVERHEAD_TOKENS = 8
_MIN_FEEDBACK_CHARS = 400
_TOKEN_MARGIN_DIVISOR = 4  # estimates get a quarter more
_DEFAULT_RESERVE = 4_096


def _default_reserve(max_tokens: int | None) -> int:
    if max_tokens is None:
        return _DEFAULT_RESERVE
    return min(_DEFAULT_RESERVE, max(64, max_tokens // 10))


def closing_slice_s(timeout_s: float) -> float:
    """The part of `timeout_s` kept for the closing request: 20 % of it, at most 30 s."""
    return min(_CLOSING_SLICE_SHARE * timeout_s, _CLOSING_SLICE_MAX_S)


class WorkerSlots:
    """At most `size` child runs alive at once across the tree, without deadlock between depths.

    A child at depth `d` takes a slot only if `max_depth - d` slots stay free for deeper
    children, so a run waiting on its own children can always be served (children at
    `max_depth` start no children and always finish). `size` is at least `max_depth`.
    """

    def __init__(self, size: int, max_depth: int) -> None:
        self.size = max(size, max_depth)
        self.max_depth = max_depth
        self.held = 0
        self.peak = 0
        self._waiters: list[asyncio.Future[None]] = []

    def _fits(self, depth: int) -> bool:
        return self.size - self.held - 1 >= max(self.max_depth - depth, 0)

    async def acquire(self, depth: int) -> None:
        """Wait for a slot for a child run at `depth` (1 for the top-level run's children)."""
        while not self._fits(depth):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.held += 1
        self.peak = max(self.peak, self.held)

    def release(self) -> None:
        """Give a slot back and wake the waiters to re-check (never blocks, safe in `finally`)."""
        self.held -= 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @asynccontextmanager
    async def slot(self, depth: int) -> AsyncIterator[None]:
        """Hold a slot for the body."""
        await self.acquire(depth)
        try:
            yield
        finally:
            self.release()


class TreeLimits:
    """The limits one recursion tree shares: budget, call slots, worker slots and the clock."""

    def __init__(self, config: RLMConfig) -> None:
        self.config = config
        self.budget = Budget(config)
        self.calls = asyncio.Semaphore(config.sub_concurrency)
        self.workers = WorkerSlots(config.sub_concurrency, config.max_depth)
        self.capped = config.max_tokens is not None or config.max_cost_usd is not None
        self.reply_reserve = config.reply_reserve_tokens or _default_reserve(config.max_tokens)
        self._prices: dict[int, PriceFunction | None] = {}

    def price(self, model: Any) -> PriceFunction | None:
        """How calls to `model` are priced before they are made (looked up once per model object)."""
        if id(model) not in self._prices:
            self._prices[id(model)] = price_for(model, self.config.prices)
        return self._prices[id(model)]

    # -- the clock ----------------------------------------------------------------------------
    def step_deadline(self) -> float | None:
        """Event-loop time by which turns and sub-calls must end (None: no limit)."""
        timeout = self.config.timeout_s
        if timeout is None:
            return None
        return self._loop_time_at(timeout - closing_slice_s(timeout))

    def wall_deadline(self) -> float | None:
        """Event-loop time by which the whole run, closing request included, must end."""
        timeout = self.config.timeout_s
        return None if timeout is None else self._loop_time_at(timeout)

    def _loop_time_at(self, offset_s: float) -> float:
        return asyncio.get_running_loop().time() + offset_s - self.budget.elapsed()

    def steps_over(self) -> BudgetExceeded | None:
        """The time limit, if the step deadline has passed."""
        deadline = self.step_deadline()
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            return self.timeout_stop()
        return None

    def timeout_stop(self) -> BudgetExceeded:
        """The stop reason for the time limit."""
        return BudgetExceeded("timeout_s", f"the run's {self.config.timeout_s:g} s time limit is used up")

    # -- calls --------------------------------------------------------------------------------
    def completion_cap(self, own_cap: int | None) -> int | None:
        """The `max_tokens` a call must carry: its own cap, else the reserve when tokens or cost are limited."""
        if own_cap is not None:
            return own_cap
        return self.reply_reserve if self.capped else None

    def share(self, prompt_tokens: int, cap: int | None, price: PriceFunction | None) -> Share:
        """What a call with this prompt and completion cap may use."""
        completion = cap if cap is not None else self.reply_reserve
        cost = price(prompt_tokens, completion) if price is not None else None
        return Share(1, prompt_tokens + completion, float(cost or 0.0))

    @asynccontextmanager
    async def call(self, need: Share, *, reserved: Reservation | None = None) -> AsyncIterator[Reservation]:
        """Hold a call slot and `need` (or an existing reservation) for one model call.

        The body settles the reservation with the call's usage; whatever is left unsettled
        (a failed or cancelled call) is given back on exit.
        """
        async with self.calls:
            reservation = reserved if reserved is not None else await self.budget.reserve(need)
            try:
                yield reservation
            finally:
                self.budget.release(reservation)

    def settle(self, reservation: Reservation | None, model: Any, completion: Completion, *, name: str) -> None:
        """Record a finished call (`name`: the model name usage is kept under) in place of its reservation."""
        price = configured_price(self.config.prices, getattr(model, "name", None), completion.model, name)
        self.budget.settle(reservation, name, completion.usage, price=price)


class RunMeter:
    """One run's closing reserve and its estimate of the conversation's size in tokens."""

    def __init__(self, limits: TreeLimits, model: Any, prompt_tokens: int, cap: int | None) -> None:
        self.limits = limits
        self.model = model
        self.price = limits.price(model)
        self.cap = cap
        self.prompt_tokens = prompt_tokens
        # a turn adds its reply (at most the cap) and feedback, which `fit_feedback` cuts to what is left
        reply = cap or limits.reply_reserve
        self.turn_growth = reply + estimate_tokens(model, "x" * _MIN_FEEDBACK_CHARS) + 2 * _MESSAGE_OVERHEAD_TOKENS
        self.closing_tokens = estimate_tokens(model, prompts.closing_request("a limit was reached")) + 32
        self.closing: Reservation | None = None

    def turn_share(self) -> Share:
        """What the next turn may use."""
        return self.limits.share(self.prompt_tokens, self.cap, self.price)

    def closing_share(self, prompt_tokens: int) -> Share:
        """What a closing request over a conversation of `prompt_tokens` may use."""
        return self.limits.share(prompt_tokens + self.closing_tokens, self.cap, self.price)

    def open(self, *, with_turn: bool) -> None:
        """Reserve the closing request (and, for a child, room for one turn beside it).

        Raises:
            BudgetExceeded: it does not fit.
        """
        budget = self.limits.budget
        self.closing = budget.try_reserve(self.closing_share(self.prompt_tokens), standing=True)
        if with_turn:
            try:
                budget.release(budget.try_reserve(self.turn_share()))
            except BudgetExceeded:
                self.close()
                raise

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Reservation]:
        """Hold a call slot and the next turn's share, growing the closing reserve for after the turn.

        Raises:
            BudgetExceeded: the turn and the larger closing reserve do not fit.
        """
        async with self.limits.call(self.turn_share()) as reservation:
            if self.closing is not None:
                problem = self.limits.budget.resize(
                    self.closing, self.closing_share(self.prompt_tokens + self.turn_growth)
                )
                if problem is not None:
                    raise problem
            yield reservation

    def called(self, completion: Completion) -> None:
        """Update the conversation's size from a root call's real usage."""
        usage = completion.usage
        if usage.prompt_tokens > 0:  # the provider's count replaces the estimate (history compaction shrinks it)
            self.prompt_tokens = usage.prompt_tokens + usage.completion_tokens

    def fit_feedback(self, feedback: str) -> str:
        """Cut `feedback` until the closing reserve can grow to hold it, and count it in the conversation.

        The closing request sends the whole conversation, feedback included, so feedback
        the budget has no room for is shortened (its middle is cut) rather than allowed to
        push the closing request past a limit.
        """
        while True:
            size = self.prompt_tokens + estimate_tokens(self.model, feedback) + _MESSAGE_OVERHEAD_TOKENS
            if self.closing is None or self.limits.budget.resize(self.closing, self.closing_share(size)) is None:
                break
            if len(feedback) <= _MIN_FEEDBACK_CHARS:
                break
            limit = max(_MIN_FEEDBACK_CHARS, len(feedback) // 2)
            feedback = truncate_middle(feedback, limit)
        self.prompt_tokens = size
        return feedback

    def use_closing(self) -> Reservation | None:
        """Hand the closing reserve to the closing request (grown to the conversation if it fits)."""
        reservation, self.closing = self.closing, None
        if reservation is None:
            return None
        self.limits.budget.resize(reservation, self.closing_share(self.prompt_tokens))
        return self.limits.budget.use(reservation)

    def close(self) -> None:
        """Give back the closing reserve (the run ended without needing it)."""
        if self.closing is not None:
            self.limits.budget.release(self.closing)
            self.closing = None


def estimate_tokens(model: Any, text: str) -> int:
    """Tokens `text` may take in `model`'s prompt, with a margin.

    Models count tokens with an estimate (about four bytes a token) where no tokenizer is
    at hand; real tokenizers count more for code, numbers and non-English text, so the
    budget reserves a quarter more than the estimate.
    """
    count = getattr(model, "count_tokens", None)
    tokens = len(text.encode("utf-8")) // 3 + 1
    if callable(count):
        try:
            tokens = int(count(text))
        except Exception:  # an estimate is enough here
            pass
    return tokens + tokens // _TOKEN_MARGIN_DIVISOR


def prompt_tokens_of(model: Any, policy: Any, system: str, first: str) -> int:
    """Estimate the first prompt of a run: the policy's messages if it shows them, else its two texts."""
    messages = getattr(policy, "messages", None)
    texts = [system, first]
    if isinstance(messages, list) and messages:
        texts = [str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in messages]
    return sum(estimate_tokens(model, text) + _MESSAGE_OVERHEAD_TOKENS for text in texts)
