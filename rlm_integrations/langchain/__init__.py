"""Recursive Language Models for LangChain and LangGraph.

`RLMRunnable` is the RLM as a `Runnable` (LCEL, callbacks, streaming, batching, and a
LangGraph node for ``{"messages": [...]}`` states); `RLMChatModel` is the RLM as a chat
model (long message parts become the REPL's `context`); `RLMTool` is the RLM as a tool
for agents; `rlm_node` makes a LangGraph node with more options.
Needs the ``[langchain]`` extra: ``pip install "rlm-integrations[langchain]"``.
"""

from __future__ import annotations

from rlm_integrations.errors import MissingExtraError

try:
    import langchain_core  # noqa: F401
except ImportError as _import_error:
    raise MissingExtraError("langchain", "rlm_integrations.langchain") from _import_error

from rlm_integrations.errors import RunFailedError
from rlm_integrations.langchain.callbacks import CellError, RunTreeTracer
from rlm_integrations.langchain.chat_adapter import RunnableLM
from rlm_integrations.langchain.chat_model import RLMChatModel
from rlm_integrations.langchain.fakes import ScriptedChatModel
from rlm_integrations.langchain.graph import rlm_node
from rlm_integrations.langchain.runnable import RLMBudgetExhaustedError, RLMRunnable, should_retry
from rlm_integrations.langchain.schema import RLMInput, RLMOutput, RLMProgress
from rlm_integrations.langchain.session import RLMSessionRunnable
from rlm_integrations.langchain.tool import RLMTool, RLMToolInput

__all__ = [
    "CellError",
    "RLMBudgetExhaustedError",
    "RLMChatModel",
    "RLMInput",
    "RLMOutput",
    "RLMProgress",
    "RLMRunnable",
    "RLMSessionRunnable",
    "RLMTool",
    "RLMToolInput",
    "RunFailedError",
    "RunTreeTracer",
    "RunnableLM",
    "ScriptedChatModel",
    "rlm_node",
    "should_retry",
]
