"""Helpers of the DSPy module: tools, the REPL factory, the budget note, the prediction, the stream-lookup check."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dspy

from rlm_integrations.core.budget import Budget
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.run import REPLFactory, resolve_repl
from rlm_integrations.core.tools import ToolsArg, check_tools, tool_doc
from rlm_integrations.errors import ModelError, REPLError
from rlm_integrations.repl.protocol import REPL

if TYPE_CHECKING:
    from rlm_integrations.dspy.bridge import DSPyBridge
    from rlm_integrations.dspy.policy import PredictPolicy

__all__ = ["asked_by_stream_lookup", "budget_note", "normalize_tools", "prediction_for", "repl_factory"]


def asked_by_stream_lookup() -> bool:
    """Whether DSPy's stream-listener lookup is on the call stack (it binds listeners to predictors)."""
    from dspy.streaming.streaming_listener import find_predictor_for_stream_listeners

    target = find_predictor_for_stream_listeners.__code__
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            return False
        if frame.f_code is target:
            return True
        frame = frame.f_back
    return False


def normalize_tools(tools: ToolsArg | None) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    """The tools as host functions by name (core's checks and conversions), and each one's doc line."""
    functions = check_tools(tools)
    return functions, {name: tool_doc(function) for name, function in functions.items()}


def repl_factory(repl: str | REPLFactory) -> REPLFactory:
    """The REPL factory for `repl`; the local worker skips the warm pool.

    Each call's worker starts while the root model writes its first cell (see
    `PrestartedREPL`), so a warm pool saves nothing, and its refills compete for CPU with
    the workers of a burst of concurrent calls.
    """
    if repl != "local":
        return resolve_repl(repl)
    from rlm_integrations.repl import LocalREPL

    def local(config: RLMConfig) -> REPL:
        return LocalREPL(**config.repl_options(), pool=False)

    return local


def budget_note(budget: Budget, config: RLMConfig) -> str:
    """What is left of the limits that are set, for the model's `iteration` input (empty when none is)."""
    usage = budget.usage()
    parts: list[str] = []
    if config.max_llm_calls is not None:
        parts.append(f"{max(config.max_llm_calls - usage.calls, 0)} of {config.max_llm_calls} model calls left")
    if config.max_tokens is not None:
        parts.append(f"{max(config.max_tokens - usage.total_tokens, 0):,} tokens left")
    if config.timeout_s is not None:
        parts.append(f"{max(config.timeout_s - budget.elapsed(), 0):.0f} s left")
    return ("Budget: " + ", ".join(parts) + ".") if parts else ""


def prediction_for(result: RLMResult, policy: PredictPolicy, bridge: DSPyBridge) -> dspy.Prediction:
    """The `dspy.Prediction` for a finished run: its outputs, steps, status and usage, and the `RLMResult`.

    A completed run's outputs are what it submitted; a run a limit ended gets `extract`'s
    best effort (None where it found nothing). Outputs go to the `StreamListener`s too.

    Raises:
        the policy's own failure (e.g. the DSPy LM's error), or `REPLError` / `ModelError`,
        when the run ended with status ``"error"``.
    """
    if result.status == "error":
        if policy.failure is not None:
            raise policy.failure
        error = result.error or "the run failed"
        if error.startswith("REPL failure"):
            raise REPLError(error)
        raise ModelError(error, model=policy.model_name)
    if result.status == "completed":
        outputs = dict(result.answer)
        bridge.send_outputs(outputs)  # to `StreamListener`s on the output fields, under `dspy.streamify`
        if policy.steps and not policy.steps[-1].output:
            policy.steps[-1].output = "(outputs submitted)"
    else:
        outputs = dict(policy.extracted or dict.fromkeys(policy.output_fields))
        if policy.extracted is not None:
            bridge.send_outputs(outputs, unless_streamed=True)
    result = result.model_copy(update={"answer": outputs, "error": result.error or policy.extract_error})
    return dspy.Prediction(
        **outputs,
        trajectory=[step.as_dict() for step in policy.steps],
        status=result.status,
        usage=result.usage,
        rlm_result=result,
    )
