r"""`RLMSessionRunnable`: RLM sessions for LangChain chat histories and LangGraph threads.

A session (`rlm_integrations.core.session.RLMSession`) keeps one REPL alive across
follow-up questions over the same context. This runnable keeps one session per
conversation, named by the call's config: ``configurable["thread_id"]`` (LangGraph) or
``configurable["session_id"]`` (`RunnableWithMessageHistory`). The conversation itself
stays where LangChain keeps it (a chat message history, a graph's checkpointed state);
the REPL and its variables stay in this process, and with `checkpoint_dir` on disk too.

It takes either

- ``{"question": str, "context": ..., "history": [messages]}`` and returns an `AIMessage`
  (the shape `RunnableWithMessageHistory(runnable, get_history,
  input_messages_key="question", history_messages_key="history")` uses), or a plain
  question string; or
- a LangGraph state ``{"messages": [...], "context": ...}`` and returns the update
  ``{"messages": [AIMessage]}``: the last message is the question, the earlier ones the
  conversation, so the runnable is a graph node whose state a checkpointer keeps.

The context may be given once, at construction (`context=`), or in the input; a session
keeps the context it started with. When a conversation has no live session (the first
question, another process, a session closed to make room), one starts: from its
checkpoint file when `checkpoint_dir` has one (the REPL variables come back), else fresh,
with the earlier questions and answers of the given history in its digest.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config
from pydantic import ConfigDict, Field, PrivateAttr

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import Event
from rlm_integrations.core.rlm import RLM
from rlm_integrations.core.session import LoopThread, RLMSession, SessionTurn
from rlm_integrations.errors import RunFailedError, UsageError
from rlm_integrations.langchain.callbacks import RunTreeTracer
from rlm_integrations.langchain.chat_adapter import RunnableLM, runnable_model_name
from rlm_integrations.langchain.messages import output_message
from rlm_integrations.langchain.schema import FAILURE_STATUSES, trace_view
from rlm_integrations.lm.protocol import LanguageModel

__all__ = ["RLMSessionRunnable"]

T = TypeVar("T")

SESSION_KEYS = ("thread_id", "session_id")
"""The `configurable` entries that name a conversation, in the order they are looked for."""

_UNSET: Any = object()
_ANSWER_CHARS = 400  # an earlier answer in a new session's digest is cut to this, as the session's own are


class _Request:
    """One call, read from its input."""

    def __init__(self, question: str, context: Any, history: list[BaseMessage], as_state: bool) -> None:
        self.question = question
        self.context = context
        self.history = history
        self.as_state = as_state


class RLMSessionRunnable(RunnableSerializable[Any, Any]):
    r"""An RLM with one live session per conversation: follow-up questions reuse the REPL's variables.

    Example:
        ```python
        rlm = RLMSessionRunnable(model=chat_model, context=contract_text)
        config = {"configurable": {"session_id": "alice"}}
        rlm.invoke({"question": "List the parties."}, config)
        rlm.invoke({"question": "Which of them signed last?"}, config)  # same REPL
        ```

    Each question is a full run (`RLMSession.aask`) with its own budgets; the output is an
    `AIMessage` like `RLMChatModel`'s (answer as text, the whole tree's usage in
    `usage_metadata`, the run summary in `response_metadata`), nested under this
    runnable's run in tracers. Sessions run on a private event loop thread, so `invoke`
    and `ainvoke` can be mixed freely, from any thread or loop. Up to `max_sessions` stay
    live; the least recently used one is closed to make room (with `checkpoint_dir` it is
    saved after every question, so it resumes with its variables). `close()` ends them all.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str | None = "RLMSession"
    """The name of the runnable's run (and of its messages)."""
    model: Any
    """The root chat model: any `Runnable` that takes messages."""
    sub_model: Any = None
    """The model behind `llm_query` (default: `model`)."""
    rlm_config: RLMConfig = Field(default_factory=lambda: RLMConfig.model_validate({}))
    """Limits and knobs of every session (budgets count per question)."""
    context: Any = None
    """The context of every conversation; None: each conversation's first input gives it."""
    repl: Any = "local"
    """``"local"``, ``"modal"``, another registered backend name, or a callable returning a REPL."""
    tools: dict[str, Any] | list[Any] = Field(default_factory=dict)
    """Host functions callable from the REPL by name (callables, LangChain tools, `dspy.Tool`s)."""
    session_key: str | None = None
    """The `configurable` entry that names a conversation (default: ``thread_id``, then ``session_id``)."""
    question_key: str = "question"
    """The input key of the question."""
    context_key: str = "context"
    """The input (or state) key of the context."""
    history_key: str = "history"
    """The input key of the earlier messages (`RunnableWithMessageHistory`'s `history_messages_key`)."""
    messages_key: str = "messages"
    """The state key of a LangGraph node's messages."""
    max_sessions: int = Field(16, ge=1)
    """Live sessions (each holds a REPL worker); the least recently used is closed beyond this."""
    checkpoint_dir: Path | None = None
    """Save each session here after every question, and resume from here when it is not live."""
    raise_on_error: bool = True
    """Raise `RunFailedError` when a question's run ends with status "error" or "cancelled"."""
    nostream: bool = False
    """Tag internal model calls `nostream`, so LangGraph's "messages" stream leaves them out."""
    custom_events: bool = True
    """Dispatch each loop event as a LangChain custom event."""
    observers: list[Callable[[Event], None]] = Field(default_factory=list, exclude=True)
    """Engine event observers for every question, next to the LangChain tracer."""

    _sessions: collections.OrderedDict[str, RLMSession] = PrivateAttr(default_factory=collections.OrderedDict)
    _thread: LoopThread | None = PrivateAttr(default=None)
    _guard: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- invoke ---------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Answer the input's question in its conversation's session.

        Returns:
            an `AIMessage`; for a ``{"messages": [...]}`` state, the update ``{"messages": [AIMessage]}``.

        Raises:
            UsageError: no conversation id in the config, no question, no context, or a
                context other than the one the conversation's session holds.
            RunFailedError: the run ended with status "error" or "cancelled" (unless `raise_on_error=False`).
        """
        request = self._read(input)

        def call(_: Any, run_manager: Any, config: RunnableConfig) -> Any:
            return self._loop().run(self._answer(request, config, run_manager))

        return self._call_with_config(cast(Any, call), cast(Any, self._traced(request)), config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async `invoke` (the session's work runs on the runnable's loop thread)."""
        request = self._read(input)

        async def call(_: Any, run_manager: Any, config: RunnableConfig) -> Any:
            return await self._on_loop(self._answer(request, config, run_manager))

        return await self._acall_with_config(cast(Any, call), cast(Any, self._traced(request)), config)

    # -- sessions -------------------------------------------------------------------------------
    def session(self, key: str) -> RLMSession | None:
        """The live session of conversation `key`, if any."""
        return self._sessions.get(key)

    def close_session(self, key: str) -> None:
        """Close conversation `key`'s session (its REPL worker); a later question starts or resumes one."""
        session = self._sessions.pop(key, None)
        if session is not None:
            self._loop().run(session.aclose())

    def close(self) -> None:
        """Close every session and the loop thread (idempotent); the runnable can be used again after."""
        with self._guard:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        sessions = list(self._sessions.values())
        self._sessions.clear()

        async def close_all() -> None:
            await asyncio.gather(*(session.aclose() for session in sessions), return_exceptions=True)

        try:
            thread.run(close_all())
        finally:
            thread.stop()

    def checkpoint_path(self, key: str) -> Path | None:
        """Where conversation `key`'s session is saved (None without `checkpoint_dir`)."""
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.rlm"

    # -- one question ---------------------------------------------------------------------------
    async def _answer(self, request: _Request, config: RunnableConfig, run_manager: Any) -> Any:
        key = self._key(config)
        tracer = RunTreeTracer(run_manager, run_manager.run_id, custom_events=self.custom_events)
        model = RunnableLM(self.model, config=config, router=tracer, nostream=self.nostream)
        sub_model = (
            model
            if self.sub_model is None
            else RunnableLM(self.sub_model, config=config, router=tracer, nostream=self.nostream)
        )
        rlm = RLM(
            cast(LanguageModel, model),
            cast(LanguageModel, sub_model),
            repl=self.repl,
            config=self.rlm_config,
            tools=self.tools,
        )
        session = await self._session_for(key, request, rlm)
        session.rlm = rlm  # this call's models, nested under this call's run
        try:
            result = await session.aask(request.question, observers=[tracer, *self.observers])
        except BaseException as error:
            await tracer.aclose(error)
            raise
        await tracer.aclose()
        path = self.checkpoint_path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            await session.asave(path)
        if self.raise_on_error and result.status in FAILURE_STATUSES:
            raise RunFailedError(
                f"the RLM run failed ({result.status}): {result.error or 'no detail'}; "
                "the partial result is on .result (raise_on_error=False returns the message instead)",
                result=result,
                status=result.status,
                error=result.error,
            )
        message = output_message(result, f"rlm:{runnable_model_name(self.model)}", name=self.name)
        return {self.messages_key: [message]} if request.as_state else message

    async def _session_for(self, key: str, request: _Request, rlm: RLM) -> RLMSession:
        session = self._sessions.get(key)
        if session is not None:
            self._sessions.move_to_end(key)
            given = request.context
            if given is not _UNSET and given is not session.context and given != session.context:
                raise UsageError(
                    f"conversation {key!r} already has a session over another context; "
                    "use a new thread_id / session_id, or close_session() first"
                )
            return session
        path = self.checkpoint_path(key)
        if path is not None and path.exists():
            session = await asyncio.to_thread(RLMSession.load, path, rlm)
        else:
            context = self.context if request.context is _UNSET else request.context
            if context is None:
                raise UsageError(
                    f"no context for conversation {key!r}: give RLMSessionRunnable(context=...) "
                    f"or a {self.context_key!r} entry in the input"
                )
            session = rlm.session(context)
            session.turns = _turns(request.history)
        self._sessions[key] = session
        while len(self._sessions) > self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            await oldest.aclose()
        return session

    def _key(self, config: RunnableConfig) -> str:
        configurable = ensure_config(config).get("configurable", {})
        names = (self.session_key,) if self.session_key else SESSION_KEYS
        for name in names:
            if configurable.get(name) is not None:
                return str(configurable[name])
        raise UsageError(
            f"no conversation id in the config: pass config={{'configurable': {{'{names[0]}': ...}}}} "
            "(LangGraph's thread_id, or RunnableWithMessageHistory's session_id)"
        )

    # -- input ----------------------------------------------------------------------------------
    def _read(self, input: Any) -> _Request:
        if isinstance(input, str):
            return _Request(input, _UNSET, [], as_state=False)
        if not isinstance(input, dict):
            raise UsageError(
                f"RLMSessionRunnable takes a question string, a dict with {self.question_key!r}, or a "
                f"LangGraph state with {self.messages_key!r}; got {type(input).__name__}"
            )
        context = input.get(self.context_key)
        context = _UNSET if context is None else context
        if self.question_key in input:
            question = input[self.question_key]
            history = convert_to_messages(input.get(self.history_key) or [])
            as_state = False
        elif self.messages_key in input:
            messages = convert_to_messages(input[self.messages_key] or [])
            if not messages:
                raise UsageError(f"the state's {self.messages_key!r} is empty: there is no question to answer")
            question, history, as_state = str(messages[-1].text), messages[:-1], True
        else:
            raise UsageError(f"the input has neither {self.question_key!r} nor {self.messages_key!r}")
        if not isinstance(question, str) or not question.strip():
            raise UsageError("the question must be a non-empty string")
        return _Request(question, context, history, as_state)

    def _traced(self, request: _Request) -> dict[str, Any]:
        traced: dict[str, Any] = {"question": request.question}
        if request.context is not _UNSET:
            traced["context"] = trace_view(request.context, 2_000)
        return traced

    # -- the loop thread ------------------------------------------------------------------------
    def _loop(self) -> LoopThread:
        with self._guard:
            if self._thread is None:
                self._thread = LoopThread()
            return self._thread

    async def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop().loop)
        return await asyncio.wrap_future(future)


def _turns(history: Sequence[BaseMessage]) -> list[SessionTurn]:
    """Earlier questions and answers (human message, then AI message) for a new session's digest."""
    turns: list[SessionTurn] = []
    question: str | None = None
    for message in history:
        if isinstance(message, HumanMessage):
            question = str(message.text)
        elif isinstance(message, AIMessage) and question is not None:
            status = str(message.response_metadata.get("rlm_status") or "completed")
            answer = str(message.text)
            if len(answer) > _ANSWER_CHARS:
                answer = answer[: _ANSWER_CHARS - 1] + "\u2026"
            turns.append(SessionTurn(question=question, answer=answer, status=status))
            question = None
    return turns
