"""The RLM loop: one run (and, through `rlm_query`, its children) over a REPL.

An `Engine` holds what a whole recursion tree shares (models, config, budget, event bus,
REPL factory, sub-call slots). `Engine.run` runs one level: load the context, let the
root model write code turn by turn, run it, feed back a bounded summary, and stop at
FINAL or at a limit, always with a result rather than an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rlm_integrations.core import prompts
from rlm_integrations.core.budget import BudgetExceeded, Reservation, Share
from rlm_integrations.core.cache import CachedModel, CallCache, watch_call
from rlm_integrations.core.calls import ModelCall, current_model_call
from rlm_integrations.core.citations import CiteLog
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.context_info import describe
from rlm_integrations.core.context_size import check_context_size
from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    ContextInfo,
    EventBus,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallStarted,
)
from rlm_integrations.core.interrupts import OpenSteps
from rlm_integrations.core.limits import RunMeter, TreeLimits, estimate_tokens, prompt_tokens_of
from rlm_integrations.core.parsing import parse_reply
from rlm_integrations.core.policy import ChatPolicy, Policy
from rlm_integrations.core.pricing import check_prices
from rlm_integrations.core.question_shape import probe_question, question_shape
from rlm_integrations.core.repl_helpers import ReplHelpers
from rlm_integrations.core.routing import choose_route
from rlm_integrations.core.run_state import (
    PREVIEW_EVENT_CHARS,
    AnswerCheck,
    RunOutcome,
    RunState,
    SubCallRecord,
    as_text,
    jsonable,
    new_id,
    status_for,
)
from rlm_integrations.core.tools import TOOL_MODEL, check_tools, recorded_tool
from rlm_integrations.errors import ContextWindowExceededError, ModelError, REPLError, UsageError, WorkerCrashedError
from rlm_integrations.lm.protocol import Completion, LanguageModel, Message, TokenUsage
from rlm_integrations.repl.host.client import LOST_VARIABLES_MARKER, lost_variables_note
from rlm_integrations.repl.protocol import REPL, CellResult, FinalAnswer
from rlm_integrations.repl.worker.notebook import CALL_ERROR_KEY
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["PRELUDE_MODULES", "Engine", "RunOutcome"]

REPLFactory = Callable[[RLMConfig], REPL]
PolicyFactory = Callable[[LanguageModel], Policy]

PRELUDE_MODULES = ("re", "json", "math", "collections")
"""Modules imported before the first cell: models often use them without importing them."""

_REJECTED = "FINAL was not accepted:"
_OUTPUT_RESERVE_TOKENS = 1_024


class Engine:
    """Everything a recursion tree shares, and the loop that runs each of its levels."""

    def __init__(
        self,
        *,
        root_model: LanguageModel,
        sub_model: LanguageModel,
        config: RLMConfig,
        bus: EventBus,
        repl_factory: REPLFactory,
        policy_factory: PolicyFactory | None = None,
        tools: dict[str, Callable[..., Any]] | None = None,
        cache: CallCache | None = None,
    ) -> None:
        self.root_model = root_model if cache is None else cache.wrap(root_model)  # the call cache (core/cache.py)
        self.sub_model = sub_model if cache is None else cache.wrap(sub_model)
        self.config = config
        check_prices(config, [root_model, sub_model])  # a cost limit needs a price for every model
        self.limits = TreeLimits(config)
        self.budget = self.limits.budget
        self.bus = bus
        self.open_steps = OpenSteps()
        bus.observers.insert(0, self.open_steps)  # sees every start, so a cut-short step gets its end
        self.repl_factory = repl_factory
        self.policy_factory: PolicyFactory = policy_factory or ChatPolicy
        self.tools = check_tools(tools)
        self.cites = CiteLog()  # what `cite(...)` recorded, checked after the run (core/citations.py)

    # -- one level of the tree ----------------------------------------------------------------
    async def run(
        self,
        query: str,
        context: Any,
        *,
        depth: int = 0,
        parent_id: str | None = None,
        parent_cell_id: str | None = None,
        parent_call_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
        policy: Policy | None = None,
        check_answer: AnswerCheck | None = None,
        repl: REPL | None = None,
        notes: str | None = None,
    ) -> RunOutcome:
        """Run the loop for `query` over `context` at `depth`; never raises for run outcomes.

        The last three arguments apply to this run only (child runs never inherit them):
        `variables` are loaded into the REPL next to `context`, once; `policy` replaces
        `policy_factory(root_model)`; `check_answer` sees every answer submitted during
        the loop and may convert it or reject it with feedback (not the closing answer).
        `repl` (a session's): a started REPL that already holds `context`; it is used as is
        and left open. `notes` go before the question in the first message.

        Raises:
            UnsupportedContextError: the context cannot be loaded (before any model call).
            BudgetConfigError: `max_cost_usd` is set and a model has no price (at construction).
            asyncio.CancelledError: the task was cancelled (the REPL is closed first, and every
                step the cancellation cut short gets an end event marked `interrupted`).
        """
        state = RunState(
            run_id=new_id("run-"),
            depth=depth,
            variables=variables,
            policy=policy,
            check_answer=check_answer,
            query=query,
        )
        started = time.monotonic()
        check_context_size(context, self.config.max_context_bytes)  # before any copy of the context
        info = await describe(context, self.config.context_preview_chars)
        self.bus.emit(
            RunStarted(
                run_id=state.run_id,
                parent_id=parent_id,
                parent_cell_id=parent_cell_id,
                parent_call_id=parent_call_id,
                depth=depth,
                query=query,
                context=info,
                model=self.root_model.name,
                sub_model=self.sub_model.name,
            )
        )
        outcome = RunOutcome(run_id=state.run_id, status="error", error="the run did not finish")
        try:
            outcome = await self._run_level(query, context, info, state, repl=repl, notes=notes)
        except REPLError as error:
            outcome = RunOutcome(run_id=state.run_id, status="error", error=f"REPL failure: {error}")
        except ModelError as error:
            outcome = RunOutcome(run_id=state.run_id, status="error", error=f"model failure: {error}")
        except UsageError:
            raise
        except BudgetExceeded as problem:  # not even this run's closing request fits
            outcome = RunOutcome(run_id=state.run_id, status=status_for(problem.limit), limit=problem.limit)
            outcome.error = f"{problem}: no room is left for this run's closing request"
        except asyncio.CancelledError:
            outcome = RunOutcome(run_id=state.run_id, status="cancelled", error="the run was cancelled")
            raise
        except Exception as error:  # a misbehaving model or tool ends the run, never the caller
            outcome = RunOutcome(run_id=state.run_id, status="error", error=f"{type(error).__name__}: {error}")
        finally:
            if state.meter is not None:
                state.meter.close()  # a closing reserve the run did not use goes back to the tree
            self.open_steps.close(self.bus, state.run_id, f"interrupted: {outcome.error or outcome.status}")
            self.bus.emit(
                RunFinished(
                    run_id=state.run_id,
                    status=outcome.status,
                    limit=outcome.limit,
                    answer=jsonable(outcome.answer),
                    duration=time.monotonic() - started,
                    iterations=state.iteration,
                )
            )
        outcome.iterations = state.iteration
        return outcome

    async def _run_level(
        self,
        query: str,
        context: Any,
        info: ContextInfo | None,
        state: RunState,
        *,
        repl: REPL | None = None,
        notes: str | None = None,
    ) -> RunOutcome:
        config = self.config
        probe = await asyncio.to_thread(probe_question, query, context) if context is not None else None
        shape = question_shape(query, probe)
        policy = state.policy or self.policy_factory(self.root_model)
        if (
            repl is None  # a session keeps its REPL: always the loop
            and isinstance(policy, ChatPolicy)
            and choose_route(config.route, query, context, policy.model, shape) == "direct"
        ):
            return await self._answer_directly(policy, state, query, context)
        owned = repl is None
        repl = self.repl_factory(config) if repl is None else repl
        async with repl if owned else contextlib.nullcontext(repl):  # a session's REPL stays open
            if owned:
                await repl.load("context", context)  # None too: the prompt tells the model `context` is None
            for name, value in (state.variables or {}).items():
                await repl.load(name, value)
            self._register_functions(repl, state)
            self._register_helpers(repl, state, context)
            if isinstance(policy, ChatPolicy):
                policy.configure(config)  # history bounds and compaction (core/history.py)
                policy.shape = shape  # picks the worked example for small models
            system = prompts.system_prompt(sub_prompt_chars=self._sub_prompt_chars(), tools=_tool_docs(self.tools))
            first = prompts.first_message(query, info, config.max_iterations, probe=probe.describe() if probe else "")
            if notes:
                first = f"{notes}\n\n{first}"
            policy.begin(system, first)
            self._open_meter(policy, state, prompt_tokens_of(self.root_model, policy, system, first))
            stop: BudgetExceeded | None = None
            for iteration in range(1, config.max_iterations + 1):
                stop = self.limits.steps_over() or self.budget.exhausted()
                if stop is not None:
                    break
                try:
                    async with asyncio.timeout_at(self.limits.step_deadline()):
                        found, answer = await self._iteration(policy, repl, state, iteration)
                except TimeoutError:
                    if self.limits.steps_over() is None:
                        raise
                    stop = self.limits.timeout_stop()
                    self.open_steps.close(self.bus, state.run_id, f"interrupted: {stop}")
                    break
                except BudgetExceeded as exhausted:  # the next turn does not fit beside the closing reserve
                    stop = exhausted
                    break
                except ContextWindowExceededError as error:  # even after compaction: answer on a compacted history
                    stop = BudgetExceeded("context_window", f"the conversation no longer fits the root model ({error})")
                    break
                if found:
                    return RunOutcome(answer=answer, status="completed", run_id=state.run_id)
            else:
                stop = BudgetExceeded("max_iterations", f"all {config.max_iterations} turns are used")
            return await self._close_out(policy, repl, state, stop)

    async def _iteration(self, policy: Policy, repl: REPL, state: RunState, iteration: int) -> tuple[bool, Any]:
        began = time.monotonic()
        assert state.meter is not None
        replay = await self._turn_replay(policy)  # a cache hit takes no call slot and no reservation
        turn = state.meter.turn() if replay is None else contextlib.nullcontext(None)
        async with turn as reservation:  # raises BudgetExceeded before anything starts
            state.iteration = iteration
            self.bus.emit(IterationStarted(run_id=state.run_id, iteration=iteration))
            reply = await self._root_call(
                policy, state, iteration, closing=None, reservation=reservation, replay=replay
            )
        parsed = parse_reply(reply)
        found, answer = False, None
        if not parsed.code_blocks and not parsed.has_final:
            self._observe(policy, state, prompts.missing_code_message())
        else:
            reports: list[str] = []
            rejected = False
            repeated = False
            for number, code in enumerate(parsed.code_blocks, 1):
                fingerprint = " ".join(code.split())
                repeated = repeated or fingerprint in state.code_seen
                state.code_seen.add(fingerprint)
                cell = await self._run_cell(repl, state, iteration, code)
                reports.append(self._feedback(cell, number, len(parsed.code_blocks)))
                if cell.final is not None:
                    found, answer, problem = self._check_answer(state, cell.final)
                    if problem:
                        reports.append(problem)
                        rejected = True
                    break
            if not found and not rejected and parsed.has_final:
                found, answer, problem = await self._textual_final(repl, parsed.final_text, parsed.final_variable)
                if found:
                    found, answer, problem = self._check_answer(
                        state, FinalAnswer(value=answer, variable=parsed.final_variable)
                    )
                if problem:
                    reports.append(problem)
            if not found:
                turns_left = self.config.max_iterations - iteration
                reports.extend(state.helpers.take())
                if repeated:
                    reports.append(prompts.repeated_code_note())
                if state.query:
                    reports.append(prompts.question_reminder(state.query))
                self._observe(policy, state, prompts.next_turn_message("\n\n".join(reports), turns_left))
        self.bus.emit(IterationFinished(run_id=state.run_id, iteration=iteration, duration=time.monotonic() - began))
        return found, answer

    def _check_answer(self, state: RunState, final: FinalAnswer) -> tuple[bool, Any, str | None]:
        doubt = state.helpers.challenge(final.value)  # an empty answer right after an empty search: ask once
        if doubt is not None:
            return False, None, doubt
        if state.check_answer is None:
            return True, final.value, None
        try:
            return True, state.check_answer(final), None
        except ValueError as error:
            return False, None, f"{_REJECTED} {error}"

    async def _textual_final(self, repl: REPL, text: object, variable: str | None) -> tuple[bool, Any, str | None]:
        if variable is None:
            return True, text, None
        try:
            return True, await repl.get(variable), None
        except KeyError:
            return False, None, f"FINAL_VAR({variable}): there is no variable named {variable!r} in the REPL."
        except WorkerCrashedError as error:
            # A value whose repr hangs or a worker that breaks the protocol: the REPL already
            # restarted it; the model hears what happened and may answer again.
            return False, None, f"FINAL_VAR({variable}): the value could not be read ({error})."

    async def _answer_directly(self, policy: ChatPolicy, state: RunState, query: str, context: str) -> RunOutcome:
        """The `direct` route (core/routing.py): one call with the whole context in the prompt, no REPL."""
        policy.configure(self.config)
        policy.example = False
        system = prompts.direct_system()
        first = prompts.direct_message(query, context)
        policy.begin(system, first)
        self._open_meter(policy, state, prompt_tokens_of(self.root_model, policy, system, first))
        outcome = await self._close_out(policy, None, state, None)
        if outcome.error is not None and outcome.answer is None:
            outcome.status = "error"
        return outcome

    async def _close_out(
        self, policy: Policy, repl: REPL | None, state: RunState, stop: BudgetExceeded | None
    ) -> RunOutcome:
        """The closing request after `stop` (a limit), or with no `stop` the direct route's one request."""
        status = "completed" if stop is None else status_for(stop.limit)
        limit = None if stop is None else stop.limit
        reservation = state.meter.use_closing() if state.meter is not None else None
        if reservation is None:
            error = f"{stop or 'a direct answer'}; no closing request was reserved"
            return RunOutcome(status=status, limit=limit, run_id=state.run_id, error=error)
        try:
            closing = prompts.direct_request() if stop is None else prompts.closing_request(str(stop))
            async with asyncio.timeout_at(self.limits.wall_deadline()):  # timeout_s is a wall
                async with self.limits.call(reservation.share, reserved=reservation):
                    reply = await self._root_call(
                        policy, state, state.iteration, closing=closing, purpose="final_answer", reservation=reservation
                    )
        except TimeoutError:
            self.open_steps.close(self.bus, state.run_id, "interrupted: the closing request reached timeout_s")
            status = "timeout" if stop is None else status
            return RunOutcome(status=status, limit=limit, run_id=state.run_id, error="the closing request timed out")
        except (BudgetExceeded, ModelError) as error:
            return RunOutcome(status=status, limit=limit, run_id=state.run_id, error=str(error) or "no answer")
        parsed = parse_reply(reply)
        answer: Any = reply.strip()
        if parsed.has_final:
            if repl is None or parsed.final_variable is None:
                answer = parsed.final_text if parsed.final_variable is None else answer
            else:
                found, value, _ = await self._textual_final(repl, parsed.final_text, parsed.final_variable)
                if found:
                    answer = value
        return RunOutcome(answer=answer, status=status, limit=limit, run_id=state.run_id)

    def _open_meter(self, policy: Policy, state: RunState, prompt_tokens: int) -> None:
        """Reserve this run's closing request (a child also needs room for one turn).

        Raises:
            BudgetExceeded: it does not fit.
        """
        params = getattr(policy, "params", None)
        own = params.get("max_tokens") if isinstance(params, dict) else None
        cap = self.limits.completion_cap(own if isinstance(own, int) else None)
        if cap is not None and own is None and isinstance(params, dict):
            params["max_tokens"] = cap  # a token or cost ceiling holds only if every reply is capped
        model = getattr(policy, "model", self.root_model)
        check_prices(self.config, [model])  # a policy may drive a model other than `root_model`
        meter = RunMeter(self.limits, model, prompt_tokens, cap)
        meter.open(with_turn=state.depth > 0)
        state.meter = meter

    def _observe(self, policy: Policy, state: RunState, feedback: str) -> None:
        """Add feedback, cut to what the budget leaves room for in the closing request."""
        policy.observe(feedback if state.meter is None else state.meter.fit_feedback(feedback))

    # -- model calls ---------------------------------------------------------------------------
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

    def _count_cached(self, reservation: Reservation | None, name: str) -> None:
        """A replayed call: give back anything reserved for it and count it as cached only."""
        if reservation is not None:
            self.budget.release(reservation)
        self.budget.count_cached(name)

    def _sub_prompt_chars(self) -> int:
        window = self.sub_model.context_window
        if not window:
            return 100_000
        return max(100, int(_prompt_limit(window) * 3.5))

    async def _sub_call(self, state: RunState, function: str, prompt: Any, *, max_tokens: int | None = None) -> str:
        """One sub-model call; `max_tokens` (a helper's short answers) lowers the configured cap, never raises it."""
        if not isinstance(prompt, str):
            raise TypeError(f"{function}() takes a str prompt, got {type(prompt).__name__}")
        model = self.sub_model
        window = model.context_window
        if window:
            tokens = model.count_tokens(prompt)
            limit = _prompt_limit(window)
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

    def _prelude_names(self, state: RunState) -> list[str]:
        taken = set(self.tools) | set(state.variables or {})
        return [name for name in PRELUDE_MODULES if name not in taken]

    async def _run_prelude(self, repl: REPL, state: RunState) -> None:
        """Import the modules models often use without importing (a tool or input of the same name wins)."""
        names = self._prelude_names(state)
        if names:
            await repl.execute("\n".join(f"import {name}" for name in names))

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

    # -- the REPL side -----------------------------------------------------------------------
    def _register_functions(self, repl: REPL, state: RunState) -> None:
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

    def _register_helpers(self, repl: REPL, state: RunState, context: Any) -> None:
        """`grep`, `llm_map`, `llm_filter` (core/repl_helpers.py); a user tool of the same name wins."""

        async def sub_call(function: str, prompt: str, max_tokens: int | None = None) -> str:
            return await self._sub_call(state, function, prompt, max_tokens=max_tokens)

        helpers = ReplHelpers(context, sub_call, max_prompt_chars=self._sub_prompt_chars(), notes=state.helpers)
        for name, function in helpers.functions().items():
            if name not in self.tools:
                repl.register(name, function)

    async def _run_cell(self, repl: REPL, state: RunState, iteration: int, code: str) -> CellResult:
        cell_id = new_id("cell-")
        state.cell_id = cell_id
        self.bus.emit(CellStarted(run_id=state.run_id, cell_id=cell_id, iteration=iteration, code=code))
        if not state.prelude_done:
            # Models often use these without importing them; a NameError there wastes a turn. Run
            # just before the first cell, so the worker's start overlaps the first model call.
            state.prelude_done = True
            await self._run_prelude(repl, state)
        cell = await repl.execute(code)
        if cell.restarted:  # a fresh worker: bring the prelude back, and do not report it as lost
            await self._run_prelude(repl, state)
            prelude = set(self._prelude_names(state))
            lost = [name for name in cell.lost_variables if name not in prelude]
            if lost != cell.lost_variables:
                error = (cell.error or "").split(LOST_VARIABLES_MARKER, 1)[0] + lost_variables_note(lost)
                cell = cell.model_copy(update={"lost_variables": lost, "error": error})
        state.cell_id = None
        self.bus.emit(
            CellFinished(
                run_id=state.run_id,
                cell_id=cell_id,
                iteration=iteration,
                stdout=cell.stdout,
                value=cell.value,
                error=cell.error,
                error_type=cell.error_type,
                duration=cell.duration,
                final=cell.final is not None,
                timed_out=cell.timed_out,
                restarted=cell.restarted,
                lost_variables=cell.lost_variables,
            )
        )
        return cell

    def _feedback(self, cell: CellResult, number: int, count: int) -> str:
        limit = self.config.feedback_chars
        title = "Output" if count == 1 else f"Output of block {number}"
        parts: list[str] = []
        if cell.stdout:
            size = f"{cell.output_chars:,} characters" + (", cut" if len(cell.stdout) < cell.output_chars else "")
            shown = truncate_middle(cell.stdout.rstrip("\n"), limit)
            if len(shown) < len(cell.stdout.rstrip("\n")):
                size = f"{cell.output_chars:,} characters, cut to {limit:,}"
            parts.append(f"{title} ({size}):\n{shown}")
        if cell.value is not None:
            parts.append(f"Value: {truncate_middle(cell.value, limit)}")
        if cell.error is not None:
            parts.append(f"Error:\n{truncate_middle(cell.error, limit)}")
        if not parts:
            parts.append(f"{title}: (nothing printed; use print() to see values)")
        return "\n".join(parts)


async def _gather_each(items: list[Any], call: Callable[[Any], Awaitable[str]]) -> list[str | dict[str, str]]:
    async def one(item: Any) -> str | dict[str, str]:
        try:
            return await call(item)
        except Exception as error:  # one failed prompt does not sink the batch
            return {CALL_ERROR_KEY: f"{type(error).__name__}: {error}"}  # a CallError in the REPL

    return list(await asyncio.gather(*(one(item) for item in items)))


def _prompt_limit(window: int) -> int:
    """Tokens a sub-prompt may take: the window less room for the reply (at most a quarter of it)."""
    return window - min(_OUTPUT_RESERVE_TOKENS, window // 4)


def _as_list(value: Any, function: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{function}() takes a list, got {type(value).__name__}")
    return list(value)


def _tool_docs(tools: dict[str, Callable[..., Any]]) -> dict[str, str]:
    docs: dict[str, str] = {}
    for name, tool in tools.items():
        doc = (tool.__doc__ or "a tool provided by the host.").strip().splitlines()[0]
        docs[name] = doc
    return docs
