"""RLMChatModel: a chat model whose long message parts go to the REPL. Also RLMRunnable as a MessagesState node."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import Event
from rlm_integrations.errors import RunFailedError, UsageError
from rlm_integrations.langchain import RLMChatModel, RLMRunnable, ScriptedChatModel
from rlm_integrations.langchain.messages import split_messages

MARKER = "ZEBRA-7731"


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def document(chars: int) -> str:
    """A long text with a marker in the middle (the context preview shows only the start)."""
    half = "lorem ipsum " * (chars // 24)
    return f"{half}{MARKER}{half}"


class Recorder:
    """A scripted root model's reply function that keeps every prompt it received."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.prompts: list[list[BaseMessage]] = []

    def __call__(self, messages: list[BaseMessage]) -> str:
        self.prompts.append(list(messages))
        return block(self.code)

    def seen(self) -> str:
        return "\n".join(str(m.text) for prompt in self.prompts for m in prompt)


class Collector(BaseTracer):
    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


# -- the split rule ---------------------------------------------------------------------------------
def test_a_lone_short_question_is_asked_as_it_is():
    assert split_messages([HumanMessage("What is 2+2?")]) == ("What is 2+2?", None)


def test_a_long_part_becomes_the_context_and_leaves_a_placeholder():
    doc = document(20_000)
    query, context = split_messages([SystemMessage("Be brief."), HumanMessage(doc), HumanMessage("Count it.")])
    assert context == doc
    assert MARKER not in query
    assert query == (
        f"System: Be brief.\n\nHuman: [document 1: {len(doc):,} characters, in the REPL as context]\n\nHuman: Count it."
    )


def test_the_threshold_decides_what_is_long():
    text = "x" * 100
    assert split_messages([HumanMessage(text)], threshold=100) == (text, None)
    query, context = split_messages([HumanMessage(text)], threshold=99)
    assert (query, context) == ("[document 1: 100 characters, in the REPL as context]", text)


def test_marked_messages_and_blocks_become_context_in_order():
    messages = [
        HumanMessage("short but marked", additional_kwargs={"rlm_context": True}),
        HumanMessage(
            content=[
                {"type": "text", "text": "Compare these."},
                {"type": "rlm_context", "data": {"rows": [1, 2, 3]}},
                {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}},
                {"type": "text", "text": "y" * 50},
            ]
        ),
    ]
    query, context = split_messages(messages, threshold=40)
    assert context == ["short but marked", {"rows": [1, 2, 3]}, "y" * 50]
    assert "[document 1: 16 characters, in the REPL as context[0]]" in query
    assert "[document 2: dict of 1 item, in the REPL as context[1]]" in query
    assert "[document 3: 50 characters, in the REPL as context[2]]" in query
    assert "Compare these." in query
    assert "[image_url block left out: only text reaches the RLM]" in query


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "at least one message"),
        (["not a message"], "expected LangChain messages"),
        ([HumanMessage("")], "no text"),
        ([HumanMessage(content=[{"type": "rlm_context"}])], '"data"'),
    ],
)
def test_bad_messages_are_refused_by_name(messages: list[Any], problem: str):
    with pytest.raises(UsageError, match=problem):
        split_messages(messages)


# -- the chat model ---------------------------------------------------------------------------------
def test_prompt_chat_model_parser_chain_keeps_the_document_out_of_the_root_prompt():
    root = Recorder("FINAL(context.count('ZEBRA'))")
    chat = RLMChatModel(model=ScriptedChatModel(replies=root))
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer with a number."), ("human", "{doc}"), ("human", "{q}")]
    )
    chain = prompt | chat | StrOutputParser()
    doc = document(200_000)
    assert chain.invoke({"doc": doc, "q": "How many zebras?"}) == "1"
    seen = root.seen()
    assert MARKER not in seen
    assert len(seen) < 20_000
    assert "How many zebras?" in seen and "in the REPL as context" in seen


