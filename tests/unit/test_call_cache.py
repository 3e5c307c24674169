"""The call cache (`RLMConfig.cache`): replay with zero spend, shared by the tree, on disk across processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import block, config, make_rlm, run
from pydantic import ValidationError

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.core.cache import CallCache, DiskStore, MemoryStore, call_key
from rlm_integrations.core.events import LMCallFinished, SubCallFinished
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.errors import ModelError
from rlm_integrations.lm import Message, ScriptedLM

ROOT_CODE = block("a = llm_query('alpha')\nb = llm_query_batched(['beta', 'gamma'])\nprint(a, b)")
SCRIPT = [ROOT_CODE, block("FINAL(a + '|' + '|'.join(b))")]
ANSWER = "sub:alpha|sub:beta|sub:gamma"
MESSAGES: list[Message] = [{"role": "user", "content": "hi"}]


def refusing(name: str) -> ScriptedLM:
    """A model that fails if it is ever called (everything must come from the cache)."""

    def reply(messages: list[Message]) -> str:
        raise AssertionError(f"{name} was called: {messages[-1]['content'][:80]}")

    return ScriptedLM(reply, name=name)


def sub_model(**kwargs: Any) -> ScriptedLM:
    return ScriptedLM(lambda m: f"sub:{m[-1]['content']}", name="sub", **kwargs)


async def test_second_run_replays_every_call_with_zero_spend() -> None:
    rlm, root, sub = make_rlm(SCRIPT, cache="memory")
    first = await run(rlm)
    assert first.answer == ANSWER
    assert (len(root.calls), len(sub.calls)) == (2, 3)
    assert first.usage.calls == 5 and first.usage.cached_calls == 0

    second = await run(rlm)
    assert (len(root.calls), len(sub.calls)) == (2, 3)  # no model call at all
    assert second.answer == first.answer and second.status == "completed"
    assert second.usage.cached_calls == 5
    assert second.usage.cached_by_model == {"root": 2, "sub": 3}
    assert second.usage.calls == 0 and second.usage.total_tokens == 0
    assert second.usage.cost_usd in (0.0, None)
    assert second.usage.by_model == {}


async def test_cache_hits_take_no_budget() -> None:
    rlm, root, _ = make_rlm(SCRIPT, cache="memory", max_llm_calls=100)
    first = await run(rlm)
    # one call allowed, which the closing reserve alone takes: only replays can run
    second = await run(rlm, max_llm_calls=1)
    assert first.usage.calls == 5
    assert second.status == "completed" and second.answer == ANSWER
    assert second.usage.calls == 0 and second.usage.cached_calls == 5
    assert len(root.calls) == 2
    # without the cache the same limits stop the run before its first turn
    limited = await run(RLM(ScriptedLM(SCRIPT, name="root"), sub_model(), config=config(max_llm_calls=1)))
    assert limited.status == "budget_exhausted"


async def test_trajectory_marks_hits_and_loads(tmp_path: Path) -> None:
    rlm, _, _ = make_rlm(SCRIPT, cache="memory")
    first = await run(rlm)
    second = await run(rlm)
    assert [e.cached for e in first.trajectory.iter_events() if isinstance(e, LMCallFinished)] == [False, False]
    root_ends = [e for e in second.trajectory.iter_events() if isinstance(e, LMCallFinished)]
    sub_ends = [e for e in second.trajectory.iter_events() if isinstance(e, SubCallFinished)]
    assert [e.cached for e in root_ends] == [True, True]
    assert [e.cached for e in sub_ends] == [True, True, True]
    assert all(e.usage is not None and e.usage.total_tokens == 0 for e in root_ends + sub_ends)
    path = tmp_path / "run.jsonl"
    second.trajectory.save(path)
    loaded = Trajectory.load(path)
    assert [e.cached for e in loaded.iter_events() if isinstance(e, SubCallFinished)] == [True, True, True]
    # a trajectory written before the field existed still loads, as not cached
    old = [json.loads(line) for line in first.trajectory.to_jsonl().splitlines()]
    for event in old:
        event.pop("cached", None)
    legacy = tmp_path / "old.jsonl"
    legacy.write_text("".join(json.dumps(event) + "\n" for event in old))
    assert not any(getattr(e, "cached", False) for e in Trajectory.load(legacy).iter_events())


async def test_a_different_question_misses() -> None:
    rlm, _, _ = make_rlm(SCRIPT, cache="memory")
    await run(rlm)
    fresh = ScriptedLM(SCRIPT, name="root")
    rlm.model = fresh  # the same RLM (the same cache), a new model object with the same identity
    other = await run(rlm, query="Something else?")
    assert len(fresh.calls) == 2  # new messages: both turns reach the model
    assert other.usage.cached_calls == 3  # the sub-calls' prompts are unchanged: replayed
    assert other.usage.calls == 2


def test_key_depends_on_model_messages_and_params() -> None:
    lm = ScriptedLM(["x"], name="m")
    base = call_key(lm, MESSAGES, {"temperature": 0.0, "max_tokens": 10})
    assert base == call_key(ScriptedLM(["y"], name="m"), MESSAGES, {"max_tokens": 10, "temperature": 0.0})
    assert base != call_key(lm, MESSAGES, {"temperature": 0.5, "max_tokens": 10})
    assert base != call_key(lm, MESSAGES, {"temperature": 0.0, "max_tokens": 11})
    assert base != call_key(lm, MESSAGES, {"temperature": 0.0, "max_tokens": 10, "stop": ["\n"]})
    assert base != call_key(lm, [{"role": "user", "content": "hi!"}], {"temperature": 0.0, "max_tokens": 10})
    assert base != call_key(ScriptedLM(["x"], name="other"), MESSAGES, {"temperature": 0.0, "max_tokens": 10})


def test_key_is_stable_across_processes() -> None:
    here = call_key(ScriptedLM(["x"], name="m"), MESSAGES, {"temperature": 0.2, "stop": ["a", "b"]})
    code = (
        "from rlm_integrations.core.cache import call_key\n"
        "from rlm_integrations.lm import ScriptedLM\n"
        "print(call_key(ScriptedLM(['x'], name='m'), [{'role': 'user', 'content': 'hi'}],"
        " {'stop': ['a', 'b'], 'temperature': 0.2}))"
    )
    keys = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        keys.add(out.stdout.strip())
    assert keys == {here}


async def test_failed_calls_are_not_cached() -> None:
    model = ScriptedLM([ModelError("provider down", model="m"), "ok"], name="m")
    cache = CallCache(MemoryStore())
    with pytest.raises(ModelError):
        await cache.complete(model, MESSAGES, {})
    assert len(cache.store) == 0  # type: ignore[arg-type]
    first = await cache.complete(model, MESSAGES, {})
    again = await cache.complete(model, MESSAGES, {})
    assert (first.text, again.text, len(model.calls)) == ("ok", "ok", 2)


async def test_concurrent_identical_sub_calls_coalesce() -> None:
    sub = sub_model(latency_s=0.2)
    code = block("r = llm_query_batched(['same', 'same', 'same', 'other'])\nFINAL('|'.join(r))")
    rlm = RLM(ScriptedLM([code], name="root"), sub, config=config(cache="memory"))
    result = await run(rlm)
    assert result.answer == "sub:same|sub:same|sub:same|sub:other"
    assert sorted(m[-1]["content"] for m in sub.calls) == ["other", "same"]
    assert result.usage.by_model["sub"].calls == 2
    assert result.usage.cached_by_model == {"sub": 2}
    assert result.usage.calls == 3  # the root turn and two real sub-calls


async def test_a_failed_leader_lets_waiters_call() -> None:
    calls = 0

    async def reply(messages: list[Message]) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        if calls == 1:
            raise ModelError("first attempt fails", model="m")
        return "fine"

    cache = CallCache(MemoryStore())
    model = ScriptedLM(reply, name="m")
    outcomes = await asyncio.gather(*(cache.complete(model, MESSAGES, {}) for _ in range(3)), return_exceptions=True)
    assert isinstance(outcomes[0], ModelError)
    assert [getattr(o, "text", None) for o in outcomes[1:]] == ["fine", "fine"]
    assert calls == 2  # one failure, then one call for both waiters


async def test_disk_cache_persists_across_rlm_objects_and_processes(tmp_path: Path) -> None:
    directory = tmp_path / "calls"
    first = await run(RLM(ScriptedLM(SCRIPT, name="root"), sub_model(), config=config(cache=str(directory))))
    assert first.answer == ANSWER and first.usage.cached_calls == 0
    second = await run(RLM(refusing("root"), refusing("sub"), config=config(cache=directory)))
    assert (second.answer, second.usage.cached_calls, second.usage.calls) == (ANSWER, 5, 0)
    code = f"""
