"""`rlm_node`: an RLM as a LangGraph node (state in, state update out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda

from rlm_integrations.core.result import RLMResult
from rlm_integrations.errors import MissingExtraError, UsageError
from rlm_integrations.langchain.runnable import RLMRunnable
from rlm_integrations.langchain.schema import RLMInput, RLMProgress
from rlm_integrations.langchain.tool import answer_text

__all__ = ["rlm_node"]

StreamWriter = Callable[[Any], None]


def rlm_node(
    rlm: RLMRunnable,
    *,
    query_key: str = "query",
    context_key: str | None = "context",
    answer_key: str = "answer",
    output_key: str | None = None,
    messages_key: str | None = None,
    stream_progress: bool = True,
    name: str = "rlm",
) -> RunnableLambda[Any, dict[str, Any]]:
    """Make a LangGraph node that answers the state's query with `rlm`.

    The node reads `state[query_key]` (or, when that is missing and `messages_key` is
    set, the text of the last message) and `state[context_key]`, and returns a state
    update: `{answer_key: answer}`, plus the whole `RLMResult` under `output_key` and
    the answer as an `AIMessage` appended to `messages_key` when those are set. With
    `stream_progress`, each progress chunk is written to LangGraph's custom stream
    (`stream_mode="custom"`) as ``{"rlm": {...}}``.

    Example:
        ```python
        graph = StateGraph(State)
        graph.add_node("rlm", rlm_node(RLMRunnable(model=chat_model, nostream=True), messages_key="messages"))
        ```

    With `nostream=True` on the runnable, `stream_mode="messages"` shows only the answer
    message, not the RLM's internal model calls. For a plain ``MessagesState`` graph the
    `RLMRunnable` itself is a node (it takes ``{"messages": [...]}`` and returns the update).

    Raises:
        MissingExtraError: LangGraph is not installed (checked when the node runs).
        RunFailedError: the run failed (status "error" or "cancelled"), unless the runnable
            has `raise_on_error=False`; a node `retry_policy` applies to it.
    """

    def node(state: Any, config: RunnableConfig) -> dict[str, Any]:
        request = _request(state, query_key, context_key, messages_key)
        writer = _stream_writer() if stream_progress else None
        output: RLMResult | None = None
        for chunk in rlm.stream(request, config):
            output = _route(chunk, writer, output)
        return _update(_finished(output), answer_key, output_key, messages_key, name)

    async def anode(state: Any, config: RunnableConfig) -> dict[str, Any]:
        request = _request(state, query_key, context_key, messages_key)
        writer = _stream_writer() if stream_progress else None
        output: RLMResult | None = None
        async for chunk in rlm.astream(request, config):
            output = _route(chunk, writer, output)
        return _update(_finished(output), answer_key, output_key, messages_key, name)

    return RunnableLambda(node, afunc=anode, name=name)


def _stream_writer() -> StreamWriter | None:
    try:
        from langgraph.config import get_stream_writer
    except ImportError as error:
        raise MissingExtraError("langchain", "rlm_node (LangGraph)") from error
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # not running inside a graph
        return None


def _route(chunk: Any, writer: StreamWriter | None, output: RLMResult | None) -> RLMResult | None:
    if isinstance(chunk, RLMResult):
        return chunk
    if writer is not None and isinstance(chunk, RLMProgress):
        writer({"rlm": chunk.model_dump(mode="json")})
    return output


def _finished(output: RLMResult | None) -> RLMResult:
    if output is None:  # pragma: no cover - the stream always ends with the output
        raise RuntimeError("the RLM stream ended without an output")
    return output


def _get(state: Any, key: str) -> Any:
    if isinstance(state, Mapping):
        return state.get(key)
    return getattr(state, key, None)


def _request(state: Any, query_key: str, context_key: str | None, messages_key: str | None) -> RLMInput:
    query = _get(state, query_key)
    if not query and messages_key is not None:
        messages = _get(state, messages_key) or []
        if messages and isinstance(messages[-1], BaseMessage):
            query = str(messages[-1].text)
    if not isinstance(query, str) or not query.strip():
        raise UsageError(f"the RLM node found no query in the state (key {query_key!r})")
    context = _get(state, context_key) if context_key is not None else None
    return RLMInput(query=query, context=context)


def _update(
    output: RLMResult, answer_key: str, output_key: str | None, messages_key: str | None, name: str
) -> dict[str, Any]:
    update: dict[str, Any] = {answer_key: output.answer}
    if output_key is not None:
        update[output_key] = output
    if messages_key is not None:
        update[messages_key] = [AIMessage(content=answer_text(output), name=name)]
    return update
