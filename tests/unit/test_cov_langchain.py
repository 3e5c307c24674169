"""The LangChain run tree of a run that cites its context (the citations event reaches the handler)."""

from __future__ import annotations

from typing import Any, cast

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from rlm_integrations.langchain import RLMRunnable

CONTEXT = "Minutes of the meeting. The launch moves to 14 March because the supplier is late. Nothing else."


class Collector(BaseTracer):
    """Keeps every finished root run, as LangSmith would receive them."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


def _walk(run: Run) -> list[Run]:
    return [run, *(r for child in run.child_runs for r in _walk(child))]


def test_a_run_with_citations_keeps_its_run_tree_and_adds_no_run_for_them() -> None:
    code = "cite('The launch moves to 14 March')\nFINAL('14 March')"
    root = FakeMessagesListChatModel(responses=[AIMessage(content=f"```repl\n{code}\n```")])
    collector = Collector()

    out = RLMRunnable(model=root).invoke(
        {"query": "When is the launch?", "context": CONTEXT}, {"callbacks": [collector]}
    )

    assert out.answer == "14 March"
    assert [c.text for c in out.citations] == ["The launch moves to 14 March"]
    assert len(collector.roots) == 1  # the citations found after the run open no run of their own
    tree = collector.roots[0]
    assert [(r.run_type, r.name) for r in _walk(tree)] == [
        ("chain", "RLM"),
        ("chain", "rlm_iteration"),
        ("llm", "FakeMessagesListChatModel"),
        ("tool", "repl"),
    ]
    assert all(r.end_time is not None and r.error is None for r in _walk(tree))
    assert cast(dict[str, Any], tree.outputs)["output"].citations == out.citations
