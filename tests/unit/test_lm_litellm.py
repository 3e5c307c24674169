"""The real LiteLLMModel over HTTP against FakeOpenAIServer on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rlm_integrations.errors import (
    ConfigError,
    ContextWindowExceededError,
    MissingAPIKeyError,
    ModelError,
    UnknownModelError,
    UsageError,
)
from rlm_integrations.lm import LanguageModel, LiteLLMModel, Message
from rlm_integrations.lm._errors import retry_after_s
from rlm_integrations.lm.litellm._session import sessions
from rlm_integrations.lm.tokens import estimate_tokens
from rlm_integrations.testing import FakeOpenAIServer, Fault

PROVIDER_KEYS = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GROQ_API_KEY"]


def user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_KEYS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


def make_model(server: FakeOpenAIServer, model: str = "openai/fake-model", **kwargs: Any) -> LiteLLMModel:
    options: dict[str, Any] = {
        "api_base": server.api_base,
        "api_key": "sk-test",
        "timeout_s": 5.0,
        "max_retries": 2,
        "retry_initial_delay_s": 0.001,
        "retry_max_delay_s": 0.05,
    }
    options.update(kwargs)
    return LiteLLMModel(model, **options)


# -- replies, usage, cost ----------------------------------------------------------------


async def test_reply_and_usage_come_from_the_response() -> None:
    with FakeOpenAIServer(["The answer is 42.", "second"]) as server:
        model = make_model(server, temperature=0.3)
        completion = await model.acomplete(
            [{"role": "system", "content": "Be brief."}, *user("What is 6 x 7?")], max_tokens=7
        )
        (request,) = server.requests
    assert isinstance(model, LanguageModel)
    assert completion.text == "The answer is 42."
    assert completion.model == "fake-model"
    assert request.usage is not None
    assert completion.usage.prompt_tokens == request.usage["prompt_tokens"] > 0
    assert completion.usage.completion_tokens == request.usage["completion_tokens"] == estimate_tokens(completion.text)
    assert completion.usage.calls == 1
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.body["model"] == "fake-model"
    assert request.body["messages"][-1] == {"role": "user", "content": "What is 6 x 7?"}
    assert request.body["temperature"] == 0.3
    assert request.body["max_tokens"] == 7


async def test_cost_is_none_for_a_model_without_a_price(server: FakeOpenAIServer) -> None:
    model = make_model(server, "openai/my-local-alias")
    completion = await model.acomplete(user("hi"))
    assert completion.usage.cost_usd is None
    assert model.context_window is None


async def test_cost_comes_from_the_local_price_map_for_a_known_model(server: FakeOpenAIServer) -> None:
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    model = make_model(server, "openai/gpt-4o-mini")
    completion = await model.acomplete(user("price me " * 50))
    expected = (
        completion.usage.prompt_tokens * prices["input_cost_per_token"]
        + completion.usage.completion_tokens * prices["output_cost_per_token"]
    )
    assert completion.usage.cost_usd == pytest.approx(expected)
    assert completion.usage.cost_usd is not None
    assert completion.usage.cost_usd > 0
    assert model.context_window == prices["max_input_tokens"]


async def test_custom_prices_override_the_map(server: FakeOpenAIServer) -> None:
    model = make_model(server, "openai/my-local-alias", input_cost_per_token=0.0, output_cost_per_token=0.0)
    free = await model.acomplete(user("hi"))
    assert free.usage.cost_usd == 0.0
    priced = make_model(server, "openai/my-local-alias", input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    completion = await priced.acomplete(user("hi"))
    assert completion.usage.cost_usd == pytest.approx(
        completion.usage.prompt_tokens * 1e-6 + completion.usage.completion_tokens * 2e-6
    )
    assert "input_cost_per_token" not in server.requests[-1].body


def test_context_window_argument_wins(server: FakeOpenAIServer) -> None:
    assert make_model(server, "openai/gpt-4o-mini", context_window=4096).context_window == 4096


def test_count_tokens_is_the_estimate(server: FakeOpenAIServer) -> None:
    assert make_model(server).count_tokens("x" * 40) == 10


async def test_missing_usage_is_estimated_not_zero() -> None:
    body = '{"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "no usage here"}, "finish_reason": "stop"}]}'  # noqa: E501
    with FakeOpenAIServer([Fault.malformed(body)]) as server:
        completion = await make_model(server).acomplete(user("hello there"))
    assert completion.text == "no usage here"
    assert completion.usage.completion_tokens == estimate_tokens("no usage here")
    assert completion.usage.prompt_tokens > 0


# -- retries -----------------------------------------------------------------------------


async def test_rate_limit_then_success_honours_retry_after(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=0.3))
    model = make_model(server, retry_max_delay_s=2.0)
    started = time.perf_counter()
    completion = await model.acomplete(user("patience"))
    elapsed = time.perf_counter() - started
    assert completion.text == "echo: patience"
    assert [r.status for r in server.requests] == [429, 200]
    assert elapsed >= 0.3  # the backoff alone would have been ~2 ms


async def test_retry_after_is_capped_by_the_max_delay(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=30))
    started = time.perf_counter()
    completion = await make_model(server, retry_max_delay_s=0.05).acomplete(user("hurry"))
    assert completion.text == "echo: hurry"
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_then_success(server: FakeOpenAIServer, status: int) -> None:
    server.inject(Fault.server_error(status))
    completion = await make_model(server).acomplete(user("again"))
    assert completion.text == "echo: again"
    assert [r.status for r in server.requests] == [status, 200]


async def test_dropped_connection_is_retried(server: FakeOpenAIServer) -> None:
    server.inject(Fault.disconnect())
    completion = await make_model(server).acomplete(user("reconnect"))
    assert completion.text == "echo: reconnect"
    assert len(server.requests) == 2


async def test_retries_exhausted_raise_model_error(server: FakeOpenAIServer) -> None:
    from litellm.exceptions import InternalServerError

    server.inject(*[Fault.server_error()] * 3)
    model = make_model(server, max_retries=2)
    with pytest.raises(ModelError, match=r"failed after 3 attempts") as caught:
        await model.acomplete(user("doomed"))
    assert caught.value.model == "openai/fake-model"
    assert isinstance(caught.value.__cause__, InternalServerError)
    assert [r.status for r in server.requests] == [500, 500, 500]


async def test_rate_limits_outlasting_the_retries(server: FakeOpenAIServer) -> None:
    server.inject(*[Fault.rate_limit(retry_after=0)] * 2)
    with pytest.raises(ModelError, match=r"RateLimitError \(HTTP 429\)"):
        await make_model(server, max_retries=1).acomplete(user("busy"))
    assert len(server.requests) == 2


async def test_slow_reply_within_the_timeout(server: FakeOpenAIServer) -> None:
    server.inject(Fault.slow(0.2))
    completion = await make_model(server, timeout_s=3.0).acomplete(user("take your time"))
    assert completion.text == "echo: take your time"


async def test_slow_reply_hits_the_timeout(server: FakeOpenAIServer) -> None:
    server.inject(Fault.slow(10), Fault.slow(10))
    model = make_model(server, timeout_s=0.3, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"failed after 2 attempts .*timed out after 0.3s"):
        await model.acomplete(user("too slow"))
    assert time.perf_counter() - started < 3.0
    assert len(server.requests) == 2


# -- errors that are not retried ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"id": "chatcmpl-broken", "choices": [', "malformed response"),
        ('{"id": "x", "object": "chat.completion"}', "malformed response"),
        (
            '{"id": "x", "object": "chat.completion", "model": "m", "choices": []}',
            "malformed response: it has no choices",
        ),
        ("[1, 2, 3]", "malformed response"),
    ],
    ids=["bad-json", "missing-choices", "empty-choices", "not-an-object"],
)
async def test_malformed_response_is_a_model_error(server: FakeOpenAIServer, body: str, message: str) -> None:
    server.inject(Fault.malformed(body))
    with pytest.raises(ModelError, match=message):
        await make_model(server).acomplete(user("hi"))
    assert len(server.requests) == 1  # not retried


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_caller_errors_are_not_retried(server: FakeOpenAIServer, status: int) -> None:
    server.inject(Fault.error(status, f"nope ({status})"))
    with pytest.raises(ModelError, match=rf"rejected the request.*: .*HTTP {status}.*nope \({status}\)") as caught:
        await make_model(server, max_retries=4).acomplete(user("hi"))
    assert len(server.requests) == 1
    assert ("check the API key" in str(caught.value)) == (status in (401, 403))


async def test_context_window_error(server: FakeOpenAIServer) -> None:
    server.inject(Fault.context_length_exceeded(max_tokens=8192, prompt_tokens=9000))
    with pytest.raises(ContextWindowExceededError) as caught:
        await make_model(server).acomplete(user("long " * 100))
    assert isinstance(caught.value, ModelError)
    assert (caught.value.prompt_tokens, caught.value.max_tokens) == (9000, 8192)
    assert "exceeds the model's context window of 8192 tokens" in str(caught.value)
    assert len(server.requests) == 1


async def test_running_out_of_server_replies_is_reported() -> None:
    with FakeOpenAIServer(["only one"]) as server:
        model = make_model(server)
        assert (await model.acomplete(user("1"))).text == "only one"
        with pytest.raises(ModelError, match=r"ran out of scripted replies \(1 were scripted\)"):
            await model.acomplete(user("2"))


# -- validation before any spend ---------------------------------------------------------


@pytest.mark.parametrize("name", ["definitely-not-a-model-xyz", "nonprovider/some-model", "", "   "])
def test_unknown_model(name: str) -> None:
    with pytest.raises(UnknownModelError) as caught:
        LiteLLMModel(name, api_key="sk-test")
    assert isinstance(caught.value, UsageError)
    assert "openai/" in str(caught.value)  # names the fix


@pytest.mark.parametrize(
    ("name", "env_var"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-x", "ANTHROPIC_API_KEY"),
    ],
)
def test_missing_api_key(name: str, env_var: str) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        LiteLLMModel(name)
    assert caught.value.env_vars == [env_var]
    assert caught.value.model == name
    assert env_var in str(caught.value)
    assert "api_key=" in str(caught.value)


def test_api_key_from_the_environment_or_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LiteLLMModel("openai/gpt-4o-mini", api_key="sk-passed").provider == "openai"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert LiteLLMModel("openai/gpt-4o-mini").context_window is not None


def test_no_key_needed_with_api_base() -> None:
    model = LiteLLMModel("openai/local-model", api_base="http://127.0.0.1:9/v1")
    assert model.api_base == "http://127.0.0.1:9/v1"


def test_gemini_accepts_either_of_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        LiteLLMModel("gemini/gemini-1.5-flash")
    assert set(caught.value.env_vars) == {"GEMINI_API_KEY", "GOOGLE_API_KEY"}
    monkeypatch.setenv("GEMINI_API_KEY", "g-test")
    LiteLLMModel("gemini/gemini-1.5-flash")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"max_retries": -1},
        {"context_window": 0},
        {"stream": True},
        {"input_cost_per_token": 1e-6},
    ],
)
def test_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        LiteLLMModel("openai/x", api_base="http://127.0.0.1:9/v1", **kwargs)


def test_repr_hides_the_key() -> None:
    model = LiteLLMModel("openai/x", api_base="http://127.0.0.1:9/v1", api_key="sk-secret")
    assert "sk-secret" not in repr(model)
    assert repr(model) == "LiteLLMModel('openai/x', api_base='http://127.0.0.1:9/v1')"


# -- sync use, event loops, concurrency --------------------------------------------------


def test_sync_complete_across_fresh_loops(server: FakeOpenAIServer) -> None:
    before = set(sessions.entries)
    model = make_model(server)
    assert model.complete(user("one")).text == "echo: one"
    assert model.complete(user("two")).text == "echo: two"
    assert asyncio.run(model.acomplete(user("three"))).text == "echo: three"
    gc.collect()  # any unclosed socket would warn here, and warnings are errors
    assert set(sessions.entries) <= before  # each loop closed its HTTP session on shutdown


async def test_sync_complete_inside_a_running_loop(server: FakeOpenAIServer) -> None:
    model = make_model(server)
    assert model.complete(user("nested")).text == "echo: nested"
    assert (await model.acomplete(user("outer"))).text == "echo: outer"


async def test_32_concurrent_requests() -> None:
    with FakeOpenAIServer(latency_s=0.3) as server:
        model = make_model(server)
        started = time.perf_counter()
        results = await asyncio.gather(*(model.acomplete(user(f"q{i}")) for i in range(32)))
        elapsed = time.perf_counter() - started
        requests = server.requests
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(32)]
    assert len(requests) == 32
    assert elapsed < 32 * 0.3 / 4  # overlapped: far below the 9.6 s a serial client would take
    arrivals = sorted(r.received_at for r in requests)
    assert arrivals[-1] - arrivals[0] < 0.3 * 3  # most were in flight together


# -- pieces of the retry policy ----------------------------------------------------------


class _FakeError(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("fake")
        self.response = httpx.Response(429, headers=headers)


def test_retry_after_header_forms() -> None:
    assert retry_after_s(_FakeError({"Retry-After": "2.5"})) == 2.5
    assert retry_after_s(_FakeError({"retry-after-ms": "150", "Retry-After": "9"})) == 0.15
    assert retry_after_s(_FakeError({"Retry-After": "-3"})) == 0.0
    future = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 < (retry_after_s(_FakeError({"Retry-After": future})) or 0) <= 20
    assert retry_after_s(_FakeError({"Retry-After": "soon"})) is None
    assert retry_after_s(_FakeError({})) is None
    assert retry_after_s(ValueError("no headers")) is None


# -- the fake server itself --------------------------------------------------------------


async def test_server_takes_64_concurrent_connections() -> None:
    async with FakeOpenAIServer(latency_s=0.5) as server:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.api_base, limits=limits, timeout=10) as client:

            async def ask(i: int) -> str:
                response = await client.post("/chat/completions", json={"model": "m", "messages": user(str(i))})
                response.raise_for_status()
                return str(response.json()["choices"][0]["message"]["content"])

            started = time.perf_counter()
            answers = await asyncio.gather(*(ask(i) for i in range(64)))
            elapsed = time.perf_counter() - started
    assert answers == [f"echo: {i}" for i in range(64)]
    assert elapsed < 1.5  # one latency period plus overhead; a stalled backlog would add seconds


async def test_server_reply_function_and_scripted_faults() -> None:
    async def reply(body: dict[str, Any]) -> str | Fault:
        content = body["messages"][-1]["content"]
        return Fault.server_error(503) if content == "fail" else f"{body['model']} says {content}"

    async with FakeOpenAIServer(reply) as server:
        async with httpx.AsyncClient(base_url=server.api_base) as client:
            ok = await client.post("/chat/completions", json={"model": "m1", "messages": user("hi")})
            bad = await client.post("/chat/completions", json={"model": "m1", "messages": user("fail")})
            models = await client.get("/models")
    assert ok.json()["choices"][0]["message"]["content"] == "m1 says hi"
    assert ok.json()["usage"]["total_tokens"] == ok.json()["usage"]["prompt_tokens"] + 3
    assert bad.status_code == 503
    assert bad.json()["error"]["message"]
    assert models.status_code == 200
    assert [r.status for r in server.requests] == [200, 503]


def test_server_lifecycle() -> None:
    server = FakeOpenAIServer(["a"])
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    server.start()
    assert server.start() is server  # idempotent
    assert server.api_base.startswith("http://127.0.0.1:")
    response = httpx.post(f"{server.api_base}/chat/completions", json={"model": "m", "messages": user("x")})
    assert response.json()["choices"][0]["message"]["content"] == "a"
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{server.url}/v1/chat/completions", json={}, timeout=2)


async def test_an_unpriced_model_is_looked_up_once(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm

    lookups: list[str] = []
    real = litellm.cost_per_token

    def counting(**kwargs: Any) -> Any:
        lookups.append(kwargs["model"])
        return real(**kwargs)

    monkeypatch.setattr(litellm, "cost_per_token", counting)
    unpriced = make_model(server, "openai/my-local-alias")
    for _ in range(3):
        assert (await unpriced.acomplete(user("hi"))).usage.cost_usd is None
    assert lookups == ["my-local-alias"]
    priced = make_model(server, "openai/gpt-4o-mini")
    costs = [(await priced.acomplete(user("hi" * n))).usage.cost_usd for n in (1, 50)]
    assert all(cost is not None and cost > 0 for cost in costs)
    assert costs[0] != costs[1]
