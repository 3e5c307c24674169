"""The provider seam: the model-string registry, the `ProviderModel` base, and `OpenAICompatibleModel`.

Every call goes to `FakeOpenAIServer` on 127.0.0.1 (never the internet).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from rlm_integrations.core.config import ModelPrice
from rlm_integrations.core.pricing import price_for
from rlm_integrations.errors import (
    ConfigError,
    ContextWindowExceededError,
    MissingAPIKeyError,
    ModelError,
    UnknownModelError,
    UsageError,
)
from rlm_integrations.lm import (
    LanguageModel,
    LiteLLMModel,
    MalformedReplyError,
    Message,
    OpenAICompatibleModel,
    ProviderModel,
    Reply,
    ScriptedLM,
    provider_prefixes,
    register_provider,
    resolve_model,
    unregister_provider,
)
from rlm_integrations.lm import registry as lm_registry
from rlm_integrations.testing import FakeOpenAIServer, Fault

FAST_RETRIES: dict[str, Any] = {"retry_initial_delay_s": 0.001, "retry_max_delay_s": 0.05, "max_retries": 2}


def user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No provider key or endpoint from the environment; registrations do not leak."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    saved = dict(lm_registry._providers)
    yield
    with lm_registry._lock:
        lm_registry._providers.clear()
        lm_registry._providers.update(saved)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


def openai_model(server: FakeOpenAIServer, model: str = "fake-model", **options: Any) -> OpenAICompatibleModel:
    return OpenAICompatibleModel(model, base_url=server.api_base, **{"timeout_s": 5.0, **FAST_RETRIES, **options})


# -- the registry ----------------------------------------------------------------------------------


def test_the_rule_picks_the_adapter(server: FakeOpenAIServer) -> None:
    by_prefix = resolve_model("openai-compatible/qwen", base_url=server.api_base)
    assert isinstance(by_prefix, OpenAICompatibleModel)
    assert (by_prefix.model, by_prefix.name, by_prefix.base_url) == ("qwen", "qwen", server.api_base)

    by_base_url = resolve_model("openai/qwen", base_url=server.api_base)
    assert isinstance(by_base_url, OpenAICompatibleModel)
    assert by_base_url.model == "qwen"  # the LiteLLM-style provider part is dropped

    plain = resolve_model("openai/gpt-4o-mini", api_key="sk-test")
    assert isinstance(plain, LiteLLMModel)
    assert plain.name == "openai/gpt-4o-mini"

    explicit = resolve_model("litellm/openai/local", api_base=server.api_base, api_key="unused", **FAST_RETRIES)
    assert isinstance(explicit, LiteLLMModel)
    assert explicit.model == "openai/local"
    # a call in the test that imported LiteLLM: its first call builds schemas that warn unless
    # LiteLLM's import-time warning filter is still installed (pytest resets filters per test)
    assert explicit.complete(user("via litellm")).text == "echo: via litellm"

    behind_api_base = resolve_model("openai/local", api_base=server.api_base)
    assert isinstance(behind_api_base, LiteLLMModel)  # api_base is LiteLLM's option: unchanged routing


def test_registered_prefixes_resolve_longest_first_and_bare_names_match() -> None:
    register_provider("canned/", lambda model, **options: ScriptedLM(["short"], name=f"short:{model}", **options))
    register_provider("canned/deep/", lambda model, **options: ScriptedLM(["deep"], name=f"deep:{model}"))
    assert resolve_model("canned/x").name == "short:x"
    assert resolve_model("canned/deep/y").name == "deep:y"
    assert resolve_model("canned").name == "short:"  # "canned/" also matches its bare name
    assert resolve_model("canned/x", latency_s=0.0).complete(user("hi")).text == "short"
    assert {"canned/", "canned/deep/", "openai-compatible/", "litellm/", "local:"} <= set(provider_prefixes())
    unregister_provider("canned/deep/")
    assert resolve_model("canned/deep/y").name == "short:deep/y"
    unregister_provider("never-registered/")  # ignored


def test_registration_is_checked() -> None:
    def factory(model: str, **options: Any) -> LanguageModel:
        return ScriptedLM(["x"], name=model)

    register_provider("mine/", factory)
    register_provider("mine/", factory)  # the same factory again: fine
    with pytest.raises(UsageError, match=r"already registered.*replace=True"):
        register_provider("mine/", lambda model, **options: factory(model))
    register_provider("mine/", lambda model, **options: ScriptedLM(["y"], name="replaced"), replace=True)
    assert resolve_model("mine/a").name == "replaced"
    for bad in ("", " x/", "a b/"):
        with pytest.raises(UsageError, match="non-empty str without whitespace"):
            register_provider(bad, factory)
    with pytest.raises(UsageError, match="must be callable"):
        register_provider("other/", "not a factory")  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["", "   "])
def test_an_empty_model_string_is_refused(spec: str) -> None:
    with pytest.raises(UnknownModelError, match="openai-compatible/"):
        resolve_model(spec)


def test_an_unroutable_string_falls_to_litellm_and_says_how_to_fix_it() -> None:
    with pytest.raises(UnknownModelError, match="openai/"):
        resolve_model("nonprovider/some-model", api_key="sk-test")


def test_the_cli_resolves_through_the_registry() -> None:
    from rlm_integrations.cli._models import choose_model

    register_provider("canned/", lambda model, **options: ScriptedLM(["x"], name=model))
    model, description = choose_model("canned/cli-model")
    assert model.name == "cli-model"
    assert description == "cli-model through ScriptedLM (from --model)"


def test_the_cli_names_the_openai_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_integrations.cli._models import choose_model

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model, description = choose_model("openai-compatible/qwen")
    assert isinstance(model, OpenAICompatibleModel)
    assert description == "openai-compatible/qwen through the OpenAI SDK at http://127.0.0.1:9/v1 (from --model)"


# -- the base, with a plain httpx adapter -----------------------------------------------------------


class PlainHTTPModel(ProviderModel):
    """An adapter written against the base alone: one httpx POST per attempt."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__("plain-http", **options)
        self.base_url = base_url
        self.sent: list[dict[str, Any]] = []

    async def send(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        body = {"model": "plain", "messages": messages, **params}
        self.sent.append(body)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.post(f"{self.base_url}/chat/completions", json=body)
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict) or not data.get("choices"):
            raise MalformedReplyError("it has no choices")
        usage = data.get("usage") or {}
        return Reply(
            text=data["choices"][0]["message"]["content"] or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            model=data.get("model"),
        )


