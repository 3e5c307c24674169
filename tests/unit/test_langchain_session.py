"""`RLMSessionRunnable`: one live RLM session per conversation, for RunnableWithMessageHistory and LangGraph."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NotRequired

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")

from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from rlm_integrations.errors import RunFailedError, UsageError
from rlm_integrations.langchain import RLMSessionRunnable, ScriptedChatModel

ORDERS = "\n".join(f"order {i}: {'late' if i % 3 == 0 else 'on time'}" for i in range(30))


def question_of(messages: list[BaseMessage]) -> str:
    """The question of a root run's first user message (after any digest)."""
    first = next(m.text for m in messages if isinstance(m, HumanMessage))
    return first.split("Question:", 1)[-1] if "Question:" in first else first


def orders_model() -> ScriptedChatModel:
    def reply(messages: list[BaseMessage]) -> str:
        question = question_of(messages)
        if "How many" in question:
            return (
                "```repl\nlate = [l.split(':')[0] for l in context.splitlines() if l.endswith('late')]\n"
                "FINAL(len(late))\n```"
            )
        if "Which" in question:
            return "```repl\nFINAL(', '.join(late[:3]))\n```"
        if "Earlier" in question:  # what does the digest say?
            first = next(m.text for m in messages if isinstance(m, HumanMessage))
            return f"```repl\nFINAL({first.startswith('Earlier in this session')!r})\n```"
        raise RuntimeError("the provider is down")

    return ScriptedChatModel(replies=reply)


