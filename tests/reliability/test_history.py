"""The root conversation stays bounded: per-message caps, compaction before the window, overflow recovery."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # prices from LiteLLM's bundled map, never the internet

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.core.history import Conversation, HistoryLimits
from rlm_integrations.errors import ContextWindowExceededError
from rlm_integrations.lm import LiteLLMModel, Message, ScriptedLM
from rlm_integrations.lm.tokens import estimate_messages_tokens
from rlm_integrations.testing import FakeOpenAIServer, FakeREPL, Fault

CLOSING = "Do not write code"


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


def config(**fields: Any) -> RLMConfig:
    fields.setdefault("cell_timeout_s", 20.0)
    return RLMConfig(**fields)


async def run(rlm: RLM, query: str = "What is it?", context: Any = "hello world") -> RLMResult:
    return await asyncio.wait_for(rlm.acompletion(query, context), timeout=120)


def counted(script: Callable[[int, list[Message]], str]) -> Callable[[list[Message]], str]:
    """A reply function that gets the call's index (history compaction hides the turn count)."""
    calls = [0]

    def reply(messages: list[Message]) -> str:
        calls[0] += 1
        return script(calls[0] - 1, messages)

    return reply


def chars(messages: Sequence[Message]) -> int:
    return sum(len(m["content"]) for m in messages)


def sub() -> ScriptedLM:
    return ScriptedLM(lambda m: "sub", name="sub")


# -- per-message bounds ---------------------------------------------------------------------------
async def test_a_5_mb_reply_is_not_re_sent_on_later_turns() -> None:
    huge = block("x = 41") + "\n" + "thinking out loud " * 300_000  # about 5.4 MB of text after the code
    root = ScriptedLM([huge, block("x = x + 1\nprint(x)"), block("FINAL(x)")], name="root")
    result = await run(RLM(root, sub(), repl=FakeREPL.from_config, config=config()))
    assert result.status == "completed" and result.answer == 42  # the huge reply's code still ran
    assert len(huge) > 5_000_000
    for later in root.calls[1:]:
        assert chars(later) < 60_000, chars(later)
    kept = root.calls[1][-2]
    assert kept["role"] == "assistant" and kept["content"].startswith("```repl\nx = 41")
    assert "characters cut" in kept["content"]


async def test_reply_and_feedback_bounds_come_from_the_config() -> None:
    reply = block("print('y' * 9_000)") + "\n" + "z" * 9_000
    root = ScriptedLM([reply, block("FINAL(1)")], name="root")
    cfg = config(history_reply_chars=1_000, history_feedback_chars=1_500, feedback_chars=8_000)
    await run(RLM(root, sub(), repl=FakeREPL.from_config, config=cfg))
    second = root.calls[1]
    assert second[-2]["role"] == "assistant" and len(second[-2]["content"]) <= 1_000 + 60
    assert second[-1]["role"] == "user" and len(second[-1]["content"]) <= 1_500 + 60


# -- compaction -----------------------------------------------------------------------------------
def _long_script(turns: int) -> Callable[[list[Message]], str]:
    def script(index: int, messages: list[Message]) -> str:
        if CLOSING in messages[-1]["content"]:
            return "FINAL('closing')"
        if index < turns:
            return block(f"v{index} = {index}\nprint('turn {index} ' + 'o' * 1500)")
        return block("FINAL(v0 + v1 + v" + str(turns - 1) + ")")

    return counted(script)


async def test_a_long_run_is_compacted_below_the_window_and_keeps_its_variables() -> None:
    turns = 40
    root = ScriptedLM(_long_script(turns), name="root", context_window=6_000)
    result = await run(RLM(root, sub(), repl=FakeREPL.from_config, config=config(max_iterations=turns + 2)))
    assert result.status == "completed"
    assert result.answer == 0 + 1 + (turns - 1)  # variables of compacted turns are still in the REPL
    usable = 6_000 - 1_024
    sizes = [estimate_messages_tokens(call) for call in root.calls]
    assert max(sizes) <= usable, sizes
    last = root.calls[-1]
    assert last[0]["role"] == "system"
    assert any("Question: What is it?" in m["content"] for m in last[:3])
    text = "\n".join(m["content"] for m in last)
    assert "every variable those turns created still exists" in text
    assert "Turn 2: ran `v1 = 1" in text or "earlier of these turns are not listed" in text
    assert f"print('turn {turns - 1} '" in text  # the latest turn is verbatim
    roles = [m["role"] for m in last[1:]]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles  # roles still alternate


async def test_compaction_happens_now_and_then_not_every_turn() -> None:
    turns = 60
    root = ScriptedLM(_long_script(turns), name="root", context_window=16_000)
    await run(RLM(root, sub(), repl=FakeREPL.from_config, config=config(max_iterations=turns + 2)))
    sizes = [estimate_messages_tokens(call) for call in root.calls]
    drops = sum(1 for a, b in itertools.pairwise(sizes) if b < a)
    assert 1 <= drops <= turns // 10, (drops, sizes)  # a prompt cache survives most turns


