"""End-to-end runs of the RLM loop: scripted models driving an in-process FakeREPL.

Tests about the worker itself (cell timeouts, restarts, kills on cancel) use the real
sandboxed `LocalREPL` (``repl="local"`` or `RecordingREPLs`) and are marked slow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

import psutil
import pytest
from engine_helpers import (
    RecordingREPLs,
    block,
    config,
    conversation,
    fake_repls,
    is_closing,
    kinds,
    last_user,
    make_rlm,
    question_of,
    router,
    run,
    turn_of,
)
from pydantic import ValidationError

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.core import prompts
from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    Event,
    IterationFinished,
    IterationStarted,
    JSONLWriter,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.core.policy import ChatPolicy
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.core.worked_examples import example_for
from rlm_integrations.errors import ConfigError, UnsupportedContextError, UsageError
from rlm_integrations.lm import Message, ScriptedLM

PRELUDE_MODULES = ("re", "json", "math", "collections")
"""Imported by the engine's prelude cell before the first turn."""

# -- the basic loop ------------------------------------------------------------------------------


async def test_multi_step_exploration_ends_with_final_in_code() -> None:
    context = "alpha beta gamma beta delta beta"
    rlm, root, _ = make_rlm(
        [
            block("print(len(context))\nprint(context[:11])"),
            block("words = context.split()\nprint(len(words))"),
            block("import collections\ncounts = collections.Counter(words)\nprint(counts.most_common(1))"),
            block("FINAL(counts.most_common(1)[0][0])"),
        ]
    )
    result = await run(rlm, "Which word is most common?", context)

    assert isinstance(result, RLMResult)
    assert result.status == "completed" and result.ok
    assert result.answer == "beta"
    assert result.iterations == 4
    assert len(root.calls) == 4
    # the root model never sees the context itself, only its description
    first = conversation(root.calls[0])[0]
    assert first["role"] == "user"
    assert context in first["content"]  # short context: the preview is all of it
    assert "Question: Which word is most common?" in first["content"]
    # each turn's feedback shows what the previous cell printed; variables persist between cells
    assert f"{len(context)}\nalpha beta" in last_user(root.calls[1])
    assert "6" in last_user(root.calls[2])
    assert "[('beta', 3)]" in last_user(root.calls[3])
    assert result.usage.calls == 4
    assert result.duration > 0


async def test_final_var_in_code() -> None:
    rlm, _, _ = make_rlm([block("result = [w.upper() for w in context.split()]\nFINAL_VAR('result')")])
    result = await run(rlm, context="a b c")
    assert result.status == "completed"
    assert result.answer == ["A", "B", "C"]


async def test_final_var_as_text_reads_the_repl_variable() -> None:
    rlm, root, _ = make_rlm([block("answer = context.split()[1]\nprint(answer)"), "I have it.\nFINAL_VAR(answer)"])
    result = await run(rlm, context="hello Paris world")
    assert result.status == "completed"
    assert result.answer == "Paris"
    assert len(root.calls) == 2


async def test_final_var_as_text_after_code_in_the_same_reply() -> None:
    """The paper's form: compute in a block, then name the variable in the same reply."""
    rlm, root, _ = make_rlm([block("total = 6 * 7") + "\nFINAL_VAR(total)"])
    result = await run(rlm)
    assert (result.status, result.answer, len(root.calls)) == ("completed", 42, 1)


async def test_final_var_as_text_for_a_missing_variable_is_reported_and_the_run_goes_on() -> None:
    rlm, root, _ = make_rlm(["FINAL_VAR(nope)", block("FINAL('recovered')")])
    result = await run(rlm)
    assert result.answer == "recovered"
    assert result.iterations == 2
    assert "no variable named 'nope'" in last_user(root.calls[1])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [('FINAL("Paris")', "Paris"), ("FINAL(42)", 42), ("The answer:\nFINAL([1, 'a'])", [1, "a"])],
)
async def test_final_as_text_with_a_literal(reply: str, expected: Any) -> None:
    rlm, _, _ = make_rlm([reply])
    result = await run(rlm)
    assert result.status == "completed"
    assert result.answer == expected
    assert type(result.answer) is type(expected)


@pytest.mark.parametrize(
    "literal",
    [
        "7",
        "-3",
        "2.5",
        "True",
        "None",
        "'text'",
        "[1, 'two', [3.5, None]]",
        "{'a': [1, 2], 'b': {'c': None}}",
        "(1, (2, 'x'))",
        "{1, 2, 3}",
    ],
)
async def test_typed_final_values_survive_exactly(literal: str) -> None:
    expected = eval(literal)
    rlm, _, _ = make_rlm([block(f"value = {literal}\nFINAL(value)")])
    result = await run(rlm)
    assert result.status == "completed"
    assert result.answer == expected
    assert type(result.answer) is type(expected)
    if isinstance(expected, tuple):
        assert type(result.answer[1]) is tuple


async def test_a_non_data_final_value_arrives_as_its_repr() -> None:
    rlm, _, _ = make_rlm([block("FINAL(range(3))")])
    result = await run(rlm)
    assert result.answer == "range(0, 3)"


async def test_runtime_error_is_fed_back_with_its_line_and_the_model_recovers() -> None:
    rlm, root, _ = make_rlm(
        [
            block("base = len(context)\nratio = base / 0\nprint('not reached')"),
            block("FINAL(base + 1)"),
        ]
    )
    result = await run(rlm, context="abcd")
    assert result.status == "completed"
    assert result.answer == 5  # `base` survived the failing cell
    feedback = last_user(root.calls[1])
    assert "ZeroDivisionError" in feedback
    assert "line 2" in feedback and "ratio = base / 0" in feedback
    assert "not reached" not in feedback
    (failed, final) = list(result.trajectory.iter_events("cell_end"))
    assert isinstance(failed, CellFinished)
    assert failed.error_type == "ZeroDivisionError" and not failed.final
    assert isinstance(final, CellFinished) and final.final