def thread(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


@pytest.mark.filterwarnings(
    "ignore::langchain_core._api.deprecation.LangChainDeprecationWarning"
)  # both classes, since 1.6-1.8
def test_runnable_with_message_history_keeps_the_repl_between_questions() -> None:
    histories: dict[str, InMemoryChatMessageHistory] = {}
    rlm = RLMSessionRunnable(model=orders_model(), context=ORDERS)
    chat = RunnableWithMessageHistory(
        rlm,
        lambda session_id: histories.setdefault(session_id, InMemoryChatMessageHistory()),
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": "alice"}}
    try:
        first = chat.invoke({"question": "How many orders were late?"}, config)
        second = chat.invoke({"question": "Which were the first three?"}, config)
    finally:
        rlm.close()
    assert isinstance(first, AIMessage) and first.text == "10"
    assert second.text == "order 0, order 3, order 6"  # `late` from the first question, still in the REPL
    assert second.response_metadata["rlm_status"] == "completed"
    assert [m.text for m in histories["alice"].messages] == [
        "How many orders were late?",
        "10",
        "Which were the first three?",
        "order 0, order 3, order 6",
    ]
    assert rlm.session("alice") is None  # closed


def test_conversations_are_kept_apart_and_sync_and_async_calls_mix() -> None:
    rlm = RLMSessionRunnable(model=orders_model(), context=ORDERS)
    try:
        assert rlm.invoke("How many orders were late?", thread("a")).text == "10"
        other = asyncio.run(rlm.ainvoke("Which were the first three?", thread("b")))
        assert other.text != "order 0, order 3, order 6"  # thread b never computed `late`
        assert asyncio.run(rlm.ainvoke("Which were the first three?", thread("a"))).text.startswith("order 0")
        session = rlm.session("a")
        assert session is not None and [t.question for t in session.turns][-1] == "Which were the first three?"
    finally:
        rlm.close()


def test_a_langgraph_node_with_a_checkpointer() -> None:
    class State(MessagesState):
        context: NotRequired[str]

    rlm = RLMSessionRunnable(model=orders_model())
    graph = StateGraph(State).add_node("rlm", rlm).add_edge(START, "rlm").compile(checkpointer=InMemorySaver())
    try:
        graph.invoke({"messages": [HumanMessage("How many orders were late?")], "context": ORDERS}, thread("t1"))
        state = graph.invoke({"messages": [HumanMessage("Which were the first three?")]}, thread("t1"))
    finally:
        rlm.close()
    assert [m.text for m in state["messages"]] == [
        "How many orders were late?",
        "10",
        "Which were the first three?",
        "order 0, order 3, order 6",
    ]
    assert state["context"] == ORDERS  # kept by the checkpointer, not passed again


def test_a_new_process_resumes_from_the_checkpointed_conversation(tmp_path: Path) -> None:
    class State(MessagesState):
        context: NotRequired[str]

    saver = InMemorySaver()

    def build(rlm: RLMSessionRunnable) -> Any:
        return StateGraph(State).add_node("rlm", rlm).add_edge(START, "rlm").compile(checkpointer=saver)

    first = RLMSessionRunnable(model=orders_model())
    try:
        build(first).invoke({"messages": [HumanMessage("How many orders were late?")], "context": ORDERS}, thread("t"))
    finally:
        first.close()  # the REPL is gone, as in a new process
    # Without a checkpoint dir: the digest comes from the checkpointed messages, the variables are gone.
    fresh = RLMSessionRunnable(model=orders_model(), raise_on_error=False)
    try:
        state = build(fresh).invoke({"messages": [HumanMessage("Earlier questions?")]}, thread("t"))
        assert state["messages"][-1].text == "true"
        session = fresh.session("t")
        assert session is not None and session.turns[0].question == "How many orders were late?"
    finally:
        fresh.close()

    # With a checkpoint dir: the REPL's variables come back too.
    saved = RLMSessionRunnable(model=orders_model(), checkpoint_dir=tmp_path)
    try:
        build(saved).invoke({"messages": [HumanMessage("How many orders were late?")], "context": ORDERS}, thread("u"))
    finally:
        saved.close()
    path = saved.checkpoint_path("u")
    assert path is not None and path.exists()
    resumed = RLMSessionRunnable(model=orders_model(), checkpoint_dir=tmp_path)
    try:
        state = build(resumed).invoke({"messages": [HumanMessage("Which were the first three?")]}, thread("u"))
    finally:
        resumed.close()
    assert state["messages"][-1].text == "order 0, order 3, order 6"


def test_least_recently_used_sessions_are_closed_beyond_max_sessions() -> None:
    rlm = RLMSessionRunnable(model=orders_model(), context=ORDERS, max_sessions=1)
    try:
        rlm.invoke("How many orders were late?", thread("a"))
        rlm.invoke("How many orders were late?", thread("b"))
        assert rlm.session("a") is None and rlm.session("b") is not None
    finally:
        rlm.close()


def test_mistakes_and_failures_are_named() -> None:
    rlm = RLMSessionRunnable(model=orders_model())
    try:
        with pytest.raises(UsageError, match="no conversation id"):
            rlm.invoke({"question": "How many?", "context": ORDERS})
        with pytest.raises(UsageError, match="no context"):
            rlm.invoke("How many?", thread("x"))
        rlm.invoke({"question": "How many orders were late?", "context": ORDERS}, thread("x"))
        with pytest.raises(UsageError, match="another context"):
            rlm.invoke({"question": "How many?", "context": "other"}, thread("x"))
        with pytest.raises(RunFailedError, match="the provider is down") as failed:
            rlm.invoke("Anything else?", thread("x"))
        assert failed.value.status == "error"
        with pytest.raises(UsageError, match="neither"):
            rlm.invoke({"query": "?"}, thread("x"))
    finally:
        rlm.close()


def test_an_async_graph_keeps_the_session_across_separate_event_loops() -> None:
    class State(MessagesState):
        context: NotRequired[str]

    rlm = RLMSessionRunnable(model=orders_model(), context=ORDERS)
    graph = StateGraph(State).add_node("rlm", rlm).add_edge(START, "rlm").compile(checkpointer=InMemorySaver())
    try:
        asyncio.run(graph.ainvoke({"messages": [HumanMessage("How many orders were late?")]}, thread("t")))
        state = asyncio.run(graph.ainvoke({"messages": [HumanMessage("Which were the first three?")]}, thread("t")))
    finally:
        rlm.close()
    assert state["messages"][-1].text == "order 0, order 3, order 6"
