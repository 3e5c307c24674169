"""Full RLM runs with the real LiteLLMModel over HTTP against FakeOpenAIServer on 127.0.0.1."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # prices from LiteLLM's bundled map, never the internet

from collections.abc import Iterator
from typing import Any

import pytest
from engine_helpers import block, config, conversation, run

from rlm_integrations import RLM
from rlm_integrations.core.events import LMCallFinished, SubCallFinished
from rlm_integrations.core.policy import ChatPolicy
from rlm_integrations.core.worked_examples import example_for
from rlm_integrations.lm import LiteLLMModel
from rlm_integrations.testing import FakeOpenAIServer, FakeREPL, Fault

ROOT = "root-alias"
SUB = "sub-alias"


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def turn(body: dict[str, Any]) -> int:
    """0 for a run's first root request, 1 for its second, ... (a worked example before the question is not a turn)."""
    return sum(1 for m in conversation(body["messages"]) if m.get("role") == "assistant")


def is_closing(body: dict[str, Any]) -> bool:
    return "Do not write code" in body["messages"][-1]["content"]


def model(server: FakeOpenAIServer, alias: str, **kwargs: Any) -> LiteLLMModel:
    options: dict[str, Any] = {
        "api_base": server.api_base,
        "api_key": "sk-test",
        "timeout_s": 10.0,
        "max_retries": 2,
        "retry_initial_delay_s": 0.001,
        "retry_max_delay_s": 0.05,
    }
    options.update(kwargs)
    return LiteLLMModel(f"openai/{alias}", **options)


def serve(root_script: list[str], sub_reply: Any = None) -> FakeOpenAIServer:
    """A server answering the root alias from `root_script` by turn and the sub alias with `sub_reply`."""

    def reply(body: dict[str, Any]) -> str | Fault:
        prompt = body["messages"][-1]["content"]
        if body["model"] == SUB:
            return sub_reply(prompt) if sub_reply is not None else f"SUB[{prompt}]"
        if is_closing(body):
            return "FINAL('closing')"
        return root_script[min(turn(body), len(root_script) - 1)]

    return FakeOpenAIServer(reply)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    script = [
        block("print(len(context))"),
        block("parts = llm_query_batched(['one', 'two'])\nprint(parts)"),
        block("first = llm_query('hello ' + context[:5])"),
        "FINAL_VAR(first)",
    ]
    with serve(script) as running:
        yield running


def chat_requests(server: FakeOpenAIServer, alias: str) -> list[Any]:
    return [r for r in server.requests if r.body and r.body.get("model") == alias]


async def test_full_run_over_http_with_usage_from_the_server(server: FakeOpenAIServer) -> None:
    rlm = RLM(model(server, ROOT), model(server, SUB), repl=FakeREPL.from_config, config=config())
    result = await run(rlm, "Say hello", "world, and more")

    assert result.status == "completed", result.error
    assert result.answer == "SUB[hello world]"
    assert result.iterations == 4
    roots, subs = chat_requests(server, ROOT), chat_requests(server, SUB)
    assert len(roots) == 4 and len(subs) == 3
    assert all(r.status == 200 for r in server.requests)
    # the feedback the root model read came back through HTTP
    assert "['SUB[one]', 'SUB[two]']" in roots[2].body["messages"][-1]["content"]
    # usage is what the server reported, summed over every call
    served = [r.usage for r in server.requests]
    assert all(u is not None for u in served)
    assert result.usage.total.prompt_tokens == sum(u["prompt_tokens"] for u in served if u)
    assert result.usage.total.completion_tokens == sum(u["completion_tokens"] for u in served if u)
    assert result.usage.calls == 7
    assert sorted(result.usage.by_model) == sorted([ROOT, SUB])
    assert result.usage.by_model[ROOT].calls == 4 and result.usage.by_model[SUB].calls == 3
    root_prompt_tokens = [
        e.usage.prompt_tokens for e in result.trajectory.events if isinstance(e, LMCallFinished) and e.usage
    ]
    assert root_prompt_tokens == [r.usage["prompt_tokens"] for r in roots]
    # an unknown alias has no price: unknown, never zero
    assert result.usage.cost_usd is None and result.usage.cost_complete is False
    # the root conversation was sent whole each turn: system prompt first, no context in it
    assert roots[0].body["messages"][0]["role"] == "system"
    assert len(roots[-1].body["messages"]) == 2 + 2 * 3


async def test_full_run_over_http_with_the_worked_example(server: FakeOpenAIServer) -> None:
    rlm = RLM(
        model(server, ROOT),
        model(server, SUB),
        repl=FakeREPL.from_config,
        config=config(),
        policy=lambda m: ChatPolicy(m, example=True),
    )
    result = await run(rlm, "Say hello", "world, and more")

    assert result.status == "completed", result.error
    assert result.answer == "SUB[hello world]"
    assert result.iterations == 4
    # the server took the example (an assistant message right after the system prompt is fine) ...
    assert all(r.status == 200 for r in server.requests)
    roots = chat_requests(server, ROOT)
    assert len(roots) == 4
    example = example_for("lookup")
    for request in roots:
        messages = request.body["messages"]
        assert messages[0]["role"] == "system"
        assert messages[1 : 1 + len(example)] == example
    first_roles = [m["role"] for m in roots[0].body["messages"]]
    assert first_roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert roots[0].body["messages"][-1]["content"].startswith("Question: Say hello\n")
    # ... and the run's own turns follow it
    assert len(roots[-1].body["messages"]) == 2 + len(example) + 2 * 3
    assert "['SUB[one]', 'SUB[two]']" in roots[2].body["messages"][-1]["content"]


