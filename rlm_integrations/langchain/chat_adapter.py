"""Any LangChain chat model (any `Runnable` that takes messages) as our `LanguageModel`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.callbacks import AsyncCallbackManager
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, patch_config, set_config_context

from rlm_integrations._sync import run_sync
from rlm_integrations.core.calls import ModelCall, current_model_call
from rlm_integrations.errors import ModelError
from rlm_integrations.lm.protocol import Completion, Message, TokenUsage
from rlm_integrations.lm.tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["CallRouter", "RunnableLM", "runnable_model_name"]


class CallRouter(Protocol):
    """Says where in the run tree a model call belongs (implemented by `RunTreeTracer`)."""

    async def parent_for(self, call: ModelCall | None) -> AsyncCallbackManager | None:
        """The callback manager to nest the call's LLM run under, after its parent run has started."""
        ...


class RunnableLM:
    """A LangChain chat model driven as a `LanguageModel`.

    Any `Runnable` that takes a list of messages works: a chat model, or one wrapped
    with `with_config`, `with_retry`, `bind`, `configurable_fields` or fallbacks.
    Each call is made with an explicit config: the caller's config (so `configurable`
    values reach a configurable model), the callback manager of the run the call belongs
    to (the iteration for root turns, the cell for `llm_query`), and tags and metadata
    that say the call's depth, turn and role. Context variables are not relied on, so
    nesting survives threads and the REPL's worker process.

    Usage comes from the reply's `usage_metadata`; without it, tokens are estimated from
    the text. LangChain reports no prices, so `cost_usd` is None (unknown).

    Args:
        runnable: the chat model.
        name: the name used for per-model usage (default: the model's `model_name`).
        context_window: the model's window in tokens (default: the model's profile, if any).
        config: the config of the LangChain call this model serves.
        router: where to nest each call's run (None: directly under `config`'s callbacks).
        nostream: tag every call `nostream`, hiding it from LangGraph's "messages" stream.
    """

    prefers_worked_example = False
    """A framework chat model gets the general prompt (no worked example)."""

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        *,
        name: str | None = None,
        context_window: int | None = None,
        config: RunnableConfig | None = None,
        router: CallRouter | None = None,
        nostream: bool = False,
    ) -> None:
        self.runnable = runnable
        self.name = name or runnable_model_name(runnable)
        self.context_window = context_window if context_window is not None else _profile_window(runnable)
        self.config = ensure_config(config)
        self.router = router
        self.nostream = nostream

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Call the chat model with `messages`, nested under the run that made the call.

        Raises:
            ModelError: the model (after any retries it was wrapped with) raised.
        """
        call = current_model_call.get()
        config = await self._config_for(call)
        target = self.runnable.bind(**params) if params else self.runnable
        try:
            # Run the call with its own config as the ambient one: wrappers such as `with_config`
            # merge the ambient config into theirs, which would otherwise re-parent the call.
            with set_config_context(config) as context:
                call_task = asyncio.create_task(
                    target.ainvoke(to_langchain_messages(messages), config=config), context=context
                )
                reply = await call_task
        except Exception as error:
            raise ModelError(f"{self.name} failed: {type(error).__name__}: {error}", model=self.name) from error
        return self._completion(reply, messages)

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Blocking form of `acomplete`; also works inside a running event loop."""
        return run_sync(self.acomplete(messages, **params))

    def count_tokens(self, text: str) -> int:
        """An estimate (about one token per four bytes): no tokenizer is downloaded."""
        return estimate_tokens(text)

    async def _config_for(self, call: ModelCall | None) -> RunnableConfig:
        parent = await self.router.parent_for(call) if self.router is not None else None
        config = patch_config(self.config, callbacks=parent) if parent is not None else ensure_config(self.config)
        tags: list[str] = []
        metadata: dict[str, Any] = {}
        if call is not None:
            tags.append(f"rlm:{call.role}")
            metadata = {
                "rlm_role": call.role,
                "rlm_depth": call.depth,
                "rlm_iteration": call.iteration,
                "rlm_purpose": call.purpose,
                "rlm_run_id": call.run_id,
            }
            if call.cell_id is not None:
                metadata["rlm_cell_id"] = call.cell_id
        if self.nostream:
            tags.append("nostream")
        if parent is not None:
            # The parent manager already carries the caller's tags and metadata.
            config["tags"] = tags
            config["metadata"] = metadata
        else:
            config["tags"] = [*config.get("tags", []), *tags]
            config["metadata"] = {**config.get("metadata", {}), **metadata}
            config.pop("run_id", None)  # they name the caller's run, not this call's
            config.pop("run_name", None)
        return config

    def _completion(self, reply: Any, messages: Sequence[Message]) -> Completion:
        text = _text_of(reply)
        model = self.name
        usage = TokenUsage(
            prompt_tokens=estimate_messages_tokens(messages),
            completion_tokens=estimate_tokens(text),
            cost_usd=None,
            calls=1,
        )
        if isinstance(reply, BaseMessage):
            metadata = reply.response_metadata or {}
            model = str(metadata.get("model_name") or metadata.get("model") or model)
            reported = getattr(reply, "usage_metadata", None)
            if reported:
                usage = TokenUsage(
                    prompt_tokens=int(reported.get("input_tokens", 0)),
                    completion_tokens=int(reported.get("output_tokens", 0)),
                    cost_usd=None,
                    calls=1,
                )
        return Completion(text=text, usage=usage, model=model)

    def __repr__(self) -> str:
        return f"RunnableLM(name={self.name!r})"


def to_langchain_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """Our OpenAI-shaped messages as LangChain messages."""
    converted: list[BaseMessage] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            converted.append(SystemMessage(content=content))
        elif role == "assistant":
            converted.append(AIMessage(content=content))
        else:
            converted.append(HumanMessage(content=content))
    return converted


def _text_of(reply: Any) -> str:
    if isinstance(reply, BaseMessage):
        return str(reply.text)
    if isinstance(reply, str):
        return reply
    return str(reply)


def _unwrap(runnable: Any) -> Any:
    """The model inside `with_config` / `with_retry` / `bind` / configurable / fallback wrappers."""
    seen = 0
    while seen < 20:
        seen += 1
        for attribute in ("bound", "default", "runnable"):
            inner = getattr(runnable, attribute, None)
            if isinstance(inner, Runnable):
                runnable = inner
                break
        else:
            return runnable
    return runnable


def runnable_model_name(runnable: Runnable[Any, Any]) -> str:
    """A readable model name for a (possibly wrapped) chat model."""
    inner = _unwrap(runnable)
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(inner, attribute, None)
        if isinstance(value, str) and value:
            return value
    return str(inner.get_name()) if isinstance(inner, Runnable) else type(inner).__name__


def _profile_window(runnable: Runnable[Any, Any]) -> int | None:
    profile = getattr(_unwrap(runnable), "profile", None)
    if isinstance(profile, dict):
        window = profile.get("max_input_tokens")
        if isinstance(window, int) and window > 0:
            return window
    return None
