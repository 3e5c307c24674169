"""The embedded local model (llama.cpp on the CPU), end to end. Skipped only where the [local] extra is missing."""

import pytest

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.demo import build_haystack

llama_cpp = pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")

from rlm_integrations.lm import LocalModel  # noqa: E402


@pytest.fixture(scope="module")
def local_model():
    return LocalModel()


def test_local_model_answers_with_usage(local_model):
    completion = local_model.complete([{"role": "user", "content": "Reply with the single word: yes"}], max_tokens=8)
    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 5
    assert completion.usage.completion_tokens >= 1
    assert completion.usage.cost_usd == 0.0
    assert local_model.context_window == 32_768
    assert 3 < local_model.count_tokens("The quick brown fox jumps over the lazy dog.") < 20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_model_finds_a_needle_in_200k_characters_through_the_repl(local_model):
    text, secret = build_haystack(220_000, seed=11)
    assert len(text) >= 200_000
    assert local_model.count_tokens(text) > local_model.context_window  # it cannot read this directly
    rlm = RLM(local_model, config=RLMConfig(max_iterations=8, cell_timeout_s=30))
    result = rlm.completion("What is the secret code?", context=text)
    cells = [e.code for e in result.trajectory.iter_events("cell_start")]
    assert cells, "the model wrote no code"
    assert secret in str(result.answer), (result.status, result.answer, cells)
