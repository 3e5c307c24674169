"""Chat messages to an RLM request and back: the long parts go to the REPL, the answer becomes an `AIMessage`.

The rule (used by `RLMChatModel` and by `RLMRunnable` given a ``{"messages": [...]}`` state):

- a text part longer than `threshold` characters (a message's string content, or one of
  its ``"text"`` blocks) is moved into the REPL;
- so is every message marked ``additional_kwargs={"rlm_context": True}`` (its whole text,
  whatever its size), and every content block ``{"type": "rlm_context", "data": ...}``
  (any JSON-compatible value; ``"text"`` works in place of ``"data"``);
- one moved part becomes `context` itself; several become a list, in the order they
  appear, `context[0]`, `context[1]`, ...;
- each moved part leaves a placeholder in the conversation, e.g.
  ``[document 1: 1,200,000 characters, in the REPL as context[0]]``;
- the question is the conversation with its placeholders: a lone human message as its
  text, anything longer as a transcript (``System: ...``, ``Human: ...``, ``AI: ...``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata

from rlm_integrations.errors import UsageError
from rlm_integrations.langchain.schema import RLMOutput

__all__ = [
    "CONTEXT_BLOCK_TYPE",
    "CONTEXT_FLAG",
    "DEFAULT_THRESHOLD_CHARS",
    "answer_content",
    "output_message",
    "output_of",
    "remember_output",
    "split_messages",
    "summary",
    "usage_metadata",
]

DEFAULT_THRESHOLD_CHARS = 8_000
"""Text parts longer than this many characters go to the REPL."""
CONTEXT_FLAG = "rlm_context"
"""The `additional_kwargs` key that marks a whole message as context."""
CONTEXT_BLOCK_TYPE = "rlm_context"
"""The content-block type that marks one block as context."""

_ROLES = {"system": "System", "human": "Human", "ai": "AI", "tool": "Tool", "function": "Function"}
_KEPT_OUTPUTS = 256
_outputs: OrderedDict[str, RLMOutput] = OrderedDict()
_outputs_lock = threading.Lock()


class _Collector:
    """Gathers the moved parts and hands out their placeholders."""

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def add(self, value: Any) -> str:
        self.parts.append(value)
        return f"\x00{len(self.parts) - 1}\x00"

    def placeholder(self, index: int) -> str:
        value = self.parts[index]
        where = "context" if len(self.parts) == 1 else f"context[{index}]"
        if isinstance(value, str):
            size = f"{len(value):,} characters"
        elif hasattr(value, "__len__"):
            count = len(value)
            size = f"{type(value).__name__} of {count:,} item{'' if count == 1 else 's'}"
        else:
            size = type(value).__name__
        return f"[document {index + 1}: {size}, in the REPL as {where}]"

    def fill(self, text: str) -> str:
        for index in range(len(self.parts)):
            text = text.replace(f"\x00{index}\x00", self.placeholder(index))
        return text

    def context(self) -> Any:
        if not self.parts:
            return None
        return self.parts[0] if len(self.parts) == 1 else list(self.parts)


def split_messages(messages: Sequence[BaseMessage], threshold: int = DEFAULT_THRESHOLD_CHARS) -> tuple[str, Any]:
    """Split a conversation into the question and the context, by the module's rule.

    Returns:
        ``(query, context)``: the conversation with placeholders, and the moved parts
        (None when nothing was moved).

    Raises:
        UsageError: no messages, something that is not a message, or nothing to ask.
    """
    if not messages:
        raise UsageError("RLMChatModel needs at least one message")
    collector = _Collector()
    rendered: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, BaseMessage):
            raise UsageError(f"expected LangChain messages, got {type(message).__name__}")
        if message.additional_kwargs.get(CONTEXT_FLAG):
            text = collector.add(str(message.text))
        else:
            text = _content_text(message.content, threshold, collector)
        rendered.append((message.type, text))
    if len(rendered) == 1 and rendered[0][0] == "human":
        query = rendered[0][1]
    else:
        query = "\n\n".join(f"{_ROLES.get(kind, kind.title())}: {text}" for kind, text in rendered if text)
    query = collector.fill(query).strip()
    if not query:
        raise UsageError("the messages hold no text to ask about")
    return query, collector.context()


def _content_text(content: Any, threshold: int, collector: _Collector) -> str:
    if isinstance(content, str):
        return collector.add(content) if len(content) > threshold else content
    pieces: list[str] = []
    for block in content:
        if isinstance(block, str):
            pieces.append(collector.add(block) if len(block) > threshold else block)
        elif isinstance(block, dict) and block.get("type") == CONTEXT_BLOCK_TYPE:
            if "data" not in block and "text" not in block:
                raise UsageError(f'a {CONTEXT_BLOCK_TYPE!r} content block needs "data" (or "text")')
            pieces.append(collector.add(block["data"] if "data" in block else block["text"]))
        elif isinstance(block, dict) and block.get("type") == "text":
            text = str(block.get("text", ""))
            pieces.append(collector.add(text) if len(text) > threshold else text)
        else:
            kind = block.get("type", "unknown") if isinstance(block, dict) else type(block).__name__
            pieces.append(f"[{kind} block left out: only text reaches the RLM]")
    return "\n".join(pieces)


def answer_content(output: RLMOutput) -> str:
    """The answer as message text: a string as it is, other values as JSON, None as empty."""
    answer = output.answer
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    try:
        return json.dumps(answer, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(answer)


def summary(output: RLMOutput, model_name: str) -> dict[str, Any]:
    """The run's summary for `response_metadata` (JSON data only)."""
    root = output.trajectory.root
    return {
        "model_name": model_name,
        "finish_reason": "stop" if output.status == "completed" else output.status,
        "rlm_status": output.status,
        "rlm_limit": output.limit,
        "rlm_error": output.error,
        "rlm_iterations": output.iterations,
        "rlm_llm_calls": output.usage.calls,
        "rlm_cost_usd": output.usage.cost_usd,
        "rlm_duration_s": round(output.duration, 4),
        "rlm_run_id": root.run_id if root is not None else None,
    }


