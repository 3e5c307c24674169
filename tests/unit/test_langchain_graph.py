"""rlm_node in a LangGraph graph: state in, update out; custom and messages stream modes. Real worker REPLs."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langgraph")

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from rlm_integrations.errors import UsageError
from rlm_integrations.langchain import RLMOutput, RLMRunnable, ScriptedChatModel, rlm_node


class State(TypedDict, total=False):
    query: str
    context: list[str]
    answer: Any
    result: RLMOutput
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]


def reply(messages: list[BaseMessage]) -> str:
    """Turn 1 asks the sub-model about each document; turn 2 submits the longest document's index."""
    if messages[0].type == "human":
        return "ok"
    if len(messages) <= 2:
        return "```repl\nchecks = llm_query_batched(['look at: ' + d for d in context])\nprint(checks)\n```"
    return "```repl\nFINAL(max(range(len(context)), key=lambda i: len(context[i])))\n```"


def build(rlm: RLMRunnable, **options: Any) -> Any:
    def prepare(state: State) -> dict[str, Any]:
        return {"log": ["prepared"]}

    graph = StateGraph(State)
    graph.add_node("prepare", prepare)
    graph.add_node("rlm", rlm_node(rlm, **options))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "rlm")
    graph.add_edge("rlm", END)
    return graph.compile()


DOCS = ["short", "the longest document of all", "medium one"]


def test_graph_invoke_returns_the_state_update():
    graph = build(RLMRunnable(model=ScriptedChatModel(replies=reply)), output_key="result")
    state = graph.invoke({"query": "Which document is longest?", "context": DOCS})
    assert state["answer"] == 1
    assert state["log"] == ["prepared"]
    assert state["result"].status == "completed"
    assert state["result"].usage.calls == 2 + len(DOCS)


async def test_graph_custom_stream_mode_carries_progress():
    graph = build(RLMRunnable(model=ScriptedChatModel(replies=reply)))
    custom: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    async for mode, chunk in graph.astream(
        {"query": "Which document is longest?", "context": DOCS}, stream_mode=["custom", "updates"]
    ):
        (custom if mode == "custom" else updates).append(chunk)
    kinds = [c["rlm"]["kind"] for c in custom]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("sub_call_start") == len(DOCS)
    assert all({"kind", "message", "depth", "event"} <= set(c["rlm"]) for c in custom)
    assert updates[-1] == {"rlm": {"answer": 1}}


def test_sync_graph_stream_custom_mode():
    graph = build(RLMRunnable(model=ScriptedChatModel(replies=reply)))
    custom = list(graph.stream({"query": "Which?", "context": DOCS}, stream_mode="custom"))
    assert [c["rlm"]["kind"] for c in custom].count("cell_end") == 2


async def test_messages_stream_shows_only_the_answer_with_nostream():
    hidden = build(RLMRunnable(model=ScriptedChatModel(replies=reply), nostream=True), messages_key="messages")
    seen = [
        (message.content, meta["langgraph_node"])
        async for message, meta in hidden.astream(
            {"messages": [HumanMessage("Which document is longest?")], "context": DOCS}, stream_mode="messages"
        )
    ]
    assert seen == [("1", "rlm")]  # the query came from the last message; the answer is the one message

    shown = build(RLMRunnable(model=ScriptedChatModel(replies=reply)), messages_key="messages")
    everything = [
        message.content
        async for message, _ in shown.astream(
            {"messages": [HumanMessage("Which document is longest?")], "context": DOCS}, stream_mode="messages"
        )
    ]
    assert len(everything) == 2 + len(DOCS) + 1  # root turns, sub-calls, then the answer


def test_missing_query_is_a_usage_error():
    graph = build(RLMRunnable(model=ScriptedChatModel(replies=reply)))
    with pytest.raises(UsageError, match="no query"):
        graph.invoke({"context": DOCS})
