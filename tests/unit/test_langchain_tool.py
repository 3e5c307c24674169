"""RLMTool against langchain-tests' standard tool suites, and as_tool(). Real worker REPLs."""

from __future__ import annotations

from typing import Any, cast

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from rlm_integrations.langchain import RLMRunnable, RLMTool, RLMToolInput, ScriptedChatModel


def count_words(messages: list[BaseMessage]) -> str:
    return "```repl\nFINAL(len(context.split()))\n```"


def make_rlm() -> RLMRunnable:
    return RLMRunnable(model=ScriptedChatModel(replies=count_words), max_iterations=3)


class TestRLMToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return RLMTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"rlm": make_rlm()}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"query": "How many words are there?", "context": "one two three"}


class TestRLMToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return RLMTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"rlm": make_rlm(), "context": "bound data of five words"}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"query": "How many words are there?"}


def test_tool_answers_from_bound_or_given_context():
    tool = RLMTool(rlm=make_rlm(), context="a b c d")
    assert tool.invoke({"query": "count"}) == "4"
    assert tool.invoke({"query": "count", "context": "x y"}) == "2"
    assert tool.args_schema is RLMToolInput
    assert set(cast(Any, tool.tool_call_schema).model_json_schema()["properties"]) == {"query", "context"}


async def test_tool_call_gives_a_tool_message_with_the_output_as_artifact():
    tool = RLMTool(rlm=make_rlm(), context="a b c")
    result = await tool.ainvoke({"name": tool.name, "args": {"query": "count"}, "id": "call-7", "type": "tool_call"})
    assert isinstance(result, ToolMessage)
    assert (result.content, result.tool_call_id) == ("3", "call-7")
    assert result.artifact.status == "completed"


def test_early_stop_is_said_in_the_tool_output():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=lambda m: "```repl\nprint(1)\n```"), max_iterations=1)
    text = RLMTool(rlm=rlm).invoke({"query": "q"})
    assert "stopped early: max_iterations" in text


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
def test_as_tool_gives_the_named_tool_class():
    rlm = make_rlm()
    tool = rlm.as_tool(name="corpus_qa", description="Answers over the corpus.")
    assert isinstance(tool, RLMTool)
    assert (tool.name, tool.description) == ("corpus_qa", "Answers over the corpus.")
    generic = rlm.as_tool(arg_types={"query": str})
    assert not isinstance(generic, RLMTool)


def test_tool_in_a_langgraph_tool_node():
    pytest.importorskip("langgraph")
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    tool = RLMTool(rlm=make_rlm(), context="alpha beta gamma delta epsilon")
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode([tool]))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = {"name": tool.name, "args": {"query": "How many words?"}, "id": "c1", "type": "tool_call"}
    result = graph.compile().invoke({"messages": [AIMessage(content="", tool_calls=[call])]})
    assert result["messages"][-1].content == "5"
