"""Budgets shared by the recursion tree: each limit ends the run with a status, never an exception."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_helpers import (
    CLOSING_MARKER,
    block,
    config,
    fake_repls,
    is_closing,
    last_user,
    make_rlm,
    question_of,
    router,
    run,
    turn_of,
)

from rlm_integrations import RLM
from rlm_integrations.core.events import CellFinished, LMCallFinished, LMCallStarted
from rlm_integrations.errors import ModelError
from rlm_integrations.lm import Message, ScriptedLM

EXPLORE = block("print(len(context))")


def explore_then_close(closing: str = "FINAL('best guess')") -> ScriptedLM:
    """A root model that explores forever and answers `closing` to the final-answer request."""
    return ScriptedLM(lambda m: closing if is_closing(m) else EXPLORE, name="root")


async def test_max_iterations_ends_with_a_closing_request_whose_final_is_used() -> None:
    root = explore_then_close()
    rlm, _, _ = make_rlm(root, max_iterations=3)
    result = await run(rlm)
    assert result.status == "max_iterations"
    assert result.limit == "max_iterations"
    assert result.answer == "best guess"
    assert result.iterations == 3
    assert len(root.calls) == 4  # three turns and the closing request
    closing = last_user(root.calls[-1])
    assert CLOSING_MARKER in closing and "3 turns" in closing
    # the closing request is recorded as such, and no cell runs after it
    starts = [e for e in result.trajectory.events if isinstance(e, LMCallStarted)]
    assert [s.purpose for s in starts] == ["step", "step", "step", "final_answer"]
    assert len(list(result.trajectory.iter_events("cell_start"))) == 3


async def test_closing_reply_with_code_is_not_run_and_its_text_is_the_answer() -> None:
    root = ScriptedLM(lambda m: block("FINAL('from code')") if is_closing(m) else EXPLORE, name="root")
    rlm, _, _ = make_rlm(root, max_iterations=1)
    result = await run(rlm)
    assert result.status == "max_iterations"
    assert result.answer == block("FINAL('from code')")  # the reply text: no code runs after the limit
    assert len(list(result.trajectory.iter_events("cell_start"))) == 1


async def test_closing_final_var_reads_the_repl() -> None:
    root = ScriptedLM(
        lambda m: "FINAL_VAR(partial)" if is_closing(m) else block("partial = context.upper()"), name="root"
    )
    rlm, _, _ = make_rlm(root, max_iterations=2)
    result = await run(rlm, context="abc")
    assert (result.status, result.answer) == ("max_iterations", "ABC")


async def test_last_turn_is_announced() -> None:
    root = explore_then_close()
    rlm, _, _ = make_rlm(root, max_iterations=2)
    await run(rlm)
    assert "last turn" in last_user(root.calls[1])


async def test_max_llm_calls() -> None:
    root = explore_then_close()
    rlm, _, _ = make_rlm(root, max_llm_calls=3)
    result = await run(rlm)
    assert result.status == "budget_exhausted"
    assert result.limit == "max_llm_calls"
    assert result.iterations == 2
    assert result.answer == "best guess"
    # the closing request is reserved inside the budget: two turns and the closing request
    assert len(root.calls) == 3
    assert result.usage.calls == 3


async def test_max_llm_calls_counts_sub_calls_and_the_cell_sees_the_refusal() -> None:
    code = (
        "replies = []\n"
        "for i in range(5):\n"
        "    try:\n"
        "        replies.append(llm_query('q' + str(i)))\n"
        "    except RuntimeError as error:\n"
        "        replies.append('refused: ' + str(error))\n"
        "print(replies)"
    )
    root = ScriptedLM(lambda m: "FINAL('closing')" if is_closing(m) else block(code), name="root")
    rlm, _, sub = make_rlm(root, max_llm_calls=4)
    result = await run(rlm)
    assert result.status == "budget_exhausted" and result.limit == "max_llm_calls"
    assert len(sub.calls) == 2  # 1 root turn + 2 sub-calls + the reserved closing request = 4
    (cell,) = [e for e in result.trajectory.events if isinstance(e, CellFinished)]
    assert cell.stdout.count("refused: ") == 3 and "all 4 model calls are used" in cell.stdout
    assert result.usage.calls == 4
    assert result.iterations == 1


async def test_max_tokens() -> None:
    root = explore_then_close()
    rlm, _, _ = make_rlm(root, max_tokens=3_500)
    result = await run(rlm)
    assert result.status == "budget_exhausted"
    assert result.limit == "max_tokens"
    assert result.answer == "best guess"
    finished = [e for e in result.trajectory.events if isinstance(e, LMCallFinished)]
    spent = [e.usage.total_tokens for e in finished if e.usage is not None]
    # a ceiling: the turns and the closing request together stay within it
    assert result.usage.total_tokens == sum(spent) <= 3_500
    assert 1 <= result.iterations < 20


async def test_max_cost_usd() -> None:
    root = ScriptedLM(lambda m: "FINAL('cheap')" if is_closing(m) else EXPLORE, name="root", cost_per_call=0.01)
    rlm, _, _ = make_rlm(root, max_cost_usd=0.025)
    result = await run(rlm)
    assert result.status == "budget_exhausted"
    assert result.limit == "max_cost_usd"
    assert result.iterations == 1  # 0.01 for the turn; a second turn would leave no room for the closing request
    assert result.answer == "cheap"
    assert result.usage.cost_usd == pytest.approx(0.02)
    assert result.usage.cost_complete


async def test_timeout() -> None:
    root = ScriptedLM(lambda m: "FINAL('in time')" if is_closing(m) else EXPLORE, name="root", latency_s=0.1)
    rlm, _, _ = make_rlm(root, timeout_s=1.0)  # turns until 0.8 s; the last 0.2 s are kept for the closing request
    started = time.monotonic()
    result = await run(rlm)
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert result.limit == "timeout_s"
    assert result.answer == "in time"
    assert 2 <= result.iterations <= 8
    assert elapsed < 1.0 + 0.3


async def test_timeout_bounds_a_single_slow_model_call() -> None:
    # The slow step is cut at the step deadline; the closing request fits in the slice kept for it.
    async def reply(messages: list[Message]) -> str:
        if is_closing(messages):
            return "FINAL('late')"
        await asyncio.sleep(1.2)
        return EXPLORE

    rlm, _, _ = make_rlm(ScriptedLM(reply, name="root"), timeout_s=0.5)
    started = time.monotonic()
    result = await run(rlm)
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert result.answer == "late"
    assert elapsed < 0.5 + 0.3  # not 1.2 s: the slow step does not run to its end


async def test_children_spend_the_parents_budget() -> None:
    root = ScriptedLM(
        router(
            {
                "Parent?": [block("sub_answer = rlm_query('Child?', context='abc')\nprint(sub_answer)"), EXPLORE],
                "Child?": [EXPLORE],  # the child explores until the shared budget runs out
            },
            closing="FINAL('closing answer')",
        ),
        name="root",
    )
    rlm, _, _ = make_rlm(root, max_llm_calls=5)
    result = await run(rlm, "Parent?")
    assert result.status == "budget_exhausted" and result.limit == "max_llm_calls"
    _, child = result.trajectory.runs()
    assert child.end is not None and child.end.status == "budget_exhausted"
    # the child's calls used up the parent's budget: the parent got no second turn
    assert result.iterations == 1
    assert child.end.iterations == 2  # 1 parent turn + 2 child turns + 2 reserved closing requests = 5
    # every call is counted once in the total, closing requests included: never past the limit
    assert result.usage.calls == len(root.calls) == 5


async def test_child_budget_exhaustion_reaches_the_parents_cell_as_an_answer() -> None:
    root = ScriptedLM(
        router(
            {
                "Parent?": [block("got = rlm_query('Child?')\nprint(got)")],
                "Child?": [EXPLORE],
            },
            closing="FINAL('partial from closing')",
        ),
        name="root",
    )
    rlm, _, _ = make_rlm(root, max_llm_calls=4)  # parent: 1 turn + closing; child: 1 turn + closing
    result = await run(rlm, "Parent?")
    (parent_cell,) = [e for e in result.trajectory.events if isinstance(e, CellFinished) and e.stdout.startswith("p")]
    assert parent_cell.stdout == "partial from closing\n"


async def test_unknown_prices_are_reported_as_unknown_never_zero() -> None:
    root = ScriptedLM([block("print(llm_query('x'))"), block("FINAL(1)")], name="root", cost_per_call=None)
    sub = ScriptedLM(lambda m: "y", name="sub", cost_per_call=None)
    rlm, _, _ = make_rlm(root, sub)
    result = await run(rlm)
    assert result.status == "completed"
    assert result.usage.cost_complete is False
    assert result.usage.cost_usd is None
    assert result.usage.by_model["root"].cost_usd is None
    assert result.usage.by_model["sub"].cost_usd is None


async def test_partly_unknown_prices_give_a_lower_bound() -> None:
    root = ScriptedLM([block("print(llm_query('x'))"), block("FINAL(1)")], name="root", cost_per_call=0.5)
    sub = ScriptedLM(lambda m: "y", name="sub", cost_per_call=None)
    rlm, _, _ = make_rlm(root, sub)
    result = await run(rlm)
    assert result.usage.cost_complete is False
    assert result.usage.cost_usd == pytest.approx(1.0)  # the known part only
    assert result.usage.by_model["root"].cost_usd == pytest.approx(1.0)
    assert result.usage.by_model["sub"].cost_usd is None


async def test_known_prices_are_complete() -> None:
    rlm, _, _ = make_rlm(ScriptedLM([block("FINAL(1)")], name="root", cost_per_call=0.25))
    result = await run(rlm)
    assert result.usage.cost_complete is True
    assert result.usage.cost_usd == pytest.approx(0.25)


async def test_root_model_error_ends_with_status_error() -> None:
    root = ScriptedLM([EXPLORE, ModelError("provider is down for maintenance", model="root")], name="root")
    rlm, _, _ = make_rlm(root)
    result = await run(rlm)
    assert result.status == "error"
    assert result.error is not None and "provider is down for maintenance" in result.error
    assert result.answer is None
    assert result.iterations == 2
    end = result.trajectory.runs()[0].end
    assert end is not None and end.status == "error"
    failed = [e for e in result.trajectory.events if isinstance(e, LMCallFinished) and e.error]
    assert len(failed) == 1


async def test_root_model_error_on_the_closing_request_keeps_the_limit_status() -> None:
    def reply(messages: list[Message]) -> str:
        if is_closing(messages):
            raise ModelError("no more", model="root")
        return EXPLORE

    rlm, _, _ = make_rlm(ScriptedLM(reply, name="root"), max_iterations=1)
    result = await run(rlm)
    assert (result.status, result.limit) == ("max_iterations", "max_iterations")
    assert result.error is not None and "no more" in result.error


async def test_child_model_error_reaches_the_parent_cell_not_the_caller() -> None:
    def reply(messages: list[Message]) -> str:
        if question_of(messages) == "Child?":
            raise ModelError("child model broke", model="root")
        if turn_of(messages) == 0:
            return block(
                "try:\n"
                "    r = rlm_query('Child?')\n"
                "except RuntimeError as error:\n"
                "    r = 'child failed: ' + str(error)"
            )
        return block("FINAL(r)")

    rlm = RLM(ScriptedLM(reply, name="root"), config=config(), repl=fake_repls)
    result = await run(rlm, "Parent?")
    assert result.status == "completed"
    assert result.answer.startswith("child failed: ") and "child model broke" in result.answer