async def test_syntax_error_is_fed_back() -> None:
    rlm, root, _ = make_rlm([block("x = (1,"), block("FINAL('ok')")])
    result = await run(rlm)
    assert result.answer == "ok"
    assert "SyntaxError" in last_user(root.calls[1])


async def test_reply_without_code_or_final_gets_the_correction_and_counts_as_an_iteration() -> None:
    rlm, root, _ = make_rlm(["Let me think about the context first.", block("FINAL('done')")])
    result = await run(rlm)
    assert result.status == "completed" and result.answer == "done"
    assert result.iterations == 2
    assert last_user(root.calls[1]) == prompts.missing_code_message()
    # no cell ran in the first iteration
    cells = [e for e in result.trajectory.events if isinstance(e, CellStarted)]
    assert [c.iteration for c in cells] == [2]


async def test_replies_without_code_use_up_iterations() -> None:
    rlm, root, _ = make_rlm(["hmm", "still thinking", "FINAL('closing')"], max_iterations=2)
    result = await run(rlm)
    assert result.status == "max_iterations"
    assert result.iterations == 2
    assert result.answer == "closing"
    assert len(root.calls) == 3


async def test_python_fences_work() -> None:
    rlm, root, _ = make_rlm([block("x = len(context)\nprint(x)", "python"), block("FINAL(x * 2)", "py")])
    result = await run(rlm, context="abc")
    assert result.answer == 6
    assert "3" in last_user(root.calls[1])


async def test_a_mention_of_final_in_prose_does_not_end_the_run() -> None:
    """'Then I will call FINAL(answer)' beside a code block is a plan, not an answer."""
    rlm, _, _ = make_rlm(
        [block("n = len(context)\nprint(n)") + "\nOnce I see the size I will call FINAL(answer).", block("FINAL(n)")]
    )
    result = await run(rlm, context="abcdef")
    assert result.answer == 6
    assert result.iterations == 2


async def test_a_non_python_fence_does_not_swallow_the_code_block() -> None:
    rlm, _, _ = make_rlm(["The data looks like:\n```text\nalpha beta\n```\nNow:\n" + block("FINAL(len(context))")])
    result = await run(rlm, context="abcdef")
    assert (result.status, result.answer, result.iterations) == ("completed", 6, 1)


async def test_multiple_blocks_run_in_order_and_stop_at_the_first_final() -> None:
    reply = "\n".join(
        [
            block("a = 20"),
            block("b = a + 1\nFINAL(b * 2)"),
            block("llm_query('must not be sent')\nFINAL('too late')"),
        ]
    )
    rlm, _, sub = make_rlm([reply])
    result = await run(rlm)
    assert result.answer == 42
    assert sub.calls == []
    assert len(list(result.trajectory.iter_events("cell_start"))) == 2


async def test_feedback_of_several_blocks_is_labelled_per_block() -> None:
    rlm, root, _ = make_rlm([block("print('one')") + "\n" + block("print('two')"), block("FINAL(1)")])
    await run(rlm)
    feedback = last_user(root.calls[1])
    assert "Output of block 1" in feedback and "Output of block 2" in feedback
    assert feedback.index("one") < feedback.index("two")


async def test_long_output_is_cut_in_the_feedback() -> None:
    rlm, root, _ = make_rlm(
        [block("print('H' * 100 + 'x' * 50000 + 'T' * 100)"), block("FINAL(1)")], feedback_chars=1000
    )
    await run(rlm)
    feedback = last_user(root.calls[1])
    assert len(feedback) < 2500
    assert "HHHH" in feedback and "TTTT" in feedback  # head and tail kept
    assert "50,201 characters, cut to 1,000" in feedback  # the printed size includes the newline


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_cell_timeout_restarts_the_worker_and_the_model_is_told() -> None:
    rlm, root, _ = make_rlm(
        [block("kept = 1"), block("n = 0\nwhile True:\n    n += 1"), block("FINAL(len(context))")],
        cell_timeout_s=1.0,
        repl="local",
    )
    started = time.monotonic()
    result = await run(rlm, context="abcd")
    assert time.monotonic() - started < 10
    assert result.status == "completed"
    assert result.answer == 4  # the context was reloaded into the new worker
    feedback = last_user(root.calls[2])
    assert "TimeoutError" in feedback and "restarted" in feedback
    assert "kept" in feedback  # the lost variable is named
    timed_out = [e for e in result.trajectory.events if isinstance(e, CellFinished) and e.timed_out]
    assert len(timed_out) == 1 and timed_out[0].restarted
    # Of what the model defined, only `kept` is lost; the prelude's modules come back with the worker.
    assert timed_out[0].lost_variables == ["kept"]


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_time_in_sub_calls_does_not_count_against_the_cell_timeout() -> None:
    sub = ScriptedLM(lambda m: "slow but fine", name="sub", latency_s=1.3)
    rlm, _, _ = make_rlm([block("FINAL(llm_query('wait for me'))")], sub, cell_timeout_s=1.0, repl="local")
    result = await run(rlm)
    assert (result.status, result.answer) == ("completed", "slow but fine")


# -- sub-calls -------------------------------------------------------------------------------------


async def test_llm_query_goes_to_the_sub_model() -> None:
    rlm, _, sub = make_rlm([block("r = llm_query('summarise: ' + context)\nprint(r)"), block("FINAL(r)")])
    result = await run(rlm, context="tiny")
    assert result.answer == "sub:summarise: tiny"
    assert sub.calls == [[{"role": "user", "content": "summarise: tiny"}]]
    assert result.usage.by_model["sub"].calls == 1
    assert result.usage.by_model["root"].calls == 2
    (start,) = [e for e in result.trajectory.events if isinstance(e, SubCallStarted)]
    (cell,) = [e for e in result.trajectory.events if isinstance(e, CellStarted) and e.iteration == 1]
    assert start.cell_id == cell.cell_id and start.function == "llm_query"