async def test_priced_root_and_unpriced_sub(server: FakeOpenAIServer) -> None:
    root = model(server, ROOT, input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    rlm = RLM(root, model(server, SUB), repl=FakeREPL.from_config, config=config())
    result = await run(rlm, "Say hello", "world")
    expected = sum(
        r.usage["prompt_tokens"] * 1e-6 + r.usage["completion_tokens"] * 2e-6 for r in chat_requests(server, ROOT)
    )
    assert result.usage.by_model[ROOT].cost_usd == pytest.approx(expected)
    assert result.usage.by_model[SUB].cost_usd is None
    assert result.usage.cost_usd == pytest.approx(expected)  # a lower bound ...
    assert result.usage.cost_complete is False  # ... and said to be one


async def test_rate_limit_is_retried_inside_a_run(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=0), Fault.server_error(503))
    rlm = RLM(model(server, ROOT), model(server, SUB), repl=FakeREPL.from_config, config=config())
    result = await run(rlm, "Say hello", "world")
    assert result.status == "completed", result.error
    statuses = [r.status for r in server.requests]
    assert statuses[:3] == [429, 503, 200]
    assert result.usage.calls == statuses.count(200) == 7  # failed attempts are not calls


async def test_root_model_rejection_ends_the_run_with_status_error() -> None:
    def reply(body: dict[str, Any]) -> str | Fault:
        if turn(body) == 0:
            return block("print(1)")
        return Fault.error(400, "your request is invalid, friend")

    with FakeOpenAIServer(reply) as server:
        rlm = RLM(model(server, ROOT), repl=FakeREPL.from_config, config=config())
        result = await run(rlm, "q", "ctx")
    assert result.status == "error"
    assert result.error is not None and "your request is invalid, friend" in result.error
    assert result.iterations == 2


async def test_failing_sub_call_over_http_does_not_sink_the_batch() -> None:
    def sub_reply(prompt: str) -> str | Fault:
        return Fault.server_error(500, "sub model melted") if prompt == "bad" else prompt.upper()

    script = [block("FINAL(llm_query_batched(['a', 'bad', 'c']))")]
    with serve(script, sub_reply) as server:
        rlm = RLM(model(server, ROOT), model(server, SUB, max_retries=1), repl=FakeREPL.from_config, config=config())
        result = await run(rlm, "q", "ctx")
    assert result.status == "completed"
    first, failed, last = result.answer
    assert (first, last) == ("A", "C")
    assert failed.startswith("Error: ModelError") and "sub model melted" in failed
    assert len([r for r in chat_requests(server, SUB) if r.status == 500]) == 2  # first try and one retry
    errors = [e for e in result.trajectory.events if isinstance(e, SubCallFinished) and e.error]
    assert len(errors) == 1


async def test_batched_sub_calls_reach_the_server_concurrently() -> None:
    script = [block("FINAL(llm_query_batched(['p' + str(i) for i in range(8)]))")]
    with serve(script) as server:
        server.latency_s = 0.5
        rlm = RLM(model(server, ROOT), model(server, SUB), repl=FakeREPL.from_config, config=config(sub_concurrency=8))
        result = await run(rlm, "q", "ctx")
    assert result.answer == [f"SUB[p{i}]" for i in range(8)]
    arrivals = [r.received_at for r in chat_requests(server, SUB)]
    assert len(arrivals) == 8
    assert max(arrivals) - min(arrivals) < 0.45  # all in flight together: in series they would span 3.5 s


async def test_sub_window_from_the_model_refuses_an_oversized_prompt_before_any_request() -> None:
    code = (
        "try:\n    llm_query(context * 10)\n    r = 'sent'\nexcept ValueError as error:\n    r = str(error)\nFINAL(r)"
    )
    with serve([block(code)]) as server:
        sub = model(server, SUB, context_window=4_000)
        rlm = RLM(model(server, ROOT), sub, repl=FakeREPL.from_config, config=config())
        result = await run(rlm, "q", "z" * 4_000)
    assert "nothing was sent" in result.answer
    assert chat_requests(server, SUB) == []


def test_sync_completion_over_http() -> None:
    with serve([block("FINAL(llm_query('ping'))")]) as server:
        rlm = RLM(model(server, ROOT), model(server, SUB), repl=FakeREPL.from_config, config=config())
        result = rlm.completion("q", context="ctx")
    assert (result.status, result.answer) == ("completed", "SUB[ping]")


async def test_sub_max_tokens_reaches_the_sub_model_request() -> None:
    with serve([block("FINAL(llm_query('short please'))")]) as server:
        rlm = RLM(model(server, ROOT), model(server, SUB), repl=FakeREPL.from_config, config=config(sub_max_tokens=77))
        result = await run(rlm, "q", "ctx")
    assert result.answer == "SUB[short please]"
    (sub_request,) = chat_requests(server, SUB)
    assert sub_request.body["max_tokens"] == 77
    assert "max_tokens" not in chat_requests(server, ROOT)[0].body
