"""`RLMConfig.max_context_bytes`: an oversized context is refused with a typed error before any copy."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.core.context_size import context_size
from rlm_integrations.errors import ContextTooLargeError, UsageError
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.testing import FakeREPL


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


class NoREPL:
    """A REPL factory that fails the test if a REPL is ever made (nothing may start)."""

    def __call__(self, config: RLMConfig) -> Any:
        raise AssertionError("a REPL was created for a context that should have been refused")


@pytest.mark.parametrize(
    "context",
    [
        "x" * 2_001,
        b"\0" * 2_001,
        ["a" * 1_000, "b" * 1_000, "c"],
        {"first": "a" * 1_500, "second": {"nested": ["b" * 600]}},
    ],
    ids=["str", "bytes", "list", "dict"],
)
def test_a_context_over_the_limit_is_refused_before_anything_runs(context: Any) -> None:
    root = ScriptedLM([block("FINAL(1)")])
    rlm = RLM(root, repl=NoREPL(), config=RLMConfig(max_context_bytes=2_000))
    with pytest.raises(ContextTooLargeError, match="max_context_bytes=2,000") as caught:
        rlm.completion("How long?", context=context)
    assert caught.value.limit == 2_000 and caught.value.size > 2_000
    assert isinstance(caught.value, UsageError)
    assert root.calls == []


def test_the_limit_is_a_per_call_override_and_can_be_lifted() -> None:
    rlm = RLM(ScriptedLM([block("FINAL(len(context))")]), config=RLMConfig(max_context_bytes=10, cell_timeout_s=20))
    with pytest.raises(ContextTooLargeError):
        rlm.completion("How long?", context="x" * 11)
    assert rlm.completion("How long?", context="x" * 11, max_context_bytes=None).answer == 11


def test_the_default_refuses_a_context_over_one_gib_cheaply() -> None:
    huge = ["y" * (64 * 1024 * 1024)] * 17  # 17 references to one 64 MiB string: 1.06 GiB counted
    rlm = RLM(ScriptedLM([block("FINAL(1)")]), repl=NoREPL())
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(ContextTooLargeError, match="1,073,741,824"):
            rlm.completion("How long?", context=huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - began < 5.0
    assert peak < 10 * 1024 * 1024  # no copy of the context was made


def test_a_child_run_over_the_limit_gets_the_error_in_its_cell() -> None:
    code = "try:\n    rlm_query('sub', context='z' * 500)\nexcept Exception as e:\n    FINAL(str(e))"
    root = ScriptedLM([block(code)], name="root")
    rlm = RLM(root, repl=FakeREPL.from_config, config=RLMConfig(max_context_bytes=100, cell_timeout_s=20))
    result = asyncio.run(asyncio.wait_for(rlm.acompletion("q", context="small"), timeout=60))
    assert "max_context_bytes=100" in str(result.answer)


def test_the_size_walk_stops_early_and_counts_nested_items() -> None:
    assert context_size({"ab": ["cd", b"ef", 3, None]}) == 8 + 2 + 8 + 2 + 2 + 8 + 8
    deep: Any = "leaf"
    for _ in range(500):
        deep = [deep]
    assert context_size(deep) > 0  # deep nesting neither recurses nor fails
    many = ["x"] * 1_000_000
    began = time.perf_counter()
    assert context_size(many, stop_after=1_000) <= 1_000 + 8
    assert time.perf_counter() - began < 0.05