async def test_llm_query_batched_concurrency_is_bounded_by_sub_concurrency() -> None:
    in_flight = 0
    peak = 0

    async def slow_echo(messages: list[Message]) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return "answer to " + messages[-1]["content"]

    sub = ScriptedLM(slow_echo, name="sub")
    code = "replies = llm_query_batched(['q' + str(i) for i in range(12)])\nFINAL(replies)"
    rlm, _, _ = make_rlm([block(code)], sub, sub_concurrency=3)
    result = await run(rlm)

    assert result.answer == [f"answer to q{i}" for i in range(12)]  # in order
    assert peak == 3  # concurrent (not serial), and never more than sub_concurrency
    assert len(sub.calls) == 12
    assert result.usage.by_model["sub"].calls == 12


async def test_llm_query_batched_one_failing_prompt_does_not_sink_the_batch() -> None:
    def flaky(messages: list[Message]) -> str:
        prompt = messages[-1]["content"]
        if prompt == "bad":
            raise RuntimeError("provider exploded")
        return prompt.upper()

    sub = ScriptedLM(flaky, name="sub")
    rlm, _, _ = make_rlm([block("FINAL(llm_query_batched(['a', 'bad', 'c']))")], sub)
    result = await run(rlm)
    assert result.status == "completed"
    first, failed, last = result.answer
    assert (first, last) == ("A", "C")
    assert failed.startswith("Error: ") and "provider exploded" in failed
    errors = [e for e in result.trajectory.events if isinstance(e, SubCallFinished) and e.error]
    assert len(errors) == 1 and "provider exploded" in (errors[0].error or "")


async def test_llm_query_error_is_catchable_in_the_cell() -> None:
    sub = ScriptedLM([RuntimeError("down")], name="sub")
    code = (
        "try:\n"
        "    llm_query('x')\n"
        "    out = 'no error'\n"
        "except RuntimeError as e:\n"
        "    out = 'caught: ' + str(e)\n"
        "FINAL(out)"
    )
    rlm, _, _ = make_rlm([block(code)], sub)
    result = await run(rlm)
    assert result.answer.startswith("caught: ") and "down" in result.answer


async def test_sub_prompt_larger_than_the_sub_window_is_refused_before_any_call() -> None:
    sub = ScriptedLM(["never sent"], name="small-sub", context_window=2000)
    code = (
        "big = context * 4\n"
        "try:\n"
        "    llm_query(big)\n"
        "    outcome = 'sent'\n"
        "except ValueError as error:\n"
        "    outcome = str(error)\n"
        "FINAL(outcome)"
    )
    rlm, _, _ = make_rlm([block(code)], sub)
    result = await run(rlm, context="x" * 5000)
    assert result.status == "completed"
    assert sub.calls == []
    assert "nothing was sent" in result.answer and "small-sub" in result.answer
    assert "small-sub" not in result.usage.by_model
    assert not any(isinstance(e, SubCallStarted) for e in result.trajectory.events)


async def test_sub_prompt_limit_is_stated_in_the_system_prompt_and_fits_small_windows() -> None:
    sub = ScriptedLM(lambda m: "ok", name="tiny-sub", context_window=512)
    rlm, root, _ = make_rlm([block("FINAL(llm_query('short prompt'))")], sub)
    result = await run(rlm)
    # a small window still takes a small prompt (room for the reply is a fraction of the window)
    assert result.answer == "ok"
    assert len(sub.calls) == 1
    assert "at most 1,344 characters" in root.calls[0][0]["content"]


async def test_oversized_prompt_in_a_batch_fails_alone() -> None:
    sub = ScriptedLM(lambda m: "fine", name="sub", context_window=2000)
    rlm, _, _ = make_rlm([block("FINAL(llm_query_batched(['small', 'y' * 20000]))")], sub)
    result = await run(rlm)
    small, big = result.answer
    assert small == "fine"
    assert big.startswith("Error: ValueError") and "nothing was sent" in big
    assert len(sub.calls) == 1


async def test_rlm_query_runs_a_child_at_depth_one() -> None:
    root = ScriptedLM(
        router(
            {
                "Parent?": [
                    block("child = rlm_query('Child?', context=context[:5])\nprint(child)"),
                    "FINAL_VAR(child)",
                ],
                "Child?": [block("print(context)"), block("FINAL('child saw ' + context)")],
            }
        ),
        name="root",
    )
    rlm, _, sub = make_rlm(root)
    result = await run(rlm, "Parent?", "abcdefghij")

    assert result.status == "completed"
    assert result.answer == "child saw abcde"
    assert result.iterations == 2  # the parent's own turns
    assert sub.calls == []
    runs = result.trajectory.runs()
    assert [r.depth for r in runs] == [0, 1]
    parent, child = runs
    assert child.start.parent_id == parent.run_id
    assert child.start.query == "Child?"
    assert child.start.context is not None and child.start.context.chars == 5
    assert child.end is not None and child.end.status == "completed"
    # the child's steps carry its own run id, and it is linked to the parent's cell and sub-call
    assert {e.run_id for e in child.steps} == {child.run_id}
    (call_end,) = [e for e in parent.steps if isinstance(e, SubCallFinished)]
    assert call_end.function == "rlm_query" and call_end.child_run_id == child.run_id
    assert child.start.parent_cell_id == call_end.cell_id
    assert result.trajectory.children(parent.run_id) == [child]
    # child usage is in the total: 2 parent turns + 2 child turns
    assert len(root.calls) == 4
    assert result.usage.calls == 4
    assert result.usage.by_model["root"].calls == 4
    child_tokens = sum(
        e.usage.total_tokens for e in child.steps if isinstance(e, LMCallFinished) and e.usage is not None
    )
    assert child_tokens > 0
    assert result.usage.total_tokens >= child_tokens + sum(
        e.usage.total_tokens for e in parent.steps if isinstance(e, LMCallFinished) and e.usage is not None
    )