def test_the_reply_carries_usage_summary_and_a_reference_to_the_output():
    chat = RLMChatModel(model=ScriptedChatModel(replies=Recorder("FINAL({'n': len(context)})")))
    reply = chat.invoke([HumanMessage("Measure it."), HumanMessage("z" * 9_000)])
    assert isinstance(reply, AIMessage)
    assert json.loads(str(reply.content)) == {"n": 9_000}
    output = RLMChatModel.output_of(reply)
    assert output is not None and output.status == "completed"
    usage = output.usage.total
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == usage.prompt_tokens > 0
    assert reply.usage_metadata["output_tokens"] == usage.completion_tokens > 0
    assert reply.usage_metadata["total_tokens"] == usage.prompt_tokens + usage.completion_tokens
    meta = reply.response_metadata
    assert (meta["rlm_status"], meta["rlm_iterations"], meta["model_name"]) == ("completed", 1, "rlm:scripted-chat")
    assert meta["rlm_run_id"] == cast(Any, output.trajectory.root).run_id
    json.dumps(meta)  # JSON data only: the trajectory stays behind output_of
    assert RLMChatModel.output_of(AIMessage("other")) is None


def test_a_limit_is_an_answer_with_its_status_not_an_error():
    looping = ScriptedChatModel(replies=lambda messages: block("print('working')"))
    reply = RLMChatModel(model=looping, config=RLMConfig(max_iterations=2)).invoke("q")
    assert reply.response_metadata["rlm_status"] == "max_iterations"
    assert reply.response_metadata["finish_reason"] == "max_iterations"


