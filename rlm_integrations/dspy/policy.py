"""`PredictPolicy`: the root run's steps, produced by named `dspy.Predict` sub-modules.

The engine asks the policy for each turn; the policy calls the module's `generate_code`
predictor (the one optimizers tune) with its bounded inputs and hands the engine the
code it wrote. When a limit ends the run, the closing step calls `extract` instead, which
writes the typed outputs from what the session found. A reply DSPy cannot parse is asked
again with a correction (`parse_retries` times) rather than ending the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError
from pydantic.fields import FieldInfo

from rlm_integrations.core import prompts
from rlm_integrations.core.parsing import parse_reply
from rlm_integrations.core.question_shape import Probe, Shape
from rlm_integrations.dspy.lm_adapter import CostProbe, usage_from_tracker
from rlm_integrations.dspy.orientation import NOT_PROBED, ProbeSubject, probe_note, worked_demos
from rlm_integrations.dspy.outputs import OutputError, check_outputs, submit_hint
from rlm_integrations.dspy.signatures import GUIDE_PLACEHOLDER
from rlm_integrations.dspy.steps import Step, render_history, strip_fences
from rlm_integrations.errors import ModelError
from rlm_integrations.lm.protocol import Completion, TokenUsage
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["PredictPolicy", "Step", "render_history", "strip_fences"]


class PredictPolicy:
    """Drives one root run with `generate_code` (each turn) and `extract` (only at a limit).

    Args:
        generate: the `generate_code` predictor; its current signature, demos and LM are
            read at every call, so an optimizer's changes apply.
        extract: the `extract` predictor.
        root_lm: the root `dspy.BaseLM` (used for `extract` when it has no LM of its own).
        query: the query the engine was given for this run (its reminders are dropped).
        repl_guide: the REPL's mechanics, the `repl_guide` input.
        variables_info: the description of the input variables.
        output_fields: the user's output fields (for checking what `extract` returns).
        max_iterations: the run's turn limit.
        budget_note: says what is left of the budget, for the `iteration` input.
        history_chars: bound on the `repl_history` input.
        demo_chars: bound on the inputs kept in DSPy's trace (what demos are made of).
        parse_retries: extra attempts when a reply cannot be parsed.
        subject: the question and the input the engine probes (`probe_subject`); None: the
            run's own query and context (a child run).
        worked_examples: offer the worked example for the question's shape as demos while
            `generate` has none of its own (for root LMs that prefer worked examples).

    The engine probes the question before the first turn (`rlm_integrations.core.policy.QuestionAware`);
    the result is the `context_probe` input of every turn.
    """

    def __init__(
        self,
        *,
        generate: dspy.Predict,
        extract: dspy.Predict,
        root_lm: dspy.BaseLM,
        query: str,
        repl_guide: str,
        variables_info: str,
        output_fields: Mapping[str, FieldInfo],
        max_iterations: int,
        budget_note: Callable[[], str],
        history_chars: int,
        demo_chars: int,
        parse_retries: int,
        subject: ProbeSubject | None = None,
        worked_examples: bool = False,
    ) -> None:
        self.generate = generate
        self.extract = extract
        self.root_lm = root_lm
        self.model_name: str = str(getattr(root_lm, "model", type(root_lm).__name__))
        self.query = query
        self.repl_guide = repl_guide
        self.variables_info = variables_info
        self.output_fields = output_fields
        self.max_iterations = max_iterations
        self.budget_note = budget_note
        self.history_chars = history_chars
        self.demo_chars = demo_chars
        self.parse_retries = parse_retries
        self.subject = subject
        self.worked_examples = worked_examples
        self.context_probe = NOT_PROBED
        """The `context_probe` input (set by `orient`)."""
        self.example_demos: list[dspy.Example] = []
        """The worked example's turns, shown while `generate` has no demos (set by `orient`)."""
        self.probe_paragraph = ""
        """The core probe's own paragraph (as the engine's first message has it)."""
        self.steps: list[Step] = []
        self.extracted: dict[str, Any] | None = None
        self.extract_error: str | None = None
        self.failure: BaseException | None = None
        self._pending: list[dict[str, str]] = []

    # -- the QuestionAware protocol (core/policy.py) ----------------------------------------------
    def probe_subject(self, query: str, context: Any) -> tuple[str, Any]:
        """The question the user asked (the input fields' values) and the input to probe; else the run's own."""
        if self.subject is None:
            return query, context
        return self.subject.question or query, self.subject.value

    def orient(self, probe: Probe | None, shape: Shape) -> None:
        """Keep the probe as the `context_probe` input and, if asked for, the shape's worked example as demos."""
        name = "context" if self.subject is None else self.subject.name or "context"
        self.context_probe = probe_note(probe, name, shape)
        self.probe_paragraph = probe.describe_for(shape) if probe is not None else ""
        self.example_demos = []
        if self.worked_examples and probe is not None and name == "context":  # the examples' code reads `context`
            fields = self.subject.question_fields if self.subject is not None else ()
            self.example_demos = worked_demos(
                shape,
                question_field=fields[0] if fields else "question",
                single_output=len(self.output_fields) == 1,
                max_iterations=self.max_iterations,
            )

    # -- the Policy protocol --------------------------------------------------------------------
    def begin(self, system: str, first: str) -> None:
        """Start the run (the chat prompts are not used: the predictor's signature is the prompt)."""
        self.steps = []
        self.extracted = None
        self._pending = []

    async def step(self, *, closing: str | None = None) -> Completion:
        """The next turn's code from `generate_code`, or with `closing`, the outputs from `extract`."""
        self._pending = []
        if closing is not None:
            return await self._extract()
        iteration = len(self.steps) + 1
        inputs = {
            "repl_guide": self.repl_guide,
            "variables_info": self.variables_info,
            "context_probe": self.context_probe,
            "repl_history": render_history(self.steps, self.history_chars),
            "iteration": self._iteration_note(iteration),
        }
        extra: dict[str, Any] = {}
        if self.example_demos and not self.generate.demos:  # demos an optimizer set win
            extra["demos"] = self.example_demos
        prediction, usage, raw = await self._predict(self.generate, inputs, ("reasoning", "code"), **extra)
        if prediction is None:
            salvaged = "\n\n".join(parse_reply(raw).code_blocks)
            self.steps.append(Step(iteration, "(the reply could not be parsed)", salvaged))
            return Completion(text=raw, usage=usage, model=self.model_name)
        code = strip_fences(str(prediction.get("code") or ""))
        reasoning = str(prediction.get("reasoning") or "")
        self.steps.append(Step(iteration, reasoning, code))
        self._compact_trace(prediction)
        text = f"```repl\n{code}\n```" if code.strip() else ""
        return Completion(text=text, usage=usage, model=self.model_name)

    def observe(self, feedback: str) -> None:
        """Record what the last cell did (or a correction) on the last step.

        The chat nudges the engine appends for chat models (turns left, the question
        again) are dropped: the `iteration` input and the instructions carry them here.
        """
        if feedback == prompts.missing_code_message():
            feedback = "(The `code` field was empty. Write Python code for the next cell; submit with FINAL(...).)"
        else:
            turns_left = self.max_iterations - len(self.steps)
            feedback = feedback.removesuffix(prompts.next_turn_message("", turns_left))
            if self.query:
                feedback = feedback.removesuffix(prompts.question_reminder(self.query)).rstrip()
        if self.steps:
            self.steps[-1].output = feedback.strip()
        self._pending.append({"role": "user", "content": feedback})

    def pending_messages(self) -> list[dict[str, str]]:
        """What was observed since the previous step."""
        return [dict(message) for message in self._pending]

    # -- internals ------------------------------------------------------------------------------
    async def _extract(self) -> Completion:
        inputs = {"variables_info": self.variables_info, "repl_history": render_history(self.steps, self.history_chars)}
        lm = self.extract.lm or self.root_lm
        prediction, usage, raw = await self._predict(self.extract, inputs, tuple(self.output_fields), lm=lm)
        if prediction is None:
            self.extract_error = "the extraction reply could not be parsed"
            return Completion(text=raw, usage=usage, model=self.model_name)
        values = {name: prediction.get(name) for name in self.output_fields}
        try:
            values = check_outputs(self.output_fields, values)
        except OutputError as error:
            self.extract_error = str(error)
        self.extracted = values
        return Completion(text=json.dumps(values, default=str), usage=usage, model=self.model_name)

    async def _predict(
        self, predictor: dspy.Predict, inputs: dict[str, str], fields: tuple[str, ...], **extra: Any
    ) -> tuple[dspy.Prediction | None, TokenUsage, str]:
        """Call `predictor`, retrying unparseable replies with a correction in the history."""
        usage = TokenUsage(cost_usd=0.0)
        raw = ""
        call_inputs = dict(inputs)
        for _ in range(self.parse_retries + 1):
            probe = CostProbe()
            try:
                with (
                    dspy.context(callbacks=[*dspy.settings.get("callbacks", []), probe]),
                    dspy.track_usage() as tracker,
                ):
                    prediction = await predictor.acall(**call_inputs, **extra)
            except AdapterParseError as error:
                usage = usage + _priced(
                    usage_from_tracker(tracker.usage_data, prompt="", reply=error.lm_response or ""), probe
                )
                raw = error.lm_response or ""
                correction = (
                    f"(Your previous reply could not be read: it must give the fields {', '.join(fields)} in the "
                    f"required format. It began: {truncate_middle(raw, 300)!r})"
                )
                call_inputs["repl_history"] = f"{inputs['repl_history']}\n\n{correction}".strip()
                continue
            except Exception as error:
                self.failure = error
                raise ModelError(
                    f"{self.model_name}: {type(error).__name__}: {error}", model=self.model_name
                ) from error
            usage = usage + _priced(usage_from_tracker(tracker.usage_data, prompt="", reply=""), probe)
            return prediction, _at_least_one_call(usage), raw
        return None, _at_least_one_call(usage), raw

    def _iteration_note(self, iteration: int) -> str:
        note = f"Turn {iteration} of {self.max_iterations}."
        budget = self.budget_note()
        if budget:
            note += f" {budget}"
        if iteration >= self.max_iterations:
            note += f" This is your last turn: submit now. {submit_hint(self.output_fields)}"
        return note

    def _compact_trace(self, prediction: dspy.Prediction) -> None:
        """Bound the inputs DSPy's trace keeps for this call, so demos do not carry the whole REPL log."""
        trace = dspy.settings.trace
        if trace is None:
            return
        for index in range(len(trace) - 1, max(len(trace) - 50, 0) - 1, -1):
            entry = trace[index]
            if entry[2] is prediction:
                inputs = dict(entry[1])
                inputs["repl_guide"] = GUIDE_PLACEHOLDER
                inputs["variables_info"] = truncate_middle(str(inputs.get("variables_info", "")), self.demo_chars // 2)
                inputs["context_probe"] = truncate_middle(str(inputs.get("context_probe", "")), self.demo_chars // 4)
                inputs["repl_history"] = render_history(self.steps[:-1], self.demo_chars)
                trace[index] = (entry[0], inputs, entry[2])
                return


def _priced(usage: TokenUsage, probe: CostProbe) -> TokenUsage:
    return usage.model_copy(update={"cost_usd": probe.total})


def _at_least_one_call(usage: TokenUsage) -> TokenUsage:
    return usage if usage.calls else usage.model_copy(update={"calls": 1, "cost_usd": None})
