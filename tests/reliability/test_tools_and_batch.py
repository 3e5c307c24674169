"""Tools cannot hide the REPL's built-ins, and a failed batch item is told apart from a reply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.errors import ConfigError, ReservedNameError
from rlm_integrations.lm import Message, ScriptedLM
from rlm_integrations.testing import FakeREPL


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


async def run(rlm: RLM, query: str = "What is it?", context: Any = "hello world") -> RLMResult:
    return await asyncio.wait_for(rlm.acompletion(query, context), timeout=60)


def config() -> RLMConfig:
    return RLMConfig(cell_timeout_s=20.0)


@pytest.mark.parametrize(
    "name", ["llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "FINAL", "FINAL_VAR", "context"]
)
def test_a_tool_named_like_a_repl_builtin_is_refused_at_construction(name: str) -> None:
    root = ScriptedLM([block("FINAL(1)")])
    with pytest.raises(ReservedNameError, match=rf"{name}.*Register it under another name") as caught:
        RLM(root, tools={name: lambda *a: "tool"})
    assert caught.value.name == name
    assert isinstance(caught.value, ConfigError)
    assert root.calls == []  # refused before anything ran


@pytest.mark.parametrize("name", ["print", "len", "str", "sorted"])
def test_a_tool_named_like_a_builtin_the_cells_use_is_refused(name: str) -> None:
    with pytest.raises(ReservedNameError, match=name):
        RLM(ScriptedLM([block("FINAL(1)")]), tools={name: lambda *a: 0})


@pytest.mark.parametrize("name", ["class", "lambda", "None"])
def test_a_tool_named_like_a_keyword_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="public Python identifier"):
        RLM(ScriptedLM([block("FINAL(1)")]), tools={name: lambda: 0})


def test_a_tool_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a callable"):
        RLM(ScriptedLM([block("FINAL(1)")]), tools={"lookup": 42})


def _flaky(messages: list[Message]) -> str:
    prompt = messages[-1]["content"]
    if prompt == "bad":
        raise RuntimeError("provider exploded")
    if prompt == "looks-like-error":
        return "Error: this is what the model really said"
    return prompt.upper()


async def test_a_failed_batch_item_is_a_call_error_that_code_can_test() -> None:
    code = (
        "items = llm_query_batched(['a', 'bad', 'looks-like-error'])\n"
        "FINAL([[isinstance(r, CallError), getattr(r, 'error', None), str(r)] for r in items])"
    )
    root = ScriptedLM([block(code)], name="root")
    result = await run(RLM(root, ScriptedLM(_flaky, name="sub"), repl=FakeREPL.from_config, config=config()))
    assert result.status == "completed", result.error
    ok, failed, lookalike = result.answer
    assert ok == [False, None, "A"]
    assert failed[0] is True and failed[1].startswith("RuntimeError") and "provider exploded" in failed[1]
    assert failed[2].startswith("Error: RuntimeError")  # still reads like the old error string
    assert lookalike == [False, None, "Error: this is what the model really said"]  # a reply is never an error


async def test_failed_items_of_rlm_query_batched_are_call_errors_too() -> None:
    code = "items = rlm_query_batched(['fine', 'x'], [None, 5])\nFINAL([isinstance(r, CallError) for r in items])"

    def root_reply(messages: list[Message]) -> str:
        question = next(m["content"] for m in messages if m["role"] == "user" and m["content"].startswith("Question"))
        if question.startswith("Question: fine"):
            return block("FINAL('child ok')")
        if question.startswith("Question: x"):
            raise RuntimeError("child model down")
        return block(code)

    root = ScriptedLM(root_reply, name="root")
    result = await run(RLM(root, ScriptedLM(lambda m: "sub", name="sub"), repl=FakeREPL.from_config, config=config()))
    assert result.answer == [False, True]


def test_the_system_prompt_tells_the_model_how_to_spot_a_failed_item() -> None:
    from rlm_integrations.core import prompts

    text = prompts.system_prompt(sub_prompt_chars=1_000)
    assert "CallError" in text
