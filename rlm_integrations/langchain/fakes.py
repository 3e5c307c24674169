"""`ScriptedChatModel`: a fake LangChain chat model with `usage_metadata`, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from rlm_integrations.lm.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens

__all__ = ["ScriptedChatModel"]

ReplyFunction = Callable[[list[BaseMessage]], str]


class ScriptedChatModel(BaseChatModel):
    r"""A chat model whose replies are scripted: a list played in order, or a function of the messages.

    Unlike LangChain's list-based fakes, a function keeps concurrent runs apart (each
    reply depends only on its own messages), and every reply carries `usage_metadata`
    (estimated from the text) and `model_name`.

    Example:
        ```python
        model = ScriptedChatModel(replies=["```repl\nFINAL(len(context))\n```"], latency_s=0.2)
        ```

    Attributes:
        replies: the replies in order, or a function of the messages returning the reply.
        latency_s: seconds each call waits before replying (slept, or awaited in async calls).
        model_name: reported in `response_metadata` and used for per-model usage.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: list[str] | ReplyFunction
    latency_s: float = 0.0
    model_name: str = "scripted-chat"
    _next: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        if callable(self.replies):
            text = self.replies(list(messages))
        else:
            with self._lock:
                index = self._next
                self._next += 1
            if index >= len(self.replies):
                raise RuntimeError(f"ScriptedChatModel ran out of replies ({len(self.replies)} scripted)")
            text = self.replies[index]
        prompt = sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(str(m.text)) for m in messages)
        completion = estimate_tokens(text)
        usage = UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)
        message = AIMessage(content=text, usage_metadata=usage, response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._reply(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._reply(messages)
