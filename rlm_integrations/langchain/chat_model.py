"""`RLMChatModel`: a Recursive Language Model as a LangChain chat model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import Event
from rlm_integrations.core.result import RLMResult
from rlm_integrations.langchain.chat_adapter import runnable_model_name
from rlm_integrations.langchain.messages import DEFAULT_THRESHOLD_CHARS, output_message, output_of, split_messages
from rlm_integrations.langchain.runnable import RLMRunnable
from rlm_integrations.langchain.schema import RLMInput

__all__ = ["RLMChatModel"]


class RLMChatModel(BaseChatModel):
    r"""A Recursive Language Model that is a LangChain chat model: messages in, an `AIMessage` out.

    Long content never reaches the root model's prompt. Each message part longer than
    `context_threshold_chars`, each message marked ``additional_kwargs={"rlm_context": True}``
    and each ``{"type": "rlm_context", "data": ...}`` content block is loaded into the REPL
    as `context` (several parts: `context[0]`, `context[1]`, ...) and replaced by a
    placeholder such as ``[document 1: 1,200,000 characters, in the REPL as context]``;
    the conversation that is left is the question (see `rlm_integrations.langchain.messages`).

    The reply is an `AIMessage`: the answer as text (JSON for structured answers), the
    whole tree's tokens in `usage_metadata`, and a summary in `response_metadata`
    (``rlm_status``, ``rlm_limit``, ``rlm_error``, ``rlm_iterations``, ``rlm_llm_calls``,
    ``rlm_cost_usd``, ``rlm_duration_s``, ``rlm_run_id``, ``model_name``). The full
    `RLMResult`, trajectory included, is `RLMChatModel.output_of(message)`.

    Example:
        ```python
        chat = RLMChatModel(model=root_chat_model, config=RLMConfig(max_iterations=10))
        chain = prompt | chat | StrOutputParser()
        ```

    A run that fails (status ``"error"`` or ``"cancelled"``) raises `RunFailedError`, with the
    partial `RLMResult` on `.result`; a limit reached is not a failure (the message holds
    the best answer and ``rlm_status`` names the limit). The run goes through `RLMRunnable`,
    so its turns, cells and sub-calls nest under the chat model's run in every tracer.

    The standard chat-model parameters are accepted so that code written for other chat
    models runs: `timeout` becomes the run's wall-clock limit; `temperature`, `max_tokens`,
    `stop` and `max_retries` are recorded for tracing only (set them on the root model).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Runnable[Any, Any]
    """The root chat model: any `Runnable` that takes messages."""
    sub_model: Runnable[Any, Any] | None = None
    """The model behind `llm_query` (default: `model`)."""
    config: RLMConfig = Field(default_factory=lambda: RLMConfig.model_validate({}))
    """The loop's settings: budgets, cell timeout, output bounds, ..."""
    context_threshold_chars: int = Field(DEFAULT_THRESHOLD_CHARS, ge=0)
    """Text parts longer than this many characters go to the REPL as `context`."""
    repl: str | Callable[[RLMConfig], Any] = "local"
    """``"local"`` (the sandboxed worker), ``"modal"``, or a callable returning a REPL."""
    tools: dict[str, Callable[..., Any]] = Field(default_factory=dict)
    """Extra host functions callable from the REPL by name."""
    observers: list[Callable[[Event], None]] = Field(default_factory=list, exclude=True)
    """Engine event observers for every call (e.g. an `OpenTelemetryObserver`)."""
    nostream: bool = False
    """Tag the internal model calls `nostream` (LangGraph's "messages" stream leaves them out)."""
    timeout: float | None = Field(None, gt=0)
    """Wall-clock limit in seconds for each run (None: `config.timeout_s`)."""
    temperature: float | None = None
    """Recorded for tracing only; set the temperature on the root model."""
    max_tokens: int | None = None
    """Recorded for tracing only (the tree's token budget is `config.max_tokens`)."""
    stop: list[str] | None = None
    """Recorded for tracing only: an RLM's answer is not cut at stop sequences."""
    max_retries: int | None = None
    """Recorded only; retries belong on the root model (or `with_retry` on this one)."""
    streaming: bool = False
    """Accepted for compatibility; the answer arrives whole."""

    @property
    def _llm_type(self) -> str:
        return "rlm-chat"

    @property
    def model_name(self) -> str:
        """``"rlm:"`` and the root model's name."""
        return f"rlm:{runnable_model_name(self.model)}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "sub_model": runnable_model_name(self.sub_model) if self.sub_model is not None else None,
            "context_threshold_chars": self.context_threshold_chars,
            "max_iterations": self.config.max_iterations,
            "max_depth": self.config.max_depth,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="rlm",
            ls_model_name=model if isinstance(model, str) else self.model_name,
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    @staticmethod
    def output_of(message: BaseMessage) -> RLMResult | None:
        """The whole `RLMResult` (trajectory included) behind a message this model returned.

        Kept for the latest 256 runs of the process, looked up by
        ``response_metadata["rlm_run_id"]``; None for other messages.
        """
        return output_of(message)

    def as_runnable(self) -> RLMRunnable:
        """The `RLMRunnable` each call runs through (same models, settings and observers)."""
        return RLMRunnable(
            name="RLM",
            model=self.model,
            sub_model=self.sub_model,
            rlm_config=self.config,
            repl=self.repl,
            tools=self.tools,
            observers=self.observers,
            nostream=self.nostream,
            context_threshold_chars=self.context_threshold_chars,
            raise_on_error=True,
        )

    def _request(self, messages: list[BaseMessage]) -> RLMInput:
        query, context = split_messages(messages, self.context_threshold_chars)
        return RLMInput(query=query, context=context, timeout_s=self.timeout)

    def _result(self, output: RLMResult) -> ChatResult:
        message = output_message(output, self.model_name)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": self.model_name, "token_usage": dict(message.usage_metadata or {})},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages)
        return self._result(self.as_runnable().invoke(request, _nested(run_manager)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages)
        return self._result(await self.as_runnable().ainvoke(request, _nested(run_manager)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Stream the reply: one chunk, when the run ends (an RLM's answer exists only at its end)."""
        yield _whole_chunk(self._generate(messages, stop, run_manager, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Async `_stream`: one chunk, when the run ends."""
        yield _whole_chunk(await self._agenerate(messages, stop, run_manager, **kwargs))


def _whole_chunk(result: ChatResult) -> ChatGenerationChunk:
    message = result.generations[0].message
    assert isinstance(message, AIMessage)
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            chunk_position="last",
        )
    )


def _nested(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> RunnableConfig:
    """A config whose callbacks nest the RLM's run under the chat model's run (LLM runs have no `get_child`)."""
    if run_manager is None:
        return {}
    manager = (
        AsyncCallbackManager(handlers=[], parent_run_id=run_manager.run_id)
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    )
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return {"callbacks": manager}
