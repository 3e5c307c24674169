"""Every model call of a run: the root model's turns, and what cells call on the host.

`ModelCalls` is a mixin of `Engine` (core/engine.py). A root turn is recorded as events,
held to the tree's budgets, and replayed from the call cache when it can be. A cell's
calls are `llm_query` and its batch, `rlm_query` and its batch, tools and helpers: each
sub-call is checked against the
sub-model's window, recorded as events, held to the tree's budgets and concurrency, served
from the call cache when it can be, and a child run (`rlm_query`) runs one level deeper
through `Engine.run`. `register_functions` puts them, the user's tools and the REPL helpers
(core/repl_helpers.py) in a run's REPL.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rlm_integrations.core.budget import Budget, BudgetExceeded, Reservation, Share
from rlm_integrations.core.cache import CachedModel, watch_call
from rlm_integrations.core.calls import ModelCall, current_model_call
from rlm_integrations.core.citations import CiteLog
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import EventBus, LMCallFinished, LMCallStarted, SubCallStarted
from rlm_integrations.core.limits import TreeLimits, estimate_tokens
from rlm_integrations.core.policy import Policy
from rlm_integrations.core.repl_helpers import ReplHelpers
from rlm_integrations.core.run_state import PREVIEW_EVENT_CHARS, RunOutcome, RunState, SubCallRecord, as_text, new_id
from rlm_integrations.core.tools import TOOL_MODEL, recorded_tool
from rlm_integrations.errors import ModelError, UsageError
from rlm_integrations.lm.protocol import Completion, LanguageModel, Message, TokenUsage
from rlm_integrations.repl.protocol import REPL
from rlm_integrations.repl.worker.notebook import CALL_ERROR_KEY
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["ModelCalls", "prompt_limit"]

_OUTPUT_RESERVE_TOKENS = 1_024


class ModelCalls:
    """Mixin for `Engine`: the root model's turns, and every call a cell makes to a model or a child run."""

    root_model: LanguageModel
    sub_model: LanguageModel
    config: RLMConfig
    limits: TreeLimits
    budget: Budget
    bus: EventBus
    tools: dict[str, Callable[..., Any]]
    cites: CiteLog

    if TYPE_CHECKING:

        async def run(
            self,
            query: str,
            context: Any,
            *,
            depth: int = 0,
            parent_id: str | None = None,
            parent_cell_id: str | None = None,
            parent_call_id: str | None = None,
        ) -> RunOutcome:
            """`Engine.run` (a child run is one level deeper)."""
            ...

    def _count_cached(self, reservation: Reservation | None, name: str) -> None:
        """A replayed call: give back anything reserved for it and count it as cached only."""
        if reservation is not None:
            self.budget.release(reservation)
        self.budget.count_cached(name)

    def sub_prompt_chars(self) -> int:
        """The largest prompt (characters) the sub-model takes."""
        window = self.sub_model.context_window
        if not window:
            return 100_000
        return max(100, int(prompt_limit(window) * 3.5))

    async def _sub_call(self, state: RunState, function: str, prompt: Any, *, max_tokens: int | None = None) -> str:
        """One sub-model call; `max_tokens` (a helper's short answers) lowers the configured cap, never raises it."""
        if not isinstance(prompt, str):
            raise TypeError(f"{function}() takes a str prompt, got {type(prompt).__name__}")
        model = self.sub_model
        window = model.context_window
        if window:
            tokens = model.count_tokens(prompt)
            limit = prompt_limit(window)
            if tokens > limit:
                per_chunk = max(100, int(len(prompt) * limit / tokens * 0.9))
                raise ValueError(
                    f"{function}: the prompt is about {tokens:,} tokens ({len(prompt):,} characters) but the "
                    f"sub-model {model.name} accepts {window:,}; nothing was sent. Split the text into chunks "
                    f"of about {per_chunk:,} characters and query each chunk."
                )
        record = self._start_sub_call(state, function, model.name, prompt)
        cap = self.limits.completion_cap(self.config.sub_max_tokens)
        if max_tokens is not None:
            cap = max_tokens if cap is None else min(cap, max_tokens)
        params: dict[str, Any] = {} if cap is None else {"max_tokens": cap}
        need = self.limits.share(estimate_tokens(model, prompt) + 8, cap, self.limits.price(model))
        messages: list[Message] = [{"role": "user", "content": prompt}]
        if isinstance(model, CachedModel):  # a hit takes no call slot and no reservation
            hit = await model.cache.lookup(model.key(messages, params))
            if hit is not None:
                self._count_cached(None, hit.model or model.name)
                record.finish(response=hit.text, usage=TokenUsage(cost_usd=0.0), cached=True)
                return hit.text
        try:
            async with self.limits.call(need) as reservation:  # a call slot, and its share of the budget
                token = current_model_call.set(
                    ModelCall(
                        state.run_id, record.call_id, state.depth, state.iteration, "sub", function, record.cell_id
                    )
                )
                try:
                    with watch_call() as note:
                        completion = await model.acomplete(messages, **params)
                finally:
                    current_model_call.reset(token)
                if note.cached:  # an identical call in flight answered it
                    self._count_cached(reservation, completion.model or model.name)
                else:
                    self.limits.settle(reservation, model, completion, name=completion.model or model.name)
        except Exception as error:
            record.finish(error=str(error))
            if isinstance(error, BudgetExceeded):
                raise RuntimeError(
                    f"budget exhausted ({error}): no more model calls; submit your best answer"
                ) from None
            raise
        record.finish(response=completion.text, usage=completion.usage, cached=note.cached)
        return completion.text

    async def _child_run(self, state: RunState, prompt: Any, context: Any) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"rlm_query() takes a str prompt, got {type(prompt).__name__}")
        if state.depth + 1 > self.config.max_depth:
            text = prompt if context is None else f"{prompt}\n\nContext:\n{as_text(context)}"
            return await self._sub_call(state, "rlm_query", text)
        try:  # a child needs a turn and its closing request: refuse it now if they cannot fit
            self.budget.release(self.budget.try_reserve(Share(calls=2)))
        except BudgetExceeded as error:
            raise RuntimeError(f"budget exhausted ({error}): no more child runs; submit your best answer") from None
        record = self._start_sub_call(state, "rlm_query", self.root_model.name, prompt)
        cell_id = record.cell_id
        try:
            async with self.limits.workers.slot(state.depth + 1):  # bounds child runs (and their workers) tree-wide
                outcome = await self.run(
                    prompt,
                    context,
                    depth=state.depth + 1,
                    parent_id=state.run_id,
                    parent_cell_id=cell_id,
                    parent_call_id=record.call_id,
                )
        except UsageError as error:
            record.finish(error=str(error))
            raise ValueError(str(error)) from None
        answer = as_text(outcome.answer) if outcome.answer is not None else ""
        failure = None if outcome.status == "completed" else f"child run ended with status {outcome.status}"
        record.finish(response=answer, error=failure if not answer else None, child_run_id=outcome.run_id)
        if not answer and failure:
            raise RuntimeError(f"rlm_query: {failure} ({outcome.error or outcome.limit or 'no answer'})")
        return answer

    def _start_sub_call(self, state: RunState, function: str, model: str, prompt: str) -> SubCallRecord:
        record = SubCallRecord(self.bus, state.run_id, new_id("sub-"), state.cell_id, function, model)
        self.bus.emit(
            SubCallStarted(
                run_id=record.run_id,
                call_id=record.call_id,
                cell_id=record.cell_id,
                function=function,
                model=model,
                prompt=truncate_middle(prompt, PREVIEW_EVENT_CHARS),
                prompt_chars=len(prompt),
            )
        )
        return record

    def register_functions(self, repl: REPL, state: RunState) -> None:
        """Put `llm_query`, `rlm_query`, their batches, `cite` and the user's tools in the run's REPL."""

        async def llm_query(prompt: str) -> str:
            return await self._sub_call(state, "llm_query", prompt)

        async def llm_query_batched(prompts_: list[str]) -> list[str | dict[str, str]]:
            return await _gather_each(_as_list(prompts_, "llm_query_batched"), llm_query)

        async def rlm_query(prompt: str, context: Any = None) -> str:
            return await self._child_run(state, prompt, context)

        async def rlm_query_batched(
            prompts_: list[str], contexts: list[Any] | None = None
        ) -> list[str | dict[str, str]]:
            items = _as_list(prompts_, "rlm_query_batched")
            pieces = [None] * len(items) if contexts is None else _as_list(contexts, "rlm_query_batched contexts")
            if len(pieces) != len(items):
                raise ValueError("rlm_query_batched: prompts and contexts must have the same length")
            pairs = list(zip(items, pieces, strict=True))
            return await _gather_each(pairs, lambda pair: rlm_query(pair[0], pair[1]))

        repl.register("llm_query", llm_query)
        repl.register("llm_query_batched", llm_query_batched)
        repl.register("rlm_query", rlm_query)
        repl.register("rlm_query_batched", rlm_query_batched)
        if "cite" not in self.tools:  # a user tool of that name wins
            repl.register("cite", self.cites.function(state.depth))
        for name, tool in self.tools.items():  # each call is recorded as a sub-call (core/tools.py)
            start = functools.partial(self._start_sub_call, state, name, TOOL_MODEL)
            repl.register(name, recorded_tool(name, tool, start))

    def register_helpers(self, repl: REPL, state: RunState, context: Any) -> None:
        """`grep`, `llm_map`, `llm_filter` (core/repl_helpers.py); a user tool of the same name wins."""

        async def sub_call(function: str, prompt: str, max_tokens: int | None = None) -> str:
            return await self._sub_call(state, function, prompt, max_tokens=max_tokens)

        helpers = ReplHelpers(context, sub_call, max_prompt_chars=self.sub_prompt_chars(), notes=state.helpers)
        for name, function in helpers.functions().items():
            if name not in self.tools:
                repl.register(name, function)

    async def _root_call(
        self,
        policy: Policy,
        state: RunState,
        iteration: int,
        *,
        closing: str | None,
        reservation: Reservation | None,
        purpose: str = "step",
        replay: tuple[str, Completion] | None = None,
    ) -> str:
        call_id = new_id("lm-")
        model = policy.model_name
        self.bus.emit(
            LMCallStarted(
                run_id=state.run_id,
                call_id=call_id,
                iteration=iteration,
                model=model,
                purpose="final_answer" if purpose == "final_answer" else "step",
                new_messages=policy.pending_messages()
                + ([{"role": "user", "content": closing}] if closing is not None else []),
            )
        )
        began = time.monotonic()
        token = current_model_call.set(ModelCall(state.run_id, call_id, state.depth, iteration, "root", purpose))
        try:
            with watch_call(replay) as note:
                completion = await policy.step(closing=closing)
        except ModelError as error:
            self.bus.emit(
                LMCallFinished(
                    run_id=state.run_id,
                    call_id=call_id,
                    iteration=iteration,
                    model=model,
                    duration=time.monotonic() - began,
                    error=str(error),
                )
            )
            raise
        finally:
            current_model_call.reset(token)
        name = completion.model or model
        if note.cached:
            self._count_cached(reservation, name)
        else:  # (a turn found in the cache up front runs without a reservation, and is always a hit)
            self.limits.settle(reservation, getattr(policy, "model", self.root_model), completion, name=name)
        if state.meter is not None:
            state.meter.called(completion)
        self.bus.emit(
            LMCallFinished(
                run_id=state.run_id,
                call_id=call_id,
                iteration=iteration,
                model=model,
                text=completion.text,
                usage=completion.usage,
                duration=time.monotonic() - began,
                cached=note.cached,
            )
        )
        return completion.text

    async def _turn_replay(self, policy: Policy) -> tuple[str, Completion] | None:
        """The cached reply to the next turn, if the call cache has it."""
        model = getattr(policy, "model", None)
        next_request = getattr(policy, "next_request", None)
        if not isinstance(model, CachedModel) or next_request is None:
            return None
        messages, params = next_request()
        key = model.key(messages, params)
        hit = await model.cache.lookup(key)
        return None if hit is None else (key, hit)


async def _gather_each(items: list[Any], call: Callable[[Any], Awaitable[str]]) -> list[str | dict[str, str]]:
    async def one(item: Any) -> str | dict[str, str]:
        try:
            return await call(item)
        except Exception as error:  # one failed prompt does not sink the batch
            return {CALL_ERROR_KEY: f"{type(error).__name__}: {error}"}  # a CallError in the REPL

    return list(await asyncio.gather(*(one(item) for item in items)))


def prompt_limit(window: int) -> int:
    """Tokens a sub-prompt may take: the window less room for the reply (at most a quarter of it)."""
    return window - min(_OUTPUT_RESERVE_TOKENS, window // 4)


def _as_list(value: Any, function: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{function}() takes a list, got {type(value).__name__}")
    return list(value)