import json
from rlm_integrations import RLM, RLMConfig
from rlm_integrations.lm import ScriptedLM
def refuse(messages):
    raise AssertionError("called")
rlm = RLM(ScriptedLM(refuse, name="root"), ScriptedLM(refuse, name="sub"), config=RLMConfig(cache={str(directory)!r}))
result = rlm.completion("What is it?", "hello world")
print(json.dumps([result.answer, result.usage.cached_calls, result.usage.calls]))
"""
    python = Path(sys.prefix) / "bin" / "python"
    command = [str(python), "-c", code]
    out = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [ANSWER, 5, 0]


def test_config_validates_the_cache_setting(tmp_path: Path) -> None:
    assert RLMConfig().cache is None
    assert RLMConfig(cache="memory").cache == "memory"
    assert RLMConfig(cache=tmp_path).cache == str(tmp_path)
    assert RLMConfig(cache=str(tmp_path / "new")).cache == str(tmp_path / "new")
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(ValidationError, match="not a directory"):
        RLMConfig(cache=str(file))
    with pytest.raises(ValidationError, match="cache must be None"):
        RLMConfig(cache=3)
    with pytest.raises(ValidationError, match="cache must be None"):
        RLMConfig(cache="")


def test_disk_store_keeps_plain_text(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    store.set("k", "v")
    assert DiskStore(tmp_path).get("k") == "v"
    assert store.get("missing") is None
    store.close()


def test_memory_store_is_bounded_lru() -> None:
    store = MemoryStore(max_entries=2)
    store.set("a", "1")
    store.set("b", "2")
    assert store.get("a") == "1"  # a is now the most recent
    store.set("c", "3")
    assert (store.get("a"), store.get("b"), store.get("c")) == ("1", None, "3")


async def test_litellm_calls_to_a_server_are_replayed() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from rlm_integrations.lm import LiteLLMModel
    from rlm_integrations.testing import FakeOpenAIServer

    def reply(body: dict[str, Any]) -> str:
        if body["model"] == "sub-alias":
            return f"SUB[{body['messages'][-1]['content']}]"
        turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
        return SCRIPT[0] if turns % 2 == 0 else SCRIPT[1]

    async with FakeOpenAIServer(reply) as server:
        options: dict[str, Any] = {"api_base": server.api_base, "api_key": "sk-test", "timeout_s": 10.0}
        root = LiteLLMModel("openai/root-alias", **options)
        sub = LiteLLMModel("openai/sub-alias", **options)
        rlm = RLM(root, sub, config=config(cache="memory"))
        first = await run(rlm)
        sent = len(server.requests)
        second = await run(rlm)
        assert len(server.requests) == sent  # the rerun sent nothing
    assert first.answer == second.answer == "SUB[alpha]|SUB[beta]|SUB[gamma]"
    assert first.usage.calls == sent and first.usage.total_tokens > 0
    assert (second.usage.calls, second.usage.total_tokens, second.usage.cached_calls) == (0, 0, sent)


def test_a_dspy_lm_with_its_own_cache_is_not_cached_twice() -> None:
    dspy = pytest.importorskip("dspy")
    from rlm_integrations.core.cache import CachedModel
    from rlm_integrations.dspy.lm_adapter import DSPyLanguageModel

    cache = CallCache(MemoryStore())
    cached_by_dspy = DSPyLanguageModel(dspy.LM("openai/x", cache=True))
    uncached = DSPyLanguageModel(dspy.LM("openai/x", cache=False))
    assert cache.wrap(cached_by_dspy) is cached_by_dspy  # DSPy's cache serves it
    assert isinstance(cache.wrap(uncached), CachedModel)  # ours, since DSPy's is off
    plain = ScriptedLM(["x"], name="m")
    wrapped = cache.wrap(plain)
    assert isinstance(wrapped, CachedModel) and cache.wrap(wrapped) is wrapped
    assert (wrapped.name, wrapped.context_window, wrapped.count_tokens("abcd")) == (
        "m",
        plain.context_window,
        plain.count_tokens("abcd"),
    )


def test_cli_cache_option(tmp_path: Path) -> None:
    from rlm_integrations.cli.app import config_from_options as _config

    assert _config(cache=str(tmp_path)).cache == str(tmp_path)
    file = tmp_path / "f"
    file.write_text("x")
    from rlm_integrations.errors import ConfigError

    with pytest.raises(ConfigError, match="--cache"):
        _config(cache=str(file))


async def test_child_runs_share_the_cache() -> None:
    parent = block("FINAL(rlm_query('Child?', 'child context'))")
    child = [block("x = llm_query('inside')\nprint(x)"), block("FINAL('child:' + x)")]

    def routed(messages: list[Message]) -> str:
        is_child = any(m["role"] == "user" and "Child?" in m["content"] for m in messages)
        turns = sum(1 for m in messages if m["role"] == "assistant")
        return child[min(turns, 1)] if is_child else parent

    root = ScriptedLM(routed, name="root")
    sub = sub_model()
    rlm = RLM(root, sub, config=config(cache="memory", max_depth=1))
    first = await run(rlm, query="Parent?")
    calls = (len(root.calls), len(sub.calls))
    second = await run(rlm, query="Parent?")
    assert first.answer == second.answer == "child:sub:inside"
    assert (len(root.calls), len(sub.calls)) == calls == (3, 1)
    assert second.usage.cached_calls == 4 and second.usage.calls == 0
    ends = [e for e in second.trajectory.iter_events() if isinstance(e, LMCallFinished)]
    assert len({e.run_id for e in ends}) == 2  # the parent's turn and the child's two turns
    assert len(ends) == 3 and all(e.cached for e in ends)