def usage_metadata(output: RLMOutput) -> UsageMetadata:
    """The whole tree's tokens as LangChain usage metadata."""
    total = output.usage.total
    return UsageMetadata(
        input_tokens=total.prompt_tokens,
        output_tokens=total.completion_tokens,
        total_tokens=total.prompt_tokens + total.completion_tokens,
    )


def output_message(output: RLMOutput, model_name: str, *, name: str | None = None) -> AIMessage:
    """The run as an `AIMessage`: answer, usage of the whole tree, summary; the output is remembered."""
    metadata = summary(output, model_name)
    if metadata["rlm_run_id"] is not None:
        remember_output(metadata["rlm_run_id"], output)
    return AIMessage(
        content=answer_content(output),
        name=name,
        usage_metadata=usage_metadata(output),
        response_metadata=metadata,
    )


def remember_output(run_id: str, output: RLMOutput) -> None:
    """Keep `output` for `output_of` (the latest few hundred runs in this process)."""
    with _outputs_lock:
        _outputs[run_id] = output
        _outputs.move_to_end(run_id)
        while len(_outputs) > _KEPT_OUTPUTS:
            _outputs.popitem(last=False)


def output_of(message: BaseMessage) -> RLMOutput | None:
    """The whole `RLMOutput` (trajectory included) behind a message an RLM returned.

    Looked up by ``response_metadata["rlm_run_id"]`` among the latest 256 runs of this
    process; None for other messages or older runs (save what you need with
    `output.trajectory.save(path)`).
    """
    run_id = message.response_metadata.get("rlm_run_id") if isinstance(message, BaseMessage) else None
    if not isinstance(run_id, str):
        return None
    with _outputs_lock:
        return _outputs.get(run_id)
