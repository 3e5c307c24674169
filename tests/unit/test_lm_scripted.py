"""ScriptedLM, the token estimate, and the `rlm_integrations.lm` package surface."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

import rlm_integrations.lm as lm_package
from rlm_integrations.errors import ConfigError, ModelError
from rlm_integrations.lm import Completion, LanguageModel, Message, ScriptedLM, TokenUsage
from rlm_integrations.lm.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_messages_tokens, estimate_tokens


def user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


# -- the token estimate ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("é", 1), ("日本語", 3), ("🙂🙂", 2)],
)
def test_estimate_tokens(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_estimate_tokens_counts_non_ascii_bytes_not_characters() -> None:
    assert estimate_tokens("日" * 400) == 300  # 1200 UTF-8 bytes
    assert estimate_tokens("\ud800") == 1  # a lone surrogate does not raise


def test_estimate_tokens_is_fast_on_huge_text() -> None:
    ascii_text = "word " * 4_000_000  # 20 MB
    mixed_text = "é" + ascii_text
    started = time.perf_counter()
    assert estimate_tokens(ascii_text) == 5_000_000
    assert estimate_tokens(mixed_text) == 5_000_001
    assert time.perf_counter() - started < 0.5


def test_estimate_messages_tokens_adds_overhead_per_message() -> None:
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcdefgh"}]
    assert estimate_messages_tokens(messages) == 1 + 2 + 2 * MESSAGE_OVERHEAD_TOKENS


# -- ScriptedLM --------------------------------------------------------------------------


def test_is_a_language_model() -> None:
    model = ScriptedLM(["a"])
    assert isinstance(model, LanguageModel)
    assert model.name == "scripted"
    assert model.context_window is None


async def test_replies_in_order_with_estimated_usage() -> None:
    model = ScriptedLM(["first", "second reply"], name="fake-1", context_window=1000, cost_per_call=0.25)
    one = await model.acomplete(user("hello"))
    two = await model.acomplete(user("again"))
    assert isinstance(one, Completion)
    assert (one.text, two.text) == ("first", "second reply")
    assert one.model == "fake-1"
    assert model.context_window == 1000
    assert one.usage == TokenUsage(
        prompt_tokens=estimate_messages_tokens(user("hello")),
        completion_tokens=estimate_tokens("first"),
        cost_usd=0.25,
        calls=1,
    )
    assert (one.usage + two.usage).cost_usd == 0.5
    assert model.remaining == 0


async def test_unknown_cost_is_none() -> None:
    model = ScriptedLM(["x"], cost_per_call=None)
    completion = await model.acomplete(user("q"))
    assert completion.usage.cost_usd is None


async def test_records_copies_of_every_call() -> None:
    model = ScriptedLM(["a", "b"])
    messages = user("one")
    await model.acomplete(messages)
    messages[0]["content"] = "mutated after the call"
    messages.append({"role": "assistant", "content": "appended"})
    await model.acomplete(user("two"), temperature=0.1)
    assert model.calls == [user("one"), user("two")]


async def test_running_out_says_how_many_were_scripted() -> None:
    model = ScriptedLM(["only", "two"])
    await model.acomplete(user("1"))
    await model.acomplete(user("2"))
    with pytest.raises(ModelError, match=r"ran out of replies: 2 scripted, this was call 3") as caught:
        await model.acomplete(user("3"))
    assert caught.value.model == "scripted"
    assert len(model.calls) == 3


async def test_scripted_exceptions_are_raised_in_their_turn() -> None:
    boom = ModelError("provider exploded", model="scripted")
    model = ScriptedLM(["a", boom, "c"])
    assert (await model.acomplete(user("1"))).text == "a"
    with pytest.raises(ModelError) as caught:
        await model.acomplete(user("2"))
    assert caught.value is boom
    assert (await model.acomplete(user("3"))).text == "c"


async def test_concurrent_callers_get_distinct_replies() -> None:
    replies = [f"reply {i}" for i in range(50)]
    model = ScriptedLM(replies, latency_s=0.01)
    results = await asyncio.gather(*(model.acomplete(user(str(i))) for i in range(50)))
    assert sorted(r.text for r in results) == sorted(replies)
    # the i-th call recorded got the i-th reply: claims are made before any await
    assert [r.text for r in results] == replies


async def test_latency_is_simulated_concurrently() -> None:
    model = ScriptedLM(lambda messages: "ok", latency_s=0.2)
    started = time.perf_counter()
    await asyncio.gather(*(model.acomplete(user("q")) for _ in range(20)))
    elapsed = time.perf_counter() - started
    assert 0.2 <= elapsed < 1.0  # 20 calls overlapped, not 4 s in series


async def test_sync_reply_function_sees_the_messages() -> None:
    seen: list[list[Message]] = []

    def reply(messages: list[Message]) -> str:
        seen.append(messages)
        return messages[-1]["content"].upper()

    model = ScriptedLM(reply)
    assert (await model.acomplete(user("shout"))).text == "SHOUT"
    assert seen == [user("shout")]
    assert model.remaining is None


async def test_async_reply_function() -> None:
    async def reply(messages: list[Message]) -> str:
        await asyncio.sleep(0)
        return f"{len(messages)} messages"

    model = ScriptedLM(reply)
    completion = await model.acomplete([{"role": "system", "content": "s"}, *user("u")])
    assert completion.text == "2 messages"


async def test_reply_function_must_return_text() -> None:
    model = ScriptedLM(lambda messages: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(ModelError, match="returned int"):
        await model.acomplete(user("q"))


def test_complete_outside_a_loop() -> None:
    model = ScriptedLM(["sync reply"])
    assert model.complete(user("q")).text == "sync reply"


async def test_complete_inside_a_running_loop() -> None:
    model = ScriptedLM(["from a notebook"], latency_s=0.01)
    assert model.complete(user("q")).text == "from a notebook"


def test_count_tokens_uses_the_estimate() -> None:
    assert ScriptedLM(["x"]).count_tokens("abcdefgh") == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"replies": "a single string"}, {"replies": ["ok", 3]}, {"latency_s": -1}, {"cost_per_call": -0.1}],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"replies": ["ok"], **kwargs}
    with pytest.raises(ConfigError):
        ScriptedLM(**arguments)  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(ScriptedLM(["a", "b"])) == "ScriptedLM(name='scripted', 2 replies, calls=0)"


# -- the package surface -----------------------------------------------------------------


def test_exported_names_are_frozen() -> None:
    assert sorted(lm_package.__all__) == [
        "Completion",
        "LanguageModel",
        "LiteLLMModel",
        "LocalModel",
        "MalformedReplyError",
        "Message",
        "OpenAICompatibleModel",
        "ProviderModel",
        "Reply",
        "ScriptedLM",
        "TokenUsage",
        "provider_prefixes",
        "register_provider",
        "resolve_model",
        "unregister_provider",
    ]
    for name in lm_package.__all__:
        if name != "LocalModel":
            assert getattr(lm_package, name) is not None
    assert "LiteLLMModel" in dir(lm_package)


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="NoSuchModel"):
        lm_package.NoSuchModel  # noqa: B018


def test_importing_the_package_does_not_import_litellm() -> None:
    code = (
        "import sys\n"
        "from rlm_integrations.lm import LiteLLMModel, ScriptedLM, LanguageModel\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_local_model_without_the_local_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from rlm_integrations.errors import MissingExtraError
    from rlm_integrations.lm.local import LocalModel

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(MissingExtraError, match=r'pip install "rlm-integrations\[local\]"') as caught:
        LocalModel()
    assert caught.value.extra == "local"