async def test_depth_two_recursion() -> None:
    root = ScriptedLM(
        router(
            {
                "L0?": [block("FINAL('L0<' + rlm_query('L1?', context=context[:6]) + '>')")],
                "L1?": [block("FINAL('L1<' + rlm_query('L2?', context=context[:3]) + '>')")],
                # at max_depth, rlm_query is a plain sub-model call
                "L2?": [block("FINAL('L2<' + context + '|' + rlm_query('leaf?') + '>')")],
            }
        ),
        name="root",
    )
    rlm, _, sub = make_rlm(root, max_depth=2)
    result = await run(rlm, "L0?", "abcdefghijkl")
    assert result.status == "completed"
    assert result.answer == "L0<L1<L2<abc|sub:leaf?>>>"
    runs = result.trajectory.runs()
    assert [(r.start.query, r.depth) for r in runs] == [("L0?", 0), ("L1?", 1), ("L2?", 2)]
    assert runs[1].start.parent_id == runs[0].run_id
    assert runs[2].start.parent_id == runs[1].run_id
    assert sub.calls == [[{"role": "user", "content": "leaf?"}]]
    assert result.usage.calls == 4


async def test_rlm_query_at_max_depth_is_a_plain_sub_model_call() -> None:
    rlm, root, sub = make_rlm([block("FINAL(rlm_query('What is it?', context='the ctx'))")], max_depth=0)
    result = await run(rlm)
    assert result.answer == "sub:What is it?\n\nContext:\nthe ctx"
    assert len(sub.calls) == 1 and len(root.calls) == 1
    assert len(result.trajectory.runs()) == 1
    (start,) = [e for e in result.trajectory.events if isinstance(e, SubCallStarted)]
    assert start.function == "rlm_query" and start.model == "sub"


async def test_rlm_query_batched_runs_children_concurrently() -> None:
    root = ScriptedLM(
        router(
            {
                "Parent?": [block("FINAL(rlm_query_batched(['Child?', 'Child?'], ['ab', 'abcd']))")],
                "Child?": [block("FINAL(len(context))")],
            }
        ),
        name="root",
    )
    rlm, _, _ = make_rlm(root)
    result = await run(rlm, "Parent?")
    assert result.answer == ["2", "4"]  # children answer as text
    assert [r.depth for r in result.trajectory.runs()] == [0, 1, 1]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   \n", None, 42])
async def test_empty_or_non_string_query_is_a_usage_error(query: Any) -> None:
    rlm, root, _ = make_rlm(["FINAL(1)"])
    with pytest.raises(UsageError, match="query"):
        await rlm.acompletion(query, "ctx")
    assert root.calls == []


@pytest.mark.parametrize(
    "context",
    [object(), {1: "int key"}, ["fine", object()], {"nested": [{"deep": object()}]}, {1, 2}],
    ids=["object", "int-key", "object-in-list", "nested-object", "set"],
)
async def test_unsupported_context_is_refused_before_any_model_call(context: Any) -> None:
    repls = RecordingREPLs()
    root = ScriptedLM(["FINAL(1)"], name="root")
    rlm = RLM(root, repl=repls, config=config())
    with pytest.raises(UnsupportedContextError):
        await rlm.acompletion("q", context)
    assert root.calls == []
    assert repls.repls == []


async def test_unsupported_item_past_the_sampled_prefix_is_still_refused_before_any_model_call() -> None:
    root = ScriptedLM(["FINAL(1)"], name="root")
    rlm = RLM(root, repl=fake_repls, config=config())
    with pytest.raises(UnsupportedContextError):
        await rlm.acompletion("q", ["ok"] * 60 + [object()])
    assert root.calls == []


@pytest.mark.parametrize("context", [None, "text", b"bytes", ["a", 1, None], {"k": [1.5, True]}, ("t", 2)])
async def test_supported_contexts_load(context: Any) -> None:
    rlm, _, _ = make_rlm([block("FINAL(context)")])
    result = await run(rlm, context=context)
    assert result.status == "completed"
    expected = list(context) if isinstance(context, tuple) else context  # JSON has no tuples
    assert result.answer == expected


async def test_unknown_config_override_is_a_validation_error() -> None:
    rlm, root, _ = make_rlm(["FINAL(1)"])
    with pytest.raises(ValidationError, match="max_iteration"):
        await rlm.acompletion("q", "ctx", max_iteration=3)
    assert root.calls == []


async def test_config_override_applies_to_one_call_only() -> None:
    rlm, _, _ = make_rlm(lambda m: "FINAL('c')" if is_closing(m) else block("print(1)"))
    once = await rlm.acompletion("q", "ctx", max_iterations=1)
    assert (once.status, once.iterations) == ("max_iterations", 1)
    assert rlm.config.max_iterations == 20