def plain(server: FakeOpenAIServer, **options: Any) -> PlainHTTPModel:
    return PlainHTTPModel(server.api_base, **{"timeout_s": 5.0, **FAST_RETRIES, **options})


async def test_the_base_supplies_the_protocol(server: FakeOpenAIServer) -> None:
    model = plain(server, temperature=0.5)
    assert isinstance(model, LanguageModel)
    assert model.prefers_worked_example is False
    completion = await model.acomplete(user("hello"), max_tokens=9)
    (request,) = server.requests
    assert completion.text == "echo: hello"
    assert completion.model == "plain"
    assert request.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        request.usage["prompt_tokens"],
        request.usage["completion_tokens"],
    )
    assert completion.usage.cost_usd is None  # no price given and the adapter has none
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.5, 9)
    assert model.complete(user("sync")).text == "echo: sync"
    assert model.count_tokens("x" * 40) == 10
    assert model.estimate_cost(10, 10) is None


async def test_the_base_retries_rate_limits_honouring_retry_after(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=0.3), Fault.server_error(503))
    model = plain(server, retry_max_delay_s=2.0)
    started = time.perf_counter()
    completion = await model.acomplete(user("patience"))
    assert completion.text == "echo: patience"
    assert [r.status for r in server.requests] == [429, 503, 200]
    assert time.perf_counter() - started >= 0.3  # the backoff alone would be a few ms


