"""Issue 12, item 1: every way a config arrives is validated before anything starts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from wire_helpers import LITELLM_NOISE, ROOT, SUB, Wire, block, config, is_closing, lite

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.testing import FakeOpenAIServer, FakeREPL

pytestmark = LITELLM_NOISE


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    def reply(body: dict[str, Any]) -> str:
        if is_closing(body):
            return "FINAL('closing')"
        return block("FINAL(len(context))") if body["model"] == ROOT else "sub reply"

    with FakeOpenAIServer(Wire(reply)) as running:
        yield running


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_iterations": 0},
        {"max_iterations": -1},
        {"max_iterations": "many"},
        {"max_llm_calls": -1},
        {"timeout_s": -3},
        {"max_cost_usd": -1},
        {"sub_concurrency": 0},
        {"max_depth": -2},
        {"prices": {"x": {"input_usd_per_token": -1, "output_usd_per_token": 0}}},
        {"max_iteration": 3},  # a misspelt field
    ],
)
async def test_a_bad_per_call_override_is_refused_naming_the_field_before_any_call(
    server: FakeOpenAIServer, overrides: dict[str, Any]
) -> None:
    rlm = RLM(lite(server, ROOT), lite(server, SUB), repl=FakeREPL.from_config, config=config())
    with pytest.raises(ValidationError) as caught:
        # bounded: on the old code `sub_concurrency=0` hung forever
        await asyncio.wait_for(rlm.acompletion("q", "ctx", **overrides), timeout=30)
    assert next(iter(overrides)) in str(caught.value)
    assert server.requests == []


async def test_an_override_is_coerced_and_checked_like_the_constructor(server: FakeOpenAIServer) -> None:
    rlm = RLM(lite(server, ROOT), lite(server, SUB), repl=FakeREPL.from_config, config=config())
    # "3" is what the constructor accepts as 3; the old per-call path kept the string and failed mid-run
    result = await asyncio.wait_for(rlm.acompletion("How long?", "abcd", max_iterations="3"), timeout=60)
    assert (result.status, result.answer) == ("completed", 4), result.error
    assert rlm.config.max_iterations == 20  # the override applied to that call only


def test_with_overrides_is_the_one_validation_path() -> None:
    base = RLMConfig(max_iterations=5)
    assert base.with_overrides() is base
    assert base.with_overrides(timeout_s=10).timeout_s == 10.0
    assert base.with_overrides(timeout_s=10).max_iterations == 5
    with pytest.raises(ValidationError, match="timeout_s"):
        base.with_overrides(timeout_s=0)
    with pytest.raises(ValidationError, match="reply_reserve_tokens"):
        base.with_overrides(reply_reserve_tokens=1)


def test_langchain_and_dspy_options_go_through_the_same_validation() -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("dspy")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from rlm_integrations.dspy import RLM as DSPyRLM
    from rlm_integrations.langchain import RLMRunnable

    with pytest.raises(ValidationError, match="max_iterations"):
        DSPyRLM("question -> answer", max_iterations=0)
    runnable = RLMRunnable(model=FakeListChatModel(responses=["x"]))
    with pytest.raises(ValidationError, match="sub_concurrency"):
        runnable.config_for().with_overrides(sub_concurrency=0)
    with pytest.raises(ValidationError):
        RLMRunnable(model=FakeListChatModel(responses=["x"]), max_llm_calls=-1)
