"""`FakeOpenAIServer` takes the large bodies a long run sends (it refused anything over 1 MB)."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # prices from LiteLLM's bundled map, never the internet

import httpx
import pytest

from rlm_integrations.lm import LiteLLMModel
from rlm_integrations.testing import FakeOpenAIServer


@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")  # aiohttp, in LiteLLM's client
@pytest.mark.filterwarnings("ignore:Sending a large body directly")
def test_a_request_over_1_mb_is_answered() -> None:
    big = "word " * 300_000  # 1.5 MB: over the old 1 MB limit
    with FakeOpenAIServer(lambda body: f"got {len(body['messages'][-1]['content']):,} characters") as server:
        model = LiteLLMModel("openai/fake", api_base=server.api_base, api_key="sk-test", max_retries=0)
        reply = model.complete([{"role": "user", "content": big}])
    assert reply.text == f"got {len(big):,} characters"


def test_the_body_limit_is_configurable() -> None:
    with FakeOpenAIServer(["ok", "ok"], max_body_bytes=10_000) as server:
        small = httpx.post(
            f"{server.api_base}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        large = httpx.post(
            f"{server.api_base}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]},
        )
    assert small.status_code == 200
    assert large.status_code == 413


def test_a_bad_body_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        FakeOpenAIServer(max_body_bytes=0)