async def test_the_base_retries_dropped_connections_and_timeouts(server: FakeOpenAIServer) -> None:
    server.inject(Fault.disconnect(), Fault.slow(5))
    completion = await plain(server, timeout_s=0.3).acomplete(user("again"))
    assert completion.text == "echo: again"
    assert len(server.requests) == 3


async def test_the_base_translates_what_it_does_not_retry(server: FakeOpenAIServer) -> None:
    server.inject(Fault.error(403, "forbidden here"))
    with pytest.raises(ModelError, match=r"plain-http rejected the request \(check the API key.*HTTP 403") as caught:
        await plain(server).acomplete(user("hi"))
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)
    server.inject(Fault.malformed("{not json"))
    with pytest.raises(ModelError, match="plain-http returned a malformed response: JSONDecodeError"):
        await plain(server).acomplete(user("hi"))
    server.inject(Fault.malformed('{"choices": []}'))
    with pytest.raises(ModelError, match=r"malformed response: it has no choices$"):
        await plain(server).acomplete(user("hi"))
    server.inject(Fault.context_length_exceeded(max_tokens=4096, prompt_tokens=5000))
    with pytest.raises(ContextWindowExceededError) as window:
        await plain(server).acomplete(user("long"))
    assert (window.value.max_tokens, window.value.model) == (4096, "plain-http")
    assert [r.status for r in server.requests] == [403, 200, 200, 400]  # none was retried


async def test_the_base_gives_up_after_its_retries(server: FakeOpenAIServer) -> None:
    server.inject(*[Fault.server_error(502)] * 3)
    with pytest.raises(ModelError, match=r"plain-http failed after 3 attempts in .*HTTP 502"):
        await plain(server, max_retries=2).acomplete(user("doomed"))
    assert len(server.requests) == 3
    server.inject(Fault.slow(5))
    with pytest.raises(ModelError, match=r"failed after 1 attempt in .*timed out after 0.2s \(timeout_s\)"):
        await plain(server, timeout_s=0.2, max_retries=0).acomplete(user("slow"))


async def test_the_base_estimates_missing_usage_and_prices_custom(server: FakeOpenAIServer) -> None:
    body = '{"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "no usage"}}]}'
    server.inject(Fault.malformed(body))
    model = plain(server, input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    completion = await model.acomplete(user("count me"))
    assert completion.usage.completion_tokens == model.count_tokens("no usage") > 0
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.cost_usd == pytest.approx(
        completion.usage.prompt_tokens * 1e-6 + completion.usage.completion_tokens * 2e-6
    )
    assert model.estimate_cost(1000, 100) == pytest.approx(1000 * 1e-6 + 100 * 2e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"timeout_s": 0},
        {"max_retries": -1},
        {"context_window": 0},
        {"retry_initial_delay_s": -1},
        {"stream": True},
        {"model": "x"},
        {"input_cost_per_token": 1e-6},
    ],
)
def test_the_base_refuses_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        PlainHTTPModel("http://127.0.0.1:9/v1", **options)


async def test_reserved_parameters_are_refused_per_call(server: FakeOpenAIServer) -> None:
    with pytest.raises(ConfigError, match="PlainHTTPModel sets stream itself"):
        await plain(server).acomplete(user("hi"), stream=True)
    assert server.requests == []


def test_prefers_worked_example_is_part_of_the_protocol() -> None:
    assert "prefers_worked_example" in LanguageModel.__annotations__
    assert LanguageModel.prefers_worked_example is False
    assert ScriptedLM(["x"]).prefers_worked_example is False

    class Small(PlainHTTPModel):
        prefers_worked_example = True

    assert Small("http://127.0.0.1:9/v1").prefers_worked_example is True


# -- OpenAICompatibleModel end to end ---------------------------------------------------------------