def test_a_failed_run_raises_the_typed_error():
    def down(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("provider down")

    collector = Collector()
    with pytest.raises(RunFailedError) as caught:
        RLMChatModel(model=RunnableLambda(down)).invoke("q", {"callbacks": [collector]})
    assert caught.value.result.status == "error"
    (root,) = collector.roots
    assert root.run_type == "llm" and root.error is not None


def test_with_fallbacks_falls_back_to_another_chat_model():
    def down(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("provider down")

    backup = ScriptedChatModel(replies=lambda messages: "plain answer")
    chain = RLMChatModel(model=RunnableLambda(down)).with_fallbacks([backup]) | StrOutputParser()
    assert chain.invoke("q") == "plain answer"


def test_the_run_tree_nests_under_the_chat_model_run():
    collector = Collector()
    chat = RLMChatModel(model=ScriptedChatModel(replies=Recorder("FINAL(llm_query('hi'))")))
    chat.invoke("q", {"callbacks": [collector]})
    (root,) = collector.roots
    assert (root.run_type, root.name) == ("llm", "RLMChatModel")
    (rlm,) = root.child_runs
    assert (rlm.run_type, rlm.name) == ("chain", "RLM")
    names = {run.name for run in _walk(rlm)}
    assert "scripted-chat" in {run.extra.get("metadata", {}).get("ls_model_name") for run in _walk(rlm) if run.extra}
    assert len(names) > 2


def _walk(run: Run) -> list[Run]:
    return [run, *(r for child in run.child_runs for r in _walk(child))]


def test_observers_and_timeout_pass_through():
    events: list[Event] = []
    chat = RLMChatModel(model=ScriptedChatModel(replies=Recorder("FINAL(1)")), observers=[events.append], timeout=30)
    assert chat.as_runnable().observers == [events.append]
    assert chat._request([HumanMessage("q")]).timeout_s == 30
    chat.invoke("q")
    kinds = [event.kind for event in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"


async def test_ainvoke_is_real_async(monkeypatch: pytest.MonkeyPatch):
    chat = RLMChatModel(model=ScriptedChatModel(replies=Recorder("FINAL(len(context))"), latency_s=0.01))

    def no_sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync path was used")

    monkeypatch.setattr(RLMChatModel, "_generate", no_sync)
    replies = await asyncio.gather(*(chat.ainvoke([HumanMessage("x" * (9_000 + i))]) for i in range(3)))
    assert [r.content for r in replies] == ["9000", "9001", "9002"]


def test_batch_keeps_requests_apart():
    chat = RLMChatModel(model=ScriptedChatModel(replies=Recorder("FINAL(len(context))")), context_threshold_chars=10)
    replies = chat.batch(["a" * 11, "b" * 12, "c" * 13])
    assert [r.content for r in replies] == ["11", "12", "13"]


def test_stream_gives_the_whole_answer_as_one_last_chunk():
    chat = RLMChatModel(model=ScriptedChatModel(replies=Recorder("FINAL('done')")))
    chunks = list(chat.stream("q"))
    assert len(chunks) == 1 and isinstance(chunks[0], AIMessageChunk)
    (chunk,) = chunks
    assert (chunk.content, chunk.chunk_position) == ("done", "last")
    assert chunk.usage_metadata is not None and chunk.usage_metadata["total_tokens"] > 0
    assert chunk.response_metadata["rlm_status"] == "completed"


# -- RLMRunnable as a LangGraph node -----------------------------------------------------------------
def test_rlm_runnable_is_a_messages_state_graph_node():
    langgraph = pytest.importorskip("langgraph.graph")
    root = Recorder("FINAL(context.count('ZEBRA'))")
    graph = langgraph.StateGraph(langgraph.MessagesState)
    graph.add_node("rlm", RLMRunnable(model=ScriptedChatModel(replies=root)))
    graph.add_edge(langgraph.START, "rlm")
    graph.add_edge("rlm", langgraph.END)
    app = graph.compile()
    state = app.invoke({"messages": [HumanMessage(document(50_000)), HumanMessage("How many zebras?")]})
    assert len(state["messages"]) == 3
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage)
    assert (answer.content, answer.name) == ("1", "RLM")
    assert answer.response_metadata["rlm_status"] == "completed"
    assert answer.usage_metadata is not None and answer.usage_metadata["total_tokens"] > 0
    assert MARKER not in root.seen()


async def test_rlm_runnable_node_runs_async_in_a_graph():
    langgraph = pytest.importorskip("langgraph.graph")
    graph = langgraph.StateGraph(langgraph.MessagesState)
    graph.add_node("rlm", RLMRunnable(model=ScriptedChatModel(replies=Recorder("FINAL('hello')"))))
    graph.add_edge(langgraph.START, "rlm")
    app = graph.compile()
    state = await app.ainvoke({"messages": [HumanMessage("Say hello.")]})
    assert state["messages"][-1].content == "hello"


def test_a_messages_state_gives_a_state_update():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=Recorder("FINAL(context)")), context_threshold_chars=5)
    update = rlm.invoke({"messages": [HumanMessage("abcdefgh")], "other_key": 1})
    (message,) = update["messages"]
    assert message.content == "abcdefgh"


async def test_streaming_a_messages_state_ends_with_the_state_update():
    rlm = RLMRunnable(model=ScriptedChatModel(replies=Recorder("FINAL(len(context))")), context_threshold_chars=5)
    chunks = list(rlm.stream({"messages": [HumanMessage("abcdefgh")]}))
    assert [chunk["messages"][0].content for chunk in chunks if isinstance(chunk, dict)] == ["8"]
    assert isinstance(chunks[-1], dict) and len(chunks) > 1
    achunks = [chunk async for chunk in rlm.astream({"messages": [HumanMessage("abcdefghi")]})]
    assert cast(dict[str, Any], achunks[-1])["messages"][0].content == "9"


# -- langchain-tests' standard suite -----------------------------------------------------------------
class TestRLMChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return RLMChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": ScriptedChatModel(replies=lambda messages: block("FINAL('ok')"))}


class TestRLMChatModelIntegration(ChatModelIntegrationTests):
    """The integration suite against a scripted root model (tool calling, structured output and
    multimodal inputs are skipped by the suite itself: the model declares none of them)."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return RLMChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": ScriptedChatModel(replies=lambda messages: block("FINAL('Hello from the RLM')"))}
