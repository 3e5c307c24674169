"""Shared pieces for the limit and recovery tests: the real LiteLLM path to FakeOpenAIServer, instrumented."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # prices from LiteLLM's bundled map, never the internet

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
import pytest

from rlm_integrations import RLMConfig
from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.lm import LiteLLMModel
from rlm_integrations.repl import LocalREPL
from rlm_integrations.testing import FakeOpenAIServer, Fault

ROOT = "root-alias"
SUB = "sub-alias"
CLOSING_MARKER = "Do not write code"

LITELLM_NOISE = pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning")
"""LiteLLM's first use of some providers' types makes pydantic warn once per process; not ours to fix."""

Reply = Callable[[dict[str, Any]], "str | Fault | Awaitable[str | Fault]"]


def block(code: str) -> str:
    """A fenced code block as a model writes it."""
    return f"```repl\n{code}\n```"


def config(**fields: Any) -> RLMConfig:
    """An RLMConfig with a generous cell timeout unless one is given."""
    fields.setdefault("cell_timeout_s", 30.0)
    return RLMConfig(**fields)


def lite(server: FakeOpenAIServer, alias: str, **kwargs: Any) -> LiteLLMModel:
    """The real LiteLLM adapter pointed at the fake server."""
    options: dict[str, Any] = {
        "api_base": server.api_base,
        "api_key": "sk-test",
        "timeout_s": 60.0,
        "max_retries": 0,
    }
    options.update(kwargs)
    return LiteLLMModel(f"openai/{alias}", **options)


def alias_of(body: dict[str, Any]) -> str:
    return str(body.get("model", ""))


def last_text(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def is_closing(body: dict[str, Any]) -> bool:
    return CLOSING_MARKER in last_text(body)


def question_of(body: dict[str, Any]) -> str:
    """The question of the run a root request belongs to."""
    for message in body["messages"]:
        content = str(message.get("content", ""))
        if message.get("role") == "user" and content.startswith("Question: "):
            return content.split("\n", 1)[0].removeprefix("Question: ")
    return ""


def turn_of(body: dict[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m.get("role") == "assistant")


class Wire:
    """A reply function for FakeOpenAIServer that also measures how many requests are in flight at once.

    Args:
        reply: the reply for one request body (sync or async; may return a `Fault`).
        latency_s: how long each request is held before it is answered.
        on_request: called with the body as each request arrives (e.g. to sample processes).
    """

    def __init__(
        self, reply: Reply, *, latency_s: float = 0.0, on_request: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.reply = reply
        self.latency_s = latency_s
        self.on_request = on_request
        self.in_flight = 0
        self.peak = 0
        self.count = 0

    async def __call__(self, body: dict[str, Any]) -> str | Fault:
        self.in_flight += 1
        self.count += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.on_request is not None:
                self.on_request(body)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            outcome = self.reply(body)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            return outcome
        finally:
            self.in_flight -= 1


def server_usage(server: FakeOpenAIServer) -> tuple[int, int, int]:
    """(requests answered, prompt tokens, completion tokens) as the server reported them."""
    answered = [r for r in server.requests if r.usage is not None]
    prompt = sum(r.usage["prompt_tokens"] for r in answered if r.usage)
    completion = sum(r.usage["completion_tokens"] for r in answered if r.usage)
    return len(answered), prompt, completion


def assert_every_start_closed(trajectory: Trajectory) -> None:
    """Every start event has its end: runs, turns, model calls, cells and sub-calls."""
    pairs: list[tuple[type[Any], type[Any], Callable[[Any], object]]] = [
        (RunStarted, RunFinished, lambda e: e.run_id),
        (IterationStarted, IterationFinished, lambda e: (e.run_id, e.iteration)),
        (LMCallStarted, LMCallFinished, lambda e: e.call_id),
        (CellStarted, CellFinished, lambda e: e.cell_id),
        (SubCallStarted, SubCallFinished, lambda e: e.call_id),
    ]
    for start, end, key in pairs:
        started = sorted(str(key(e)) for e in trajectory.events if isinstance(e, start))
        ended = sorted(str(key(e)) for e in trajectory.events if isinstance(e, end))
        assert started == ended, f"{start.__name__} without {end.__name__}: {sorted(set(started) - set(ended))}"


class WorkerCounter:
    """Samples the test process's child processes (REPL workers) in a thread and keeps the peak.

    Workers started by other tests (a warm pool) are left out: only children that were
    not alive when counting began are counted.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._baseline: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _count(self) -> int:
        children = psutil.Process().children(recursive=False)
        return sum(1 for child in children if child.pid not in self._baseline and _alive(child))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._count())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> WorkerCounter:
        self._baseline = {child.pid for child in psutil.Process().children(recursive=False)}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def unpooled_repl(cfg: RLMConfig) -> LocalREPL:
    """A LocalREPL that starts its own worker (no warm pool), so live workers are exactly the REPLs open."""
    return LocalREPL(
        cell_timeout_s=cfg.cell_timeout_s,
        memory_limit_mb=cfg.memory_limit_mb,
        max_output_chars=cfg.max_output_chars,
        pool=False,
    )