async def test_openai_reply_usage_and_parameters() -> None:
    with FakeOpenAIServer(["The answer is 42."]) as server:
        model = openai_model(server, temperature=0.2, top_k=5)
        completion = await model.acomplete(
            [{"role": "system", "content": "Be brief."}, *user("6 x 7?")], max_tokens=7, extra_body={"min_p": 0.1}
        )
        (request,) = server.requests
    assert isinstance(model, LanguageModel)
    assert completion.text == "The answer is 42."
    assert completion.model == "fake-model"
    assert request.usage is not None
    assert completion.usage.prompt_tokens == request.usage["prompt_tokens"] > 0
    assert completion.usage.completion_tokens == request.usage["completion_tokens"] > 0
    assert completion.usage.calls == 1
    assert completion.usage.cost_usd is None
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer no-key"  # a local server needs no key
    body = request.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("fake-model", 0.2, 7)
    assert (body["top_k"], body["min_p"]) == (5, 0.1)  # parameters the SDK does not name travel in the body
    assert body["messages"][-1] == {"role": "user", "content": "6 x 7?"}


async def test_openai_honours_retry_after(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=0.3))
    started = time.perf_counter()
    completion = await openai_model(server, retry_max_delay_s=2.0).acomplete(user("patience"))
    assert completion.text == "echo: patience"
    assert time.perf_counter() - started >= 0.3
    assert [r.status for r in server.requests] == [429, 200]


async def test_openai_retry_after_is_capped(server: FakeOpenAIServer) -> None:
    server.inject(Fault.rate_limit(retry_after=30))
    started = time.perf_counter()
    assert (await openai_model(server, retry_max_delay_s=0.05).acomplete(user("hurry"))).text == "echo: hurry"
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("fault", [Fault.server_error(500), Fault.server_error(503), Fault.disconnect()])
async def test_openai_transient_failures_are_retried(server: FakeOpenAIServer, fault: Fault) -> None:
    server.inject(fault)
    assert (await openai_model(server).acomplete(user("again"))).text == "echo: again"
    assert len(server.requests) == 2


async def test_openai_retries_exhausted(server: FakeOpenAIServer) -> None:
    server.inject(*[Fault.server_error()] * 3)
    with pytest.raises(ModelError, match=r"fake-model failed after 3 attempts .*InternalServerError \(HTTP 500\)") as e:
        await openai_model(server, max_retries=2).acomplete(user("doomed"))
    assert isinstance(e.value.__cause__, openai.InternalServerError)
    assert e.value.model == "fake-model"


async def test_openai_timeouts(server: FakeOpenAIServer) -> None:
    server.inject(Fault.slow(10), Fault.slow(10))
    started = time.perf_counter()
    with pytest.raises(ModelError, match=r"failed after 2 attempts .*timed out after 0.3s"):
        await openai_model(server, timeout_s=0.3, max_retries=1).acomplete(user("too slow"))
    assert time.perf_counter() - started < 3.0


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_openai_caller_errors_are_not_retried(server: FakeOpenAIServer, status: int) -> None:
    server.inject(Fault.error(status, f"nope ({status})"))
    with pytest.raises(ModelError, match=rf"rejected the request.*HTTP {status}.*nope \({status}\)") as caught:
        await openai_model(server, max_retries=4).acomplete(user("hi"))
    assert len(server.requests) == 1
    assert ("check the API key" in str(caught.value)) == (status == 401)


async def test_openai_context_window(server: FakeOpenAIServer) -> None:
    server.inject(Fault.context_length_exceeded(max_tokens=8192, prompt_tokens=9000))
    with pytest.raises(ContextWindowExceededError) as caught:
        await openai_model(server).acomplete(user("long " * 100))
    assert (caught.value.prompt_tokens, caught.value.max_tokens) == (9000, 8192)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "body",
    ['{"id": "chatcmpl-broken", "choices": [', '{"id": "x", "object": "chat.completion"}', "[1, 2, 3]"],
    ids=["bad-json", "no-choices", "not-an-object"],
)
async def test_openai_malformed_replies(server: FakeOpenAIServer, body: str) -> None:
    server.inject(Fault.malformed(body))
    with pytest.raises(ModelError, match="fake-model returned a malformed response"):
        await openai_model(server).acomplete(user("hi"))
    assert len(server.requests) == 1