@pytest.mark.parametrize(
    "fields",
    [
        {"max_iterations": 0},
        {"max_depth": -1},
        {"max_llm_calls": 0},
        {"max_tokens": 0},
        {"max_cost_usd": 0},
        {"timeout_s": -1},
        {"cell_timeout_s": 0},
        {"max_output_chars": 10},
        {"sub_concurrency": 0},
        {"memory_limit_mb": 1},
        {"max_iterations": "many"},
        {"no_such_field": 1},
    ],
)
def test_config_validation(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        RLMConfig(**fields)
    assert next(iter(fields)) in str(caught.value)


def test_config_is_frozen_and_defaults_are_sane() -> None:
    cfg = RLMConfig()
    with pytest.raises(ValidationError):
        cfg.max_iterations = 3  # type: ignore[misc]
    assert cfg.max_iterations == 20 and cfg.max_depth == 1 and cfg.max_cost_usd is None


def test_bad_repl_and_tool_names_are_config_errors() -> None:
    lm = ScriptedLM(["FINAL(1)"])
    with pytest.raises(ConfigError):
        RLM(lm, repl="docker")
    with pytest.raises(ConfigError):
        RLM(lm, tools={"_hidden": lambda: 1})
    with pytest.raises(UsageError):
        RLM(object())  # type: ignore[arg-type]


# -- tools ----------------------------------------------------------------------------------------


async def test_user_tools_are_callable_from_cells_and_documented() -> None:
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return {"a": "apple"}.get(key, "?")

    root = ScriptedLM([block("FINAL(lookup('a'))")], name="root")
    rlm = RLM(root, tools={"lookup": lookup}, repl=fake_repls, config=config())
    result = await run(rlm)
    assert result.answer == "apple"
    assert "`lookup(...)`: Look a key up in the host's table." in root.calls[0][0]["content"]


# -- cancellation ---------------------------------------------------------------------------------


async def _start_and_cancel_mid_cell(rlm: RLM, started: asyncio.Event, repls: RecordingREPLs) -> int:
    task = asyncio.create_task(rlm.acompletion("q", "ctx"))
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(0.3)  # the worker is inside the cell now
    assert not task.done()
    (repl,) = repls.repls
    pid = repl.pid
    assert pid is not None and psutil.pid_exists(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return pid


def _gone(pid: int) -> bool:
    if not psutil.pid_exists(pid):
        return True
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_cancelling_mid_cell_kills_the_worker_and_raises_cancelled() -> None:
    started = asyncio.Event()
    events: list[Event] = []

    def observe(event: Event) -> None:
        events.append(event)
        if isinstance(event, CellStarted):
            started.set()

    repls = RecordingREPLs()
    busy = block("n = 0\nwhile True:\n    n += 1")
    rlm = RLM(ScriptedLM([busy]), repl=repls, config=config(cell_timeout_s=60), observers=[observe])
    pid = await _start_and_cancel_mid_cell(rlm, started, repls)
    assert _gone(pid)
    assert repls.repls[0].pid is None
    assert isinstance(events[-1], RunFinished)  # the run's end is still recorded


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_cancelling_while_a_cell_waits_on_a_sub_call_kills_the_worker() -> None:
    started = asyncio.Event()
    sub = ScriptedLM(lambda m: "late", name="sub", latency_s=30)
    repls = RecordingREPLs()
    rlm = RLM(
        ScriptedLM([block("FINAL(llm_query('slow'))")]),
        sub,
        repl=repls,
        config=config(),
        observers=[lambda e: started.set() if isinstance(e, SubCallStarted) else None],
    )
    began = time.monotonic()
    pid = await _start_and_cancel_mid_cell(rlm, started, repls)
    assert time.monotonic() - began < 10
    assert _gone(pid)


# -- concurrency ----------------------------------------------------------------------------------


async def test_concurrent_acompletions_on_one_rlm_do_not_share_state() -> None:
    def reply(messages: list[Message]) -> str:
        name = question_of(messages)
        if turn_of(messages) == 0:
            return block(f"mine = '{name}' + ':' + str(len(context))")
        return block("FINAL(mine)")

    root = ScriptedLM(reply, name="root", latency_s=0.01)
    rlm = RLM(root, repl=fake_repls, config=config())
    first, second = await asyncio.gather(rlm.acompletion("A", "x" * 3), rlm.acompletion("B", "y" * 7))
    assert (first.answer, second.answer) == ("A:3", "B:7")
    for result, query in ((first, "A"), (second, "B")):
        (only,) = result.trajectory.runs()
        assert only.start.query == query
        assert {e.run_id for e in result.trajectory.events} == {only.run_id}
        assert result.usage.calls == 2
    assert first.trajectory.runs()[0].run_id != second.trajectory.runs()[0].run_id


def test_completion_sync_outside_an_event_loop() -> None:
    seen: list[Event] = []
    rlm, _, _ = make_rlm([block("FINAL(len(context))")])
    result = rlm.completion("How long?", "abcd", observers=[seen.append], max_iterations=2)
    assert result.answer == 4
    assert seen == result.trajectory.events and seen[0].kind == "run_start"


async def test_completion_sync_inside_a_running_event_loop() -> None:
    rlm, _, _ = make_rlm([block("FINAL(len(context))")])
    result = rlm.completion("How long?", context="abcdef")
    assert result.status == "completed" and result.answer == 6


# -- events and trajectory ------------------------------------------------------------------------


async def test_observers_receive_typed_events_in_order() -> None:
    seen: list[Event] = []
    root = ScriptedLM([block("r = llm_query('hi')\nprint(r)"), block("FINAL(r)")], name="root")
    rlm = RLM(root, ScriptedLM(["hello"], name="sub"), repl=fake_repls, config=config(), observers=[seen.append])
    result = await run(rlm)
    assert kinds(seen) == [
        "run_start",
        "iteration_start",
        "lm_call_start",
        "lm_call_end",
        "cell_start",
        "sub_call_start",
        "sub_call_end",
        "cell_end",
        "iteration_end",
        "iteration_start",
        "lm_call_start",
        "lm_call_end",
        "cell_start",
        "cell_end",
        "iteration_end",
        "run_end",
    ]
    types = [
        RunStarted,
        IterationStarted,
        LMCallStarted,
        LMCallFinished,
        CellStarted,
        SubCallStarted,
        SubCallFinished,
        CellFinished,
        IterationFinished,
    ]
    for event, expected in zip(seen, types, strict=False):
        assert isinstance(event, expected)
    assert seen == result.trajectory.events
    assert [e.at for e in seen] == sorted(e.at for e in seen)
    end = seen[-1]
    assert isinstance(end, RunFinished) and end.status == "completed" and end.answer == "hello"
    assert isinstance(seen[3], LMCallFinished) and seen[3].text.startswith("```repl")
    assert isinstance(seen[7], CellFinished) and seen[7].stdout == "hello\n"
    # the first LM call carries the system prompt and the question; later ones only what is new
    first_call, second_call = (e for e in seen if isinstance(e, LMCallStarted))
    assert [m["role"] for m in first_call.new_messages] == ["system", "user"]
    assert [m["role"] for m in second_call.new_messages] == ["user"]


async def test_per_call_observers_and_a_failing_observer(caplog: pytest.LogCaptureFixture) -> None:
    good: list[Event] = []
    per_call: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    root = ScriptedLM([block("print(1)"), block("FINAL(2)")], name="root")
    rlm = RLM(root, repl=fake_repls, config=config(), observers=[broken, good.append])
    with caplog.at_level(logging.ERROR, logger="rlm_integrations"):
        result = await rlm.acompletion("q", "ctx", observers=[per_call.append])
    assert result.status == "completed" and result.answer == 2
    assert good == per_call == result.trajectory.events
    assert "observer bug" in caplog.text


async def test_save_round_trips_through_trajectory_load(tmp_path: Any) -> None:
    root = ScriptedLM(
        router(
            {
                "P?": [block("x = rlm_query('C?', context='ab')\nprint(llm_query('s'))"), "FINAL_VAR(x)"],
                "C?": [block("FINAL(len(context))")],
            }
        ),
        name="root",
    )
    rlm, _, _ = make_rlm(root)
    result = await run(rlm, "P?", "hello")
    path = tmp_path / "run.jsonl"
    result.save(path)
    loaded = Trajectory.load(path)
    assert loaded.events == result.trajectory.events
    assert loaded.to_jsonl() == path.read_text(encoding="utf-8")
    assert [r.run_id for r in loaded.runs()] == [r.run_id for r in result.trajectory.runs()]
    assert loaded.root is not None and loaded.root.end is not None and loaded.root.end.answer == "2"
    assert len(loaded.children(loaded.root.run_id)) == 1
    for line in path.read_text(encoding="utf-8").splitlines():
        assert "kind" in json.loads(line)


async def test_jsonl_writer_observer_matches_save(tmp_path: Any) -> None:
    streamed = tmp_path / "streamed.jsonl"
    writer = JSONLWriter(streamed)
    root = ScriptedLM([block("print(1)"), block("FINAL(2)")], name="root")
    try:
        result = await RLM(root, repl=fake_repls, config=config(), observers=[writer]).acompletion("q", "ctx")
    finally:
        writer.close()
    assert Trajectory.load(streamed).events == result.trajectory.events


def test_trajectory_load_names_the_bad_line(tmp_path: Any) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"kind": "iteration_start", "run_id": "r", "iteration": 1}\n{"kind": "nope"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        Trajectory.load(path)


async def test_trajectory_stores_a_big_context_once_and_grows_linearly(tmp_path: Any) -> None:
    marker = "NEEDLE-" + "q" * 20
    half = "lorem ipsum dolor sit amet " * (2_500_000 // 27)
    context = half + marker + half  # about 5 MB
    steps = 8

    def reply(messages: list[Message]) -> str:
        turn = turn_of(messages)
        if turn < steps:
            return block(f"hit = context.find('NEEDLE')\nprint({turn}, hit, context[hit:hit + 200])")
        return block("FINAL(hit)")

    rlm, root, _ = make_rlm(ScriptedLM(reply, name="root"), max_iterations=steps + 2)
    result = await run(rlm, "Where is the needle?", context)
    assert result.answer == len(half)

    path = tmp_path / "big.jsonl"
    result.save(path)
    size = path.stat().st_size
    assert size < 60_000, size  # far smaller than the 5 MB context
    text = path.read_text(encoding="utf-8")
    assert half[:1000] not in text  # the context is never copied, only previewed (400 characters)
    start = result.trajectory.runs()[0].start
    assert start.context is not None
    assert start.context.sha256 == hashlib.sha256(context.encode()).hexdigest()
    assert start.context.chars == len(context)
    assert start.context.preview == context[:400]
    # the root model's prompts never carry the context either
    assert max(sum(len(m["content"]) for m in call) for call in root.calls) < 30_000

    # linear: every iteration adds about the same number of bytes, however long the history
    per_iteration: dict[int, int] = {}
    for line in text.splitlines():
        iteration = json.loads(line).get("iteration")
        if iteration is not None:
            per_iteration[iteration] = per_iteration.get(iteration, 0) + len(line)
    assert len(per_iteration) == steps + 1
    assert max(per_iteration[i] for i in range(3, steps + 1)) < 1.5 * per_iteration[2]


# -- prompting for small models --------------------------------------------------------------------


class SmallScriptedLM(ScriptedLM):
    """A scripted model that, like `LocalModel`, asks for the worked example."""

    prefers_worked_example = True


def with_example(model: Any) -> ChatPolicy:
    return ChatPolicy(model, example=True)


def without_example(model: Any) -> ChatPolicy:
    return ChatPolicy(model, example=False)


async def test_the_worked_example_is_sent_between_the_system_prompt_and_the_question() -> None:
    root = ScriptedLM([block("print(len(context))"), block("FINAL(len(context))")], name="root")
    rlm = RLM(root, repl=fake_repls, config=config(), policy=with_example)
    result = await run(rlm, "How long is it?", "abcd")
    assert (result.status, result.answer) == ("completed", 4)

    example = example_for("lookup")
    assert [m["role"] for m in example] == ["user", "assistant", "user", "assistant"]
    first, second = root.calls
    assert len(first) == 1 + len(example) + 1
    assert first[0]["role"] == "system" and "`context`" in first[0]["content"]
    assert first[1:-1] == example
    assert first[-1]["role"] == "user" and first[-1]["content"].startswith("Question: How long is it?\n")
    # every later request still opens with the same example; the run's own turns follow it
    assert second[: 1 + len(example)] == first[: 1 + len(example)]
    own = conversation(second)
    assert [m["role"] for m in own] == ["user", "assistant", "user"]
    assert own[0] == first[-1]
    # the example's invented question and text appear nowhere in the run's own messages
    assert all("Zubrowka" not in m["content"] and "Lutz" not in m["content"] for m in own)


async def test_child_runs_get_the_worked_example_too() -> None:
    root = ScriptedLM(
        router({"P?": [block("FINAL(rlm_query('C?', context='abc'))")], "C?": [block("FINAL(len(context))")]}),
        name="root",
    )
    rlm = RLM(root, repl=fake_repls, config=config(), policy=with_example)
    result = await run(rlm, "P?")
    assert result.answer == "3"
    example = example_for("lookup")
    assert len(root.calls) == 2
    assert all(call[1:-1] == example for call in root.calls)
    assert sorted(question_of(call) for call in root.calls) == ["C?", "P?"]


async def test_chat_policy_sends_the_example_only_when_asked() -> None:
    example = example_for("lookup")
    system = {"role": "system", "content": "SYS"}
    first = {"role": "user", "content": "Question: q"}

    def opening(policy: ChatPolicy) -> list[Message]:
        policy.begin("SYS", "Question: q")
        return policy.messages

    plain, small = ScriptedLM(["x"], name="plain"), SmallScriptedLM(["x"], name="small")
    # by default the model decides (LocalModel asks for it; API models and ScriptedLM do not) ...
    assert opening(ChatPolicy(plain)) == [system, first]
    assert opening(ChatPolicy(small)) == [system, *example, first]
    # ... and `example=` overrides it either way
    assert opening(ChatPolicy(plain, example=True)) == [system, *example, first]
    assert opening(ChatPolicy(small, example=False)) == [system, first]


async def test_example_false_leaves_the_example_out_of_a_run() -> None:
    root = SmallScriptedLM([block("print(1)"), block("FINAL(2)")], name="root")
    rlm = RLM(root, repl=fake_repls, config=config(), policy=without_example)
    result = await run(rlm, "q?")
    assert result.answer == 2
    assert [m["role"] for m in root.calls[0]] == ["system", "user"]
    assert [m["role"] for m in root.calls[1]] == ["system", "user", "assistant", "user"]
    assert root.calls[0][1]["content"].startswith("Question: q?\n")
    assert not any("Zubrowka" in m["content"] for call in root.calls for m in call)
    # and a model that asks for the example gets it with the default policy
    small = SmallScriptedLM([block("FINAL(2)")], name="root")
    await run(RLM(small, repl=fake_repls, config=config()), "q?")
    assert small.calls[0][1:-1] == example_for("lookup")


async def test_the_prelude_makes_common_modules_usable_without_an_import() -> None:
    code = (
        "FINAL([re.sub('o', '0', context), json.dumps({'n': 1}), math.floor(2.5), collections.Counter(context)['l']])"
    )
    rlm, root, _ = make_rlm([block(code)])
    result = await run(rlm, context="hello world")
    assert result.status == "completed"
    assert result.answer == ["hell0 w0rld", '{"n": 1}', 2, 3]
    assert "`re`, `json`, `math` and `collections` are already imported" in root.calls[0][0]["content"]
    # the prelude is no turn of the model's: no cell events for it, the model's cell is the first
    assert [e.code for e in result.trajectory.events if isinstance(e, CellStarted)] == [code]
    assert len(root.calls) == 1 and result.iterations == 1


async def test_running_the_same_code_again_adds_the_repeated_code_note() -> None:
    note = prompts.repeated_code_note()
    rlm, root, _ = make_rlm(
        [
            block("shout = context.upper()\nprint(shout)"),
            block("shout  =  context.upper()\n\nprint(shout)"),  # the same code, spaced differently
            block("print(len(context))"),
            block("FINAL(shout)"),
        ]
    )
    result = await run(rlm, "Shout it?")
    assert result.answer == "HELLO WORLD"
    first, repeat, different = (last_user(root.calls[turn]) for turn in (1, 2, 3))
    assert note not in first and note not in different
    assert repeat.count(note) == 1
    # the code did run again; the note follows its output and comes before the question reminder
    assert repeat.index("HELLO WORLD") < repeat.index(note) < repeat.index("Question: Shout it?")


async def test_code_repeated_by_another_run_is_not_a_repeat() -> None:
    note = prompts.repeated_code_note()
    code = "print(len(context))"
    root = ScriptedLM(
        router(
            {
                "P?": [block(code), block("print(rlm_query('C?', context='abc'))"), block("FINAL(1)")],
                "C?": [block(code), block("FINAL(len(context))")],
            }
        ),
        name="root",
    )
    rlm = RLM(root, repl=fake_repls, config=config())
    result = await run(rlm, "P?")
    assert result.answer == 1
    child_feedback = [last_user(call) for call in root.calls if question_of(call) == "C?" and turn_of(call) == 1]
    assert len(child_feedback) == 1
    assert "3" in child_feedback[0] and note not in child_feedback[0]
    assert all(note not in last_user(call) for call in root.calls)


async def test_each_turns_feedback_ends_with_the_question_then_the_turns_left() -> None:
    rlm, root, _ = make_rlm(
        [block("print(len(context))"), block("print(context)"), block("FINAL(1)")], max_iterations=3
    )
    result = await run(rlm, "How long is it?", "abcd")
    assert result.answer == 1
    reminder = prompts.question_reminder("How long is it?")
    assert reminder == "Question: How long is it?"
    assert last_user(root.calls[1]) == prompts.next_turn_message(f"Output (2 characters):\n4\n\n{reminder}", 2)
    assert last_user(root.calls[1]).endswith(
        "\n\nQuestion: How long is it?\n\n2 turns left. If the output answers the question, reply with "
        "FINAL(answer). Otherwise write the next ```repl block."
    )
    assert last_user(root.calls[2]).endswith(
        "abcd\n\nQuestion: How long is it?\n\nThis is your last turn: call FINAL(answer) now."
    )


async def test_a_child_run_is_reminded_of_its_own_question() -> None:
    root = ScriptedLM(
        router(
            {
                "Parent question?": [block("FINAL(rlm_query('Child question?', context='abc'))")],
                "Child question?": [block("print(context)"), block("FINAL(context)")],
            }
        ),
        name="root",
    )
    result = await run(RLM(root, repl=fake_repls, config=config()), "Parent question?")
    assert result.answer == "abc"
    (child_second,) = [call for call in root.calls if turn_of(call) == 1]
    feedback = last_user(child_second)
    assert "Question: Child question?" in feedback and "Parent question?" not in feedback


async def test_output_the_model_invents_after_its_code_is_trimmed_from_the_history() -> None:
    invented = "Let me compute it.\n" + block("print(6 * 7)") + "\n\nOutput:\n41\n"
    rlm, root, _ = make_rlm([invented, block("FINAL(1)")])
    result = await run(rlm)
    assert result.answer == 1
    history = root.calls[1]
    assert history[-2] == {"role": "assistant", "content": "Let me compute it.\n" + block("print(6 * 7)")}
    assert not any("41" in m["content"] for m in history[-2:])
    assert last_user(history).startswith("Output (3 characters):\n42\n")  # the real output follows
    # the trajectory keeps what the model actually wrote
    replies = [e.text for e in result.trajectory.events if isinstance(e, LMCallFinished)]
    assert replies[0] == invented


@pytest.mark.parametrize(
    ("reply", "stored"),
    [
        (block("x = 1") + "\nOutput: 1", block("x = 1")),
        ("Look:\n" + block("print(x)") + "\n\noutput (2 characters):\n1\nso x is 1", "Look:\n" + block("print(x)")),
        (block("print(x)") + "\nOutput:\n```\n1\n```", block("print(x)")),
        (block("print(x)") + "\n  OUTPUT\n1", block("print(x)")),
    ],
)
async def test_chat_policy_trims_invented_output(reply: str, stored: str) -> None:
    policy = ChatPolicy(ScriptedLM([reply]))
    policy.begin("SYS", "Question: q")
    completion = await policy.step()
    assert completion.text == reply  # the engine still reads the whole reply
    assert policy.messages[-1] == {"role": "assistant", "content": stored}


@pytest.mark.parametrize(
    "reply",
    [
        block("print(x)"),
        block("print('Output: 1')"),
        block("print(x)") + "\nThe output will show the count.",
        block("print(x)") + "\nOutputs follow",
        "Output: 5",
        'FINAL("Lutz")',
        "```repl\nprint(x)\nOutput: 1",  # unterminated fence: nothing after a closed block
    ],
)
async def test_chat_policy_keeps_replies_without_invented_output(reply: str) -> None:
    policy = ChatPolicy(ScriptedLM([reply]))
    policy.begin("SYS", "Question: q")
    await policy.step()
    assert policy.messages[-1] == {"role": "assistant", "content": reply}


@pytest.mark.parametrize(
    ("reply", "answer"),
    [('FINAL("x",)', "x"), ("final('x')", "x"), ("Final(42)", 42), ('**final("a, b" , )**', "a, b")],
)
async def test_textual_final_forms_small_models_write(reply: str, answer: object) -> None:
    rlm, root, _ = make_rlm([reply])
    result = await run(rlm)
    assert (result.status, result.answer, len(root.calls)) == ("completed", answer, 1)


# -- fixed engine bugs, kept as regression tests --


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_the_prelude_modules_survive_a_worker_restart() -> None:
    rlm, root, _ = make_rlm(
        [block("while True:\n    pass"), block("print(re.escape('a.b'))"), block("FINAL(1)")],
        cell_timeout_s=1.0,
        repl="local",
    )
    result = await run(rlm)
    assert result.answer == 1
    assert "restarted" in last_user(root.calls[1])
    assert last_user(root.calls[2]).startswith("Output (5 characters):\na\\.b\n")


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_a_worker_restart_does_not_report_the_prelude_modules_as_lost() -> None:
    rlm, root, _ = make_rlm(
        [block("kept = 1"), block("n = 0\nwhile True:\n    n += 1"), block("FINAL(len(context))")],
        cell_timeout_s=1.0,
        repl="local",
    )
    result = await run(rlm, context="abcd")
    timed_out = [e for e in result.trajectory.events if isinstance(e, CellFinished) and e.timed_out]
    assert len(timed_out) == 1 and timed_out[0].lost_variables == ["kept"]
    assert "Lost variables (re-create them if you need them): kept." in last_user(root.calls[2])


async def test_the_prelude_does_not_shadow_a_tool_with_a_module_name() -> None:
    def math(x: int) -> int:
        """Double a number."""
        return 2 * x

    root = ScriptedLM([block("print(math(21))"), block("FINAL(1)")], name="root")
    result = await run(RLM(root, repl=fake_repls, config=config(), tools={"math": math}))
    assert result.answer == 1
    assert "`math(...)`: Double a number." in root.calls[0][0]["content"]  # the model is told it is the tool
    assert last_user(root.calls[1]).startswith("Output (3 characters):\n42\n")


async def test_trimming_invented_output_keeps_every_code_block_that_ran() -> None:
    reply = block("a = 6 * 7") + "\nOutput: (nothing)\n" + block("print(a)")
    rlm, root, _ = make_rlm([reply, block("FINAL(a)")])
    result = await run(rlm)
    assert result.answer == 42
    assert "Output of block 2" in last_user(root.calls[1])  # both blocks ran ...
    stored = root.calls[1][-2]
    assert stored["role"] == "assistant"
    assert "print(a)" in stored["content"]  # ... so the history must show both


async def test_the_trajectory_records_the_whole_first_request_with_the_example() -> None:
    root = ScriptedLM([block("FINAL(1)")], name="root")
    result = await run(RLM(root, repl=fake_repls, config=config(), policy=with_example))
    (started,) = [e for e in result.trajectory.events if isinstance(e, LMCallStarted)]
    assert started.new_messages == [dict(m) for m in root.calls[0]]


@pytest.mark.slow  # a real worker: its timeout, restart or kill is the subject
async def test_restart_report_names_lost_variables_whose_names_start_like_prelude_modules() -> None:
    # `rest` and `json_rows` must survive the removal of the prelude's `re`/`json` from the report.
    root = ScriptedLM(
        [
            block("rest = 1\njson_rows = [1]"),
            block("while True:\n    pass"),
            block("FINAL(len(context))"),
        ],
        name="root",
    )
    rlm = RLM(root, ScriptedLM(["unused"], name="sub"), config=RLMConfig(cell_timeout_s=1.0), repl="local")
    result = await rlm.acompletion("What is it?", context="abcd")
    assert result.answer == 4
    timed_out = [e for e in result.trajectory.events if isinstance(e, CellFinished) and e.timed_out]
    assert timed_out[0].lost_variables == ["rest", "json_rows"]
    assert "Lost variables (re-create them if you need them): rest, json_rows." in (timed_out[0].error or "")
