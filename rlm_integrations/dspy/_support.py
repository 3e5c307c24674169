"""Helpers of the DSPy module: tools, the REPL factory, the budget note, the stream-lookup check."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from rlm_integrations.core.budget import Budget
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.engine import REPLFactory
from rlm_integrations.core.rlm import _resolve_repl
from rlm_integrations.core.tools import ToolsArg, check_tools, tool_doc
from rlm_integrations.repl.protocol import REPL

__all__ = ["asked_by_stream_lookup", "budget_note", "normalize_tools", "repl_factory"]


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
        return _resolve_repl(repl)
    from rlm_integrations.repl.local import LocalREPL

    def local(config: RLMConfig) -> REPL:
        return LocalREPL(
            cell_timeout_s=config.cell_timeout_s,
            memory_limit_mb=config.memory_limit_mb,
            max_output_chars=config.max_output_chars,
            pool=False,
        )

    return local


def budget_note(budget: Budget, config: RLMConfig) -> str:
    usage = budget.usage()
    parts: list[str] = []
    if config.max_llm_calls is not None:
        parts.append(f"{max(config.max_llm_calls - usage.calls, 0)} of {config.max_llm_calls} model calls left")
    if config.max_tokens is not None:
        parts.append(f"{max(config.max_tokens - usage.total_tokens, 0):,} tokens left")
    if config.timeout_s is not None:
        parts.append(f"{max(config.timeout_s - budget.elapsed(), 0):.0f} s left")
    return ("Budget: " + ", ".join(parts) + ".") if parts else ""