def test_openai_keys_and_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        OpenAICompatibleModel("gpt-4o-mini")
    assert caught.value.env_vars == ["OPENAI_API_KEY"]
    assert "base_url=" in str(caught.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert OpenAICompatibleModel("gpt-4o-mini").base_url is None
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert OpenAICompatibleModel("qwen").base_url == "http://127.0.0.1:9/v1"
    secret = OpenAICompatibleModel("qwen", api_key="sk-secret")
    assert "sk-secret" not in repr(secret)
    with pytest.raises(UnknownModelError):
        OpenAICompatibleModel(" ")


def test_openai_sync_calls_on_fresh_loops_close_their_clients(server: FakeOpenAIServer) -> None:
    model = openai_model(server)
    assert model.complete(user("one")).text == "echo: one"
    assert asyncio.run(model.acomplete(user("two"))).text == "echo: two"
    gc.collect()  # an unclosed client would warn here, and warnings are errors
    assert model._clients.entries == {}


async def test_openai_32_concurrent_calls_share_one_client() -> None:
    with FakeOpenAIServer(latency_s=0.3) as server:
        model = openai_model(server)
        started = time.perf_counter()
        results = await asyncio.gather(*(model.acomplete(user(f"q{i}")) for i in range(32)))
        elapsed = time.perf_counter() - started
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(32)]
    assert elapsed < 32 * 0.3 / 4
    assert len(model._clients.entries) == 1


async def test_openai_cost_from_its_own_prices_or_the_run_config(server: FakeOpenAIServer) -> None:
    priced = openai_model(server, input_cost_per_token=1e-6, output_cost_per_token=3e-6)
    completion = await priced.acomplete(user("price me"))
    assert completion.usage.cost_usd == pytest.approx(
        completion.usage.prompt_tokens * 1e-6 + completion.usage.completion_tokens * 3e-6
    )
    assert "input_cost_per_token" not in server.requests[-1].body
    unpriced = openai_model(server, name="local-qwen")
    assert price_for(unpriced, {}) is None
    configured = price_for(unpriced, {"local-qwen": ModelPrice(input_usd_per_token=1e-6, output_usd_per_token=1e-6)})
    assert configured is not None
    assert configured(100, 10) == pytest.approx(110e-6)


def test_backoff_doubles_with_jitter_and_yields_to_retry_after() -> None:
    model = PlainHTTPModel("http://127.0.0.1:9/v1", retry_initial_delay_s=0.1, retry_max_delay_s=1.0)
    for attempt, low in ((1, 0.1), (2, 0.2), (3, 0.4)):
        delays = [model._delay(attempt, None) for _ in range(50)]
        assert all(low <= delay <= low + 0.1 for delay in delays)
        assert len(set(delays)) > 1  # jittered
    assert model._delay(10, None) == 1.0  # capped

    class Limited(Exception):
        response = httpx.Response(429, headers={"Retry-After": "0.7"})

    assert model._delay(1, Limited()) == 0.7  # the server's wait wins over a shorter backoff
    Limited.response = httpx.Response(429, headers={"Retry-After": "30"})
    assert model._delay(1, Limited()) == 1.0  # and is capped too


def test_the_registry_imports_no_sdk_until_a_model_is_built() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rlm_integrations.lm import ProviderModel, register_provider, resolve_model\n"
        "assert not {'litellm', 'openai'} & set(sys.modules), 'an SDK was imported'\n"
        "resolve_model('openai-compatible/x', base_url='http://127.0.0.1:9/v1')\n"
        "assert 'openai' in sys.modules and 'litellm' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
