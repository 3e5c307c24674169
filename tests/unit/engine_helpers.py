"""Shared helpers for the engine tests: scripted root models, recording REPL factories, event helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, get_args

from rlm_integrations import RLM, RLMConfig, RLMResult
from rlm_integrations.core.events import Event
from rlm_integrations.core.question_shape import Shape
from rlm_integrations.core.run import REPLFactory
from rlm_integrations.core.worked_examples import example_for
from rlm_integrations.lm import Message, ScriptedLM
from rlm_integrations.repl import LocalREPL
from rlm_integrations.testing import FakeREPL

# Per-cell limit for tests that do not test timeouts: generous, so a loaded CI box never trips it.
CELL_TIMEOUT_S = 20.0

CLOSING_MARKER = "Do not write code"
"""Appears in the closing request the engine sends when a limit is hit."""


def block(code: str, language: str = "repl") -> str:
    """A fenced code block as a model would write it."""
    return f"```{language}\n{code}\n```"


def conversation(messages: Sequence[Message]) -> list[Message]:
    """The messages of the real run: without the worked example that the chat policy puts first."""
    rest = list(messages[1:])
    for shape in get_args(Shape):
        example = example_for(shape)
        if [dict(m) for m in rest[: len(example)]] == example:
            return rest[len(example) :]
    return rest


def question_of(messages: Sequence[Message]) -> str:
    """The query of the run a root-model request belongs to (from its first user message)."""
    first_user = next(m["content"] for m in conversation(messages) if m["role"] == "user")
    head = first_user.split("\n", 1)[0]
    assert head.startswith("Question: "), head
    return head.removeprefix("Question: ")


def turn_of(messages: Sequence[Message]) -> int:
    """0 for a run's first root call, 1 for its second, and so on."""
    return sum(1 for m in conversation(messages) if m["role"] == "assistant")


def is_closing(messages: Sequence[Message]) -> bool:
    """True if this request is the engine's final-answer request after a limit."""
    return CLOSING_MARKER in messages[-1]["content"]


def router(scripts: Mapping[str, Sequence[str]], *, closing: str = "FINAL('closing answer')") -> Callable[..., str]:
    """A reply function for a root model shared by several runs (parent, children, concurrent runs).

    Each run is told apart by its question; its n-th root call gets `scripts[question][n]`
    (the last reply repeats). The closing request after a limit gets `closing`.
    """

    def reply(messages: list[Message]) -> str:
        if is_closing(messages):
            return closing
        script = scripts[question_of(messages)]
        return script[min(turn_of(messages), len(script) - 1)]

    return reply


def last_user(messages: Sequence[Message]) -> str:
    """The content of the last user message of a request."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def kinds(events: Iterable[Event]) -> list[str]:
    """The `kind` of each event, in order."""
    return [event.kind for event in events]


def config(**fields: Any) -> RLMConfig:
    """An RLMConfig with a generous cell timeout unless one is given."""
    fields.setdefault("cell_timeout_s", CELL_TIMEOUT_S)
    return RLMConfig(**fields)


def fake_repls(cfg: RLMConfig) -> FakeREPL:
    """The engine tests' default REPL backend: an in-process `FakeREPL` (no worker process to start).

    Tests whose subject is the sandboxed worker itself (cell timeouts, restarts, memory limits,
    killing a worker on cancel) pass ``repl="local"`` or a `RecordingREPLs` instead.
    """
    return FakeREPL.from_config(cfg)


class RecordingREPLs:
    """A REPL factory that builds real LocalREPLs and keeps them, so tests can see their workers."""

    def __init__(self) -> None:
        self.repls: list[LocalREPL] = []

    def __call__(self, cfg: RLMConfig) -> LocalREPL:
        repl = LocalREPL(
            cell_timeout_s=cfg.cell_timeout_s,
            memory_limit_mb=cfg.memory_limit_mb,
            max_output_chars=cfg.max_output_chars,
        )
        self.repls.append(repl)
        return repl


def make_rlm(
    replies: Sequence[str | BaseException] | Callable[..., Any] | ScriptedLM,
    sub: ScriptedLM | None = None,
    *,
    repl: str | REPLFactory = fake_repls,
    **fields: Any,
) -> tuple[RLM, ScriptedLM, ScriptedLM]:
    """An RLM with a scripted root (and sub) model; returns (rlm, root, sub).

    Its REPL is an in-process `FakeREPL` unless `repl` says otherwise (``repl="local"`` for
    the real sandboxed worker, where the test is about the worker).
    """
    root = replies if isinstance(replies, ScriptedLM) else ScriptedLM(replies, name="root")
    sub_model = sub if sub is not None else ScriptedLM(lambda m: f"sub:{m[-1]['content']}", name="sub")
    return RLM(root, sub_model, config=config(**fields), repl=repl), root, sub_model


async def run(rlm: RLM, query: str = "What is it?", context: Any = "hello world", **kwargs: Any) -> RLMResult:
    """`rlm.acompletion`, bounded so a hung run fails the test instead of the suite."""
    return await asyncio.wait_for(rlm.acompletion(query, context, **kwargs), timeout=60)