async def test_an_unknown_window_uses_the_configured_assumption() -> None:
    turns = 30
    root = ScriptedLM(_long_script(turns), name="root")  # reports no window
    await run(
        RLM(
            root, sub(), repl=FakeREPL.from_config, config=config(max_iterations=turns + 2, history_window_tokens=5_000)
        )
    )
    assert max(estimate_messages_tokens(call) for call in root.calls) <= 5_000


# -- overflow -------------------------------------------------------------------------------------
def test_conversation_compaction_keeps_the_head_first_turn_and_recent_turns() -> None:
    limits = HistoryLimits(keep_turns=2, window_tokens=4_000, digest_chars=1_000)
    conversation = Conversation(limits)
    conversation.start([{"role": "system", "content": "sys"}, {"role": "user", "content": "Question: q"}])
    for n in range(1, 31):
        conversation.add_reply(block(f"a{n} = {n}"))
        conversation.add_user(f"Output {n}: " + "x" * 400)
        conversation.fit()
    messages = conversation.messages()
    assert messages[:2] == [{"role": "system", "content": "sys"}, messages[1]]
    assert messages[1]["content"].startswith("Question: q")
    assert messages[2] == {"role": "assistant", "content": block("a1 = 1")}  # the first turn stays
    assert messages[-2]["content"] == block("a30 = 30") and messages[-1]["content"].startswith("Output 30")
    assert "still exists" in messages[3]["content"]  # the digest follows the first turn's output
    assert len(messages[3]["content"]) < 400 + 1_000 + 300
    assert conversation.tokens() <= conversation.threshold


async def test_an_overflow_reported_on_the_wire_is_recovered_by_compacting() -> None:
    """The provider's window is smaller than anyone said: LiteLLM raises, the policy compacts and retries."""
    limit_chars = 14_000
    refused: list[int] = []
    turns = 12

    def reply(body: dict[str, Any]) -> str | Fault:
        size = len(json.dumps(body["messages"]))
        if size > limit_chars:
            refused.append(size)
            return Fault.context_length_exceeded(max_tokens=limit_chars // 4, prompt_tokens=size // 4)
        index = len(served)
        served.append(size)
        if index < turns:
            return block(f"w{index} = {index}\nprint('x' * 3000)")
        return block("FINAL(w0 + w11)")

    served: list[int] = []
    with FakeOpenAIServer(reply) as server:
        root = LiteLLMModel("openai/tiny-window", api_base=server.api_base, api_key="sk-test", max_retries=0)
        result = await run(RLM(root, sub(), repl=FakeREPL.from_config, config=config(max_iterations=turns + 3)))
    assert refused, "the test must make the server refuse at least one prompt"
    assert result.status == "completed", (result.status, result.error)
    assert result.answer == 11
    assert all(size <= limit_chars for size in served)


async def test_an_overflow_error_without_a_window_is_recovered_too() -> None:
    """Some providers say "too long" without saying how long is allowed: the policy learns from the prompt it sent."""
    refused: list[int] = []
    answered = [0]
    turns = 20

    def reply(messages: list[Message]) -> str:
        size = estimate_messages_tokens(messages)
        if size > 3_000:
            refused.append(size)
            raise ContextWindowExceededError("prompt is too long", model="root", prompt_tokens=0, max_tokens=0)
        index = answered[0]
        answered[0] += 1
        if CLOSING in messages[-1]["content"]:
            return "FINAL('closing')"
        if index < turns:
            return block(f"u{index} = {index}\nprint('v' * 1500)")
        return block(f"FINAL(u0 + u{turns - 1})")

    root = ScriptedLM(reply, name="root")  # reports no window: 128K assumed until the first refusal
    result = await run(RLM(root, sub(), repl=FakeREPL.from_config, config=config(max_iterations=turns + 3)))
    assert refused, "the test must make the model refuse at least one prompt"
    assert result.status == "completed", (result.status, result.error)
    assert result.answer == turns - 1
    assert len(refused) <= 3, refused  # the window it learned holds for the rest of the run


async def test_a_window_that_overflows_every_turn_still_ends_with_a_closing_answer() -> None:
    def reply(messages: list[Message]) -> str:
        if CLOSING in messages[-1]["content"]:
            return "FINAL('best effort')"
        raise ContextWindowExceededError("prompt too long", model="root", prompt_tokens=9_999, max_tokens=9_000)

    root = ScriptedLM(reply, name="root")
    result = await run(RLM(root, sub(), repl=FakeREPL.from_config, config=config(max_iterations=5)))
    assert result.answer == "best effort"
    assert result.status == "budget_exhausted" and result.limit == "context_window"
    assert estimate_messages_tokens(root.calls[-1]) < 9_000


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_history_fields_are_config_fields_and_validated(fraction: float) -> None:
    cfg = RLMConfig(compact_at_fraction=0.5, history_keep_turns=2, history_reply_chars=1_000)
    assert (cfg.compact_at_fraction, cfg.history_keep_turns, cfg.history_reply_chars) == (0.5, 2, 1_000)
    with pytest.raises(ValueError, match="compact_at_fraction"):
        RLMConfig(compact_at_fraction=fraction)
