"""`rlm_integrations.dspy.Session`: follow-up calls of a DSPy RLM share one REPL and a `dspy.History`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

dspy = pytest.importorskip("dspy")

from rlm_integrations.dspy import RLM, Session  # noqa: E402
from rlm_integrations.dspy.testing import ScriptedDSPyLM, rlm_replies  # noqa: E402
from rlm_integrations.errors import ConfigError, UsageError  # noqa: E402

ORDERS = "\n".join(f"order {i}: {'late' if i % 3 == 0 else 'on time'}" for i in range(30))
SIGNATURE = "context, history: dspy.History, question -> answer"


def asked(last: str, question: str) -> bool:
    """Whether a `generate_code` request is for `question` (the question variable's preview)."""
    return f"Preview:\n{question}" in last


def orders_turn(last: str, number: int) -> str:
    if asked(last, "How many"):
        return (
            "late = [l.split(':')[0] for l in context.splitlines() if l.endswith('late')]\nFINAL(answer=str(len(late)))"
        )
    if asked(last, "Which"):
        return "FINAL(answer=', '.join(late[:3]))"
    return "FINAL(answer=str(len(history['messages'])))"


def test_a_follow_up_reuses_the_variables_of_an_earlier_call() -> None:
    lm = ScriptedDSPyLM(rlm_replies(orders_turn))
    program = RLM(SIGNATURE)
    with dspy.context(lm=lm), Session(program, context=ORDERS) as session:
        first = session(question="How many orders were late?")
        second = session(question="Which were the first three?")
    assert first.answer == "10"
    assert second.answer == "order 0, order 3, order 6"  # `late` was computed by the first call only
    assert second.history.messages == [
        {"question": "How many orders were late?", "answer": "10", "repl_variables": ["late"]},
        {"question": "Which were the first three?", "answer": "order 0, order 3, order 6", "repl_variables": []},
    ]
    assert session.history is second.history
    assert first.history.messages == second.history.messages[:1]
    # the second call's model saw the first turn in the `history` input
    second_request = lm.calls[-1][-1]["content"]
    assert "Variable `history`" in second_request and "'repl_variables': ['late']" in second_request
    assert program.repl == "local"  # the session bound a copy, not the program


def test_without_a_session_the_variables_are_gone() -> None:
    lm = ScriptedDSPyLM(rlm_replies(orders_turn))
    program = RLM(SIGNATURE, max_iterations=2)
    with dspy.context(lm=lm):
        assert program(context=ORDERS, history=dspy.History(messages=[]), question="How many?").answer == "10"
        again = program(context=ORDERS, history=dspy.History(messages=[]), question="Which first?")
    assert again.answer != "order 0, order 3, order 6"  # NameError each turn, then extract's best effort


def test_a_given_history_is_used_and_the_session_continues_from_it() -> None:
    lm = ScriptedDSPyLM(rlm_replies(orders_turn))
    earlier = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    with dspy.context(lm=lm), Session(RLM(SIGNATURE), context=ORDERS) as session:
        result = session(question="Count the history", history=earlier)
        assert result.answer == "2"
        assert [m["question"] for m in session.history.messages] == ["q1", "q2", "Count the history"]
        assert session(question="Count it again").answer == "3"


def test_child_runs_get_their_own_repl() -> None:
    def turn(last: str, number: int) -> str:
        if "`context` is a str, 3 characters" in last:  # the child run, over "abc"
            return "try:\n    secret\n    FINAL('shared')\nexcept NameError:\n    FINAL('fresh')"
        if asked(last, "Delegate"):
            return "secret = 41\nFINAL(answer=rlm_query('look', context='abc'))"
        return "FINAL(answer=str(secret + 1) + ' ' + str(len(context)))"

    lm = ScriptedDSPyLM(rlm_replies(turn))
    with dspy.context(lm=lm), Session(RLM(SIGNATURE), context=ORDERS) as session:
        assert session(question="Delegate it").answer == "fresh"
        assert session(question="And now?").answer == f"42 {len(ORDERS)}"  # the session's REPL kept its context


def test_the_async_form_works_from_separate_event_loops() -> None:
    lm = ScriptedDSPyLM(rlm_replies(orders_turn))
    session = Session(RLM(SIGNATURE), context=ORDERS)

    async def ask(question: str) -> str:
        with dspy.context(lm=lm):  # the caller's DSPy settings reach the session's loop thread
            return str((await session.acall(question=question)).answer)

    try:
        assert asyncio.run(ask("How many orders were late?")) == "10"
        assert asyncio.run(ask("Which were the first three?")) == "order 0, order 3, order 6"
    finally:
        asyncio.run(session.aclose())
    with pytest.raises(UsageError, match="closed"):
        session(question="Again?")


def test_mistakes_are_named() -> None:
    with pytest.raises(ConfigError, match=r"dspy\.History input field"):
        Session(RLM("context, question -> answer"), context="x")
    with pytest.raises(ConfigError, match="not input fields"):
        Session(RLM(SIGNATURE), document="x")
    with pytest.raises(ConfigError, match="not an input field"):
        Session(RLM(SIGNATURE), history_field="chat")
    with pytest.raises(ConfigError, match=r"needs a rlm_integrations\.dspy\.RLM"):
        Session(dspy.Predict(SIGNATURE))
    with Session(RLM(SIGNATURE), context="x") as session:
        with pytest.raises(UsageError, match="fixed for this session"):
            session(context="y", question="q")
        with pytest.raises(ConfigError, match="history must be"):
            session(question="q", history="earlier")


def test_a_saved_session_resumes_with_its_variables_and_history(tmp_path: Path) -> None:
    def turn(last: str, number: int) -> str:
        if asked(last, "How many"):
            return (
                "late = [l.split(':')[0] for l in context.splitlines() if l.endswith('late')]\n"
                "shout = lambda s: s.upper()\nFINAL(answer=str(len(late)))"
            )
        return "FINAL(answer=', '.join(late[:3]) + ' / ' + str(len(history['messages'])))"

    lm = ScriptedDSPyLM(rlm_replies(turn))
    with dspy.context(lm=lm), Session(RLM(SIGNATURE), context=ORDERS) as session:
        session(question="How many orders were late?")
        not_saved = session.save(tmp_path / "orders.rlm")
    assert list(not_saved) == ["shout"]  # a function is not plain data
    resumed = Session.load(tmp_path / "orders.rlm", RLM(SIGNATURE))  # a new program, as in another process
    try:
        assert resumed.inputs == {"context": ORDERS}
        assert resumed.history.messages[0]["repl_variables"] == ["late", "shout"]
        assert list(resumed.not_restored) == ["shout"]
        with dspy.context(lm=lm):
            result = resumed(question="Which were the first three?")
        assert result.answer == "order 0, order 3, order 6 / 1"  # `late` and the history came back
        assert [e.kind for e in resumed.trajectory.events].count("run_start") == 2
    finally:
        resumed.close()


def test_a_core_session_checkpoint_is_not_a_dspy_one(tmp_path: Path) -> None:
    from rlm_integrations import RLM as CoreRLM
    from rlm_integrations.errors import CheckpointError
    from rlm_integrations.lm import ScriptedLM

    with CoreRLM(ScriptedLM(["```repl\nFINAL(1)\n```"])).session("abc") as core:
        core.ask("One?")
        core.save(tmp_path / "core.rlm")
    with pytest.raises(CheckpointError, match="not a DSPy session"):
        Session.load(tmp_path / "core.rlm", RLM(SIGNATURE))
