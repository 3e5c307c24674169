"""The RLM loop: one run (and, through `rlm_query`, its children) over a REPL.

An `Engine` holds what a whole recursion tree shares (models, config, budget, event bus,
REPL factory, sub-call slots). `Engine.run` runs one level: load the context, let the
root model write code turn by turn, run it, feed back a bounded summary, and stop at
FINAL or at a limit, always with a result rather than an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from rlm_integrations.core import prompts
from rlm_integrations.core.answer_checks import check_answer, copies_example, example_answer, printed_nothing
from rlm_integrations.core.budget import BudgetExceeded
from rlm_integrations.core.cache import CallCache
from rlm_integrations.core.cell_feedback import cell_feedback
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
    RunFinished,
    RunStarted,
)
from rlm_integrations.core.interrupts import OpenSteps
from rlm_integrations.core.limits import RunMeter, TreeLimits, prompt_tokens_of
from rlm_integrations.core.model_calls import ModelCalls
from rlm_integrations.core.parsing import names_variable, parse_reply
from rlm_integrations.core.policy import ChatPolicy, Policy, QuestionAware
from rlm_integrations.core.pricing import check_prices
from rlm_integrations.core.question_shape import first_step, probe_question, question_shape
from rlm_integrations.core.routing import choose_route
from rlm_integrations.core.run_state import (
    AnswerCheck,
    RunOutcome,
    RunState,
    jsonable,
    new_id,
    status_for,
)
from rlm_integrations.core.tools import check_tools
from rlm_integrations.errors import ContextWindowExceededError, ModelError, REPLError, UsageError, WorkerCrashedError
from rlm_integrations.lm.protocol import LanguageModel
from rlm_integrations.repl.host.client import LOST_VARIABLES_MARKER, lost_variables_note
from rlm_integrations.repl.protocol import REPL, CellResult, FinalAnswer

__all__ = ["PRELUDE_MODULES", "Engine", "RunOutcome"]

REPLFactory = Callable[[RLMConfig], REPL]
PolicyFactory = Callable[[LanguageModel], Policy]

PRELUDE_MODULES = ("re", "json", "math", "collections")
"""Modules imported before the first cell: models often use them without importing them."""
_STEP_NAME = re.compile(r"(\w+)\s*[=(]")
"""A name an opening step assigns or calls ('found = follow(...)')."""


class Engine(ModelCalls):
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
        policy = state.policy or self.policy_factory(self.root_model)
        asked, probed = policy.probe_subject(query, context) if isinstance(policy, QuestionAware) else (query, context)
        probe = await asyncio.to_thread(probe_question, asked, probed) if probed is not None else None
        shape = question_shape(asked, probe)
        state.shape = shape
        state.first_step = first_step(shape, probe)
        # nothing is hidden from a typed-in answer when there is no text to search, the first message
        # shows all of the context, or a session's notes carry the earlier asks' answers
        state.seen_output = bool(notes) or probed is None or (probed is context and _shown_whole(info))
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
            self.register_functions(repl, state)
            self.register_helpers(repl, state, context)
            if isinstance(policy, ChatPolicy):
                policy.configure(config)  # history bounds and compaction (core/history.py)
                policy.shape = shape  # picks the worked example for small models
                state.example_answer = example_answer(shape, context) if policy.example else None
            elif isinstance(policy, QuestionAware):
                policy.orient(probe, shape)
            system = prompts.system_prompt(sub_prompt_chars=self.sub_prompt_chars(), tools=_tool_docs(self.tools))
            described = probe.describe_for(shape) if probe else ""
            opening = await self._opening_step(repl, state, policy)
            first = prompts.first_message(query, info, config.max_iterations, probe=described, opening=opening)
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
            cells: list[CellResult] = []
            for number, code in enumerate(parsed.code_blocks, 1):
                fingerprint = " ".join(code.split())
                repeated = repeated or fingerprint in state.code_seen
                state.code_seen.add(fingerprint)
                cell = await self._run_cell(repl, state, iteration, code)
                cells.append(cell)
                reports.append(cell_feedback(cell, number, len(parsed.code_blocks), self.config.feedback_chars))
                if cell.final is not None:
                    found, answer, problem = check_answer(
                        state, cell.final, code, max_iterations=self.config.max_iterations
                    )
                    if problem:
                        reports.append(problem)
                        rejected = True
                    break
            if not found and not rejected and parsed.has_final:
                found, answer, problem = await self._textual_final(repl, parsed.final_text, parsed.final_variable)
                if found:
                    textual = FinalAnswer(value=answer, variable=parsed.final_variable)
                    found, answer, problem = check_answer(
                        state, textual, None, max_iterations=self.config.max_iterations
                    )
                if problem:
                    reports.append(problem)
            if not found:
                state.seen_output = state.seen_output or bool(parsed.code_blocks)
                if parsed.code_blocks:
                    state.helpers.silent_turn = all(printed_nothing(cell) for cell in cells)
                turns_left = self.config.max_iterations - iteration
                reports.extend(state.helpers.take())
                if repeated:
                    reports.append(prompts.repeated_code_note())
                if state.query:
                    reports.append(prompts.question_reminder(state.query))
                self._observe(policy, state, prompts.next_turn_message("\n\n".join(reports), turns_left))
        self.bus.emit(IterationFinished(run_id=state.run_id, iteration=iteration, duration=time.monotonic() - began))
        return found, answer

    async def _textual_final(self, repl: REPL, text: object, variable: str | None) -> tuple[bool, Any, str | None]:
        if variable is None and names_variable(text):  # FINAL(groups) as text: the variable, if the REPL has it
            with contextlib.suppress(KeyError, WorkerCrashedError):
                return True, await repl.get(str(text)), None
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
        if parsed.has_final and parsed.final_variable is None:
            answer = parsed.final_text
        if (
            parsed.has_final and repl is not None
        ):  # FINAL_VAR or FINAL(name): read from the REPL (not on the direct route)
            found, value, _ = await self._textual_final(repl, parsed.final_text, parsed.final_variable)
            if found:
                answer = value
        if copies_example(state, answer):  # a guess in place of an answer: say so, return none
            return RunOutcome(
                status=status, limit=limit, run_id=state.run_id, error=prompts.copied_example_error(answer)
            )
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

    def _prelude_names(self, state: RunState) -> list[str]:
        taken = set(self.tools) | set(state.variables or {})
        return [name for name in PRELUDE_MODULES if name not in taken]

    async def _run_prelude(self, repl: REPL, state: RunState) -> None:
        """Import the modules models often use without importing (a tool or input of the same name wins)."""
        names = self._prelude_names(state)
        if names:
            await repl.execute("\n".join(f"import {name}" for name in names))

    async def _opening_step(self, repl: REPL, state: RunState, policy: Policy) -> str:
        """Run the question shape's first step for a model shown worked examples; '' when there is none.

        Small models rarely turn the example's call into the one their question needs (`follow`
        from the question's value), so the loop runs it and shows the output in the first message.
        """
        step = state.first_step
        if not (isinstance(policy, ChatPolicy) and policy.example and step and not state.seen_output):
            return ""
        if set(_STEP_NAME.findall(step)) & (set(self.tools) | set(state.variables or {})):
            return ""  # it would call a user's tool or overwrite an input: not the loop's to run
        try:
            async with asyncio.timeout_at(self.limits.step_deadline()):  # timeout_s holds as for a turn's cells
                cell = await self._run_cell(repl, state, 0, step)
        except TimeoutError:
            if self.limits.steps_over() is None:
                raise
            self.open_steps.close(self.bus, state.run_id, f"interrupted: {self.limits.timeout_stop()}")
            return ""  # the loop stops at once for the time limit
        state.code_seen.add(" ".join(step.split()))
        state.seen_output = True
        notes = state.helpers.take()
        return prompts.opening_step(step, "\n\n".join([cell_feedback(cell, 1, 1, self.config.feedback_chars), *notes]))

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


def _tool_docs(tools: dict[str, Callable[..., Any]]) -> dict[str, str]:
    docs: dict[str, str] = {}
    for name, tool in tools.items():
        doc = (tool.__doc__ or "a tool provided by the host.").strip().splitlines()[0]
        docs[name] = doc
    return docs


def _shown_whole(info: ContextInfo | None) -> bool:
    """Whether the first message shows the whole context: a text no longer than its preview."""
    return info is not None and info.type == "str" and len(info.preview) == info.chars
