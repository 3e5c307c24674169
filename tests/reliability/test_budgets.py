"""Issue 12, item 2: budgets are ceilings, closing requests and children included, over the real LiteLLM path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wire_helpers import LITELLM_NOISE, ROOT, SUB, Wire, block, config, is_closing, lite, question_of, server_usage

from rlm_integrations import RLM, RLMResult
from rlm_integrations.core.config import ModelPrice
from rlm_integrations.errors import BudgetConfigError
from rlm_integrations.testing import FakeOpenAIServer, FakeREPL

pytestmark = LITELLM_NOISE

INPUT_PRICE, OUTPUT_PRICE = 1e-6, 2e-6


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def fan_out_replies(root_code: str, child_code: str = "print(llm_query('y'))") -> Callable[[dict[str, Any]], str]:
    """The root fans out every turn; children explore with sub-calls; closing requests answer."""

    def reply(body: dict[str, Any]) -> str:
        if is_closing(body):
            return "FINAL('best so far')"
        if body["model"] == SUB:
            return "sub reply"
        return block(root_code if question_of(body) == "Parent?" else child_code)

    return reply


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[dict[str, Any]], str]], FakeOpenAIServer]]:
    servers: list[FakeOpenAIServer] = []

    def start(reply: Callable[[dict[str, Any]], str]) -> FakeOpenAIServer:
        server = FakeOpenAIServer(Wire(reply, latency_s=0.01)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


async def run(rlm: RLM, **overrides: Any) -> RLMResult:
    return await asyncio.wait_for(rlm.acompletion("Parent?", "some context", **overrides), timeout=120)


@pytest.mark.slow  # a fan-out of child runs over HTTP
async def test_max_llm_calls_holds_under_a_fan_out_of_children_and_their_closing_requests(serve: Any) -> None:
    server = serve(fan_out_replies("print(rlm_query_batched(['Child?'] * 8))"))
    rlm = RLM(
        lite(server, ROOT),
        lite(server, SUB),
        repl=FakeREPL.from_config,
        config=config(max_llm_calls=10, sub_concurrency=4),
    )
    result = await run(rlm)
    assert result.status == "budget_exhausted" and result.limit == "max_llm_calls"
    assert len(server.requests) <= 10  # the old engine made 11-19: closing requests were never counted
    assert result.usage.calls == len(server.requests)
    assert result.answer == "best so far"  # the root's closing request had its reserved call
    closings = [r for r in server.requests if r.body and is_closing(r.body)]
    assert len(closings) >= 2  # children closed inside the budget too


async def test_max_cost_usd_holds_under_a_fan_out(serve: Any) -> None:
    big = "x" * 2_000
    server = serve(fan_out_replies(f"print(llm_query_batched(['{big}'] * 30))"))
    prices = {"input_cost_per_token": INPUT_PRICE, "output_cost_per_token": OUTPUT_PRICE}
    rlm = RLM(
        lite(server, ROOT, **prices),
        lite(server, SUB, **prices),
        repl=FakeREPL.from_config,
        config=config(max_cost_usd=0.01, reply_reserve_tokens=256, sub_concurrency=16),
    )
    result = await run(rlm)
    _, prompt, completion = server_usage(server)
    spent = prompt * INPUT_PRICE + completion * OUTPUT_PRICE
    assert result.status == "budget_exhausted" and result.limit == "max_cost_usd"
    assert spent <= 0.01  # the old engine spent 0.012-0.02 of a 0.01 budget
    assert result.usage.cost_usd == pytest.approx(spent)
    assert result.answer == "best so far"
    # every request carried the completion cap the reservation assumed
    assert {r.body["max_tokens"] for r in server.requests if r.body} == {256}


async def test_max_tokens_holds_under_a_fan_out(serve: Any) -> None:
    big = "x" * 2_000
    server = serve(fan_out_replies(f"print(llm_query_batched(['{big}'] * 30))"))
    rlm = RLM(
        lite(server, ROOT),
        lite(server, SUB),
        repl=FakeREPL.from_config,
        config=config(max_tokens=8_000, sub_concurrency=16),
    )
    result = await run(rlm)
    _, prompt, completion = server_usage(server)
    assert result.status == "budget_exhausted" and result.limit == "max_tokens"
    assert prompt + completion <= 8_000
    assert result.usage.total_tokens == prompt + completion
    assert result.answer == "best so far"


async def test_an_unpriced_model_with_max_cost_is_refused_up_front(serve: Any) -> None:
    server = serve(fan_out_replies("FINAL(1)"))
    with pytest.raises(BudgetConfigError) as caught:
        RLM(lite(server, ROOT), lite(server, SUB), repl=FakeREPL.from_config, config=config(max_cost_usd=1.0))
    assert caught.value.models == [f"openai/{ROOT}", f"openai/{SUB}"]
    assert "prices" in str(caught.value)
    # a per-call override is refused the same way, before any request
    rlm = RLM(lite(server, ROOT), lite(server, SUB), repl=FakeREPL.from_config, config=config())
    with pytest.raises(BudgetConfigError):
        await run(rlm, max_cost_usd=1.0)
    assert server.requests == []


async def test_configured_prices_price_and_bound_an_unpriced_model(serve: Any) -> None:
    server = serve(fan_out_replies("print(llm_query('hello'))"))
    price = ModelPrice(input_usd_per_token=INPUT_PRICE, output_usd_per_token=OUTPUT_PRICE)
    prices = {f"openai/{ROOT}": price, f"openai/{SUB}": price}
    rlm = RLM(
        lite(server, ROOT),
        lite(server, SUB),
        repl=FakeREPL.from_config,
        config=config(max_cost_usd=0.005, prices=prices, reply_reserve_tokens=256),
    )
    result = await run(rlm)
    _, prompt, completion = server_usage(server)
    spent = prompt * INPUT_PRICE + completion * OUTPUT_PRICE
    assert result.limit == "max_cost_usd"
    assert result.usage.cost_complete  # priced by the configured prices, not unknown
    assert result.usage.cost_usd == pytest.approx(spent)
    assert spent <= 0.005


# -- the budget's reservations, directly ------------------------------------------------------------


async def test_a_call_waits_for_room_a_call_in_flight_gives_back_and_is_refused_when_none_can() -> None:
    from rlm_integrations.core.budget import Budget, BudgetExceeded, Share
    from rlm_integrations.lm.protocol import TokenUsage

    budget = Budget(config(max_tokens=1_000))
    closing = budget.try_reserve(Share(1, 300), standing=True)
    first = await budget.reserve(Share(1, 600))  # 900 held of 1,000
    waiter = asyncio.create_task(budget.reserve(Share(1, 400)))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # it fits only if the call in flight gives back part of its share
    budget.settle(first, "m", TokenUsage(prompt_tokens=200, completion_tokens=50, calls=1))
    second = await asyncio.wait_for(waiter, 1)  # 250 spent + 300 standing + 400 = 950
    with pytest.raises(BudgetExceeded) as caught:  # 250 spent + 300 standing + 500 > 1,000 whatever comes back
        await asyncio.wait_for(budget.reserve(Share(1, 500)), 1)
    assert caught.value.limit == "max_tokens"
    budget.release(second)
    budget.release(closing)
    assert budget.held() == Share()
    assert budget.spent().tokens == 250


def test_a_langchain_chat_model_needs_a_price_for_a_cost_limit() -> None:
    pytest.importorskip("langchain_core")
    from rlm_integrations.langchain import RLMRunnable
    from rlm_integrations.langchain.fakes import ScriptedChatModel

    explore = ScriptedChatModel(replies=lambda messages: block("print('still working')"))
    with pytest.raises(BudgetConfigError, match="scripted-chat"):  # the old engine ran on, never counting a cent
        RLMRunnable(model=explore, max_cost_usd=0.01).invoke("q")
    price = ModelPrice(input_usd_per_token=1e-5, output_usd_per_token=1e-5)
    priced = RLMRunnable(model=explore, max_cost_usd=0.15, rlm_config=config(prices={"scripted-chat": price}))
    out = priced.invoke("q")
    assert (out.status, out.limit) == ("budget_exhausted", "max_cost_usd")
    assert out.usage.cost_complete and out.usage.cost_usd is not None
    assert 0 < out.usage.cost_usd <= 0.15
