r"""`Run`: the one entry point of a run, which every face calls.

The core `RLM`, its sessions, the DSPy module, the LangChain runnable (and through it
`RLMChatModel`, `RLMTool` and the graph node) and the CLI all start a run here, so the
checks, the engine, the event bus, cancellation and the result are written once:

```python
run = Run(model=ScriptedLM(["```repl\nFINAL(len(context))\n```"]), repl="local")
result = await run.execute("How long is the context?", "abc")
assert result.answer == 3
```

A `Run` is built from what the whole recursion tree shares (models, REPL backend,
config with its validated overrides, tools, observers, policy, cache) and validates all of
it before anything starts. `execute` then validates the question and the context, runs the
top-level loop and returns the one result type, `RLMResult`. Between the two, `budget` is
the live budget of the tree (a face may show what is left of it to its model).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlm_integrations.core.budget import Budget
from rlm_integrations.core.cache import cache_for
from rlm_integrations.core.citations import citations_for
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.engine import Engine, PolicyFactory, REPLFactory
from rlm_integrations.core.events import CitationsFound, Event, EventBus, Observer
from rlm_integrations.core.policy import Policy
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.run_state import AnswerCheck
from rlm_integrations.core.tools import ToolsArg, check_tools
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.errors import RunCancelled, UnsupportedContextError, UsageError
from rlm_integrations.lm.protocol import LanguageModel
from rlm_integrations.repl.protocol import REPL
from rlm_integrations.repl.registry import resolve_backend

__all__ = ["REPLFactory", "Run", "check_context", "check_query", "resolve_repl"]

_SCALARS = (str, bytes, int, float, bool, type(None))


class Run:
    """One run of the RLM loop, set up and not yet started; `execute` starts it.

    Args:
        model: the root model (a `LanguageModel`; faces resolve names and framework models).
        sub_model: the model behind `llm_query` (default: `model`).
        repl: a registered REPL backend name (``"local"``, ``"modal"``, ...) or a factory
            that takes the run's `RLMConfig` and returns a fresh, unstarted `REPL`.
        config: the limits and knobs (default: `RLMConfig()`, the library's defaults).
        overrides: `RLMConfig` fields for this run only, validated like the constructor.
        tools: host functions callable from the REPL by name (see `rlm_integrations.core.tools`).
        observers: event sinks: each receives every event of the run tree, in order.
        policy: how the root model of every run in the tree is driven (default: `ChatPolicy`).
        cache_scope: the object whose call cache this run shares when `config.cache` is set
            (an `RLM`, a DSPy module; it must be weak-referenceable). None: the run's own.

    A `Run` executes once. Cancelling the task that awaits `execute` closes its REPLs and
    raises `RunCancelled` carrying the partial result.

    Raises:
        pydantic.ValidationError: an override that is out of range or not a field.
        UsageError: a bad tool name or value.
        UnknownBackendError: a REPL backend name nothing registered.
        BudgetConfigError: `max_cost_usd` is set and a model has no price.
    """

    def __init__(
        self,
        *,
        model: LanguageModel,
        sub_model: LanguageModel | None = None,
        repl: str | REPLFactory = "local",
        config: RLMConfig | None = None,
        overrides: Mapping[str, Any] | None = None,
        tools: ToolsArg | None = None,
        observers: Sequence[Observer] = (),
        policy: PolicyFactory | None = None,
        cache_scope: object | None = None,
    ) -> None:
        self.config: RLMConfig = (config or RLMConfig()).with_overrides(**dict(overrides or {}))
        self.events: list[Event] = []
        """Every event of the run tree so far (the result's trajectory)."""
        self._started: float | None = None
        self._engine = Engine(
            root_model=model,
            sub_model=model if sub_model is None else sub_model,
            config=self.config,
            bus=EventBus([self.events.append, *observers]),
            repl_factory=resolve_repl(repl),
            policy_factory=policy,
            tools=check_tools(tools),
            cache=cache_for(self if cache_scope is None else cache_scope, self.config.cache),
        )

    @property
    def budget(self) -> Budget:
        """The tree's budget: usage so far, elapsed time (live while the run goes)."""
        return self._engine.budget

    async def execute(
        self,
        query: str,
        context: Any = None,
        *,
        variables: Mapping[str, Any] | None = None,
        policy: Policy | None = None,
        check_answer: AnswerCheck | None = None,
        repl: REPL | None = None,
        notes: str | None = None,
        citations: bool = True,
    ) -> RLMResult:
        """Answer `query` over `context`: run the top-level loop and return its `RLMResult`.

        Running out of a budget is not an error: the result's `status` and `limit` say
        which limit ended the run, and `answer` is the best answer the model gave.

        Args:
            query: the question (a non-empty string).
            context: str, bytes or JSON-compatible data, loaded once into the REPL as `context`.
            variables: more values loaded into the REPL next to `context`, by name.
            policy: drives the top-level run only (child runs use the constructor's `policy`).
            check_answer: sees each answer submitted with `FINAL` and may convert or reject it.
            repl: a started REPL that already holds `context` (a session's); used as is, left open.
            notes: text put before the question in the first message (a session's digest).
            citations: find `RLMResult.citations` (when `config.citations` is on too).

        Raises:
            UsageError: an empty query, or a second `execute` of this run.
            UnsupportedContextError: a context the REPL cannot hold (before any model call).
            RunCancelled: the task was cancelled; `.result` is the partial result.
        """
        check_query(query)
        check_context(context)
        if self._started is not None:
            raise UsageError("this Run was executed already; build a new Run for each run")
        self._started = started = time.monotonic()
        engine = self._engine
        try:
            outcome = await engine.run(
                query,
                context,
                variables=variables,
                policy=policy,
                check_answer=check_answer,
                repl=repl,
                notes=notes,
            )
        except asyncio.CancelledError:
            raise RunCancelled(self._partial(time.monotonic() - started)) from None
        cited = citations_for(self.config, context, outcome.answer, self.events, engine.cites) if citations else []
        if cited:  # into the trajectory too, so that a saved run keeps them
            engine.bus.emit(CitationsFound(run_id=outcome.run_id, citations=cited))
        return RLMResult(
            answer=outcome.answer,
            status=outcome.status,
            limit=outcome.limit,
            error=outcome.error,
            usage=engine.budget.usage(),
            iterations=outcome.iterations,
            duration=time.monotonic() - started,
            trajectory=Trajectory(events=self.events),
            citations=cited,
        )

    def _partial(self, duration: float) -> RLMResult:
        """What a cancelled run had: usage, turns, and the events up to the cancellation."""
        trajectory = Trajectory(events=self.events)
        root = trajectory.root
        return RLMResult(
            status="cancelled",
            error="the run was cancelled",
            usage=self._engine.budget.usage(),
            iterations=root.end.iterations if root is not None and root.end is not None else 0,
            duration=duration,
            trajectory=trajectory,
        )


def resolve_repl(repl: str | REPLFactory) -> REPLFactory:
    """The REPL factory for `repl`: a callable as is, a name through the backend registry.

    Raises:
        UnknownBackendError: a name nothing registered (the message lists what is).
    """
    if callable(repl):
        return repl
    factory: Callable[[RLMConfig], REPL] = resolve_backend(repl)
    return factory


def check_query(query: Any) -> None:
    """Refuse a query that is not a non-empty string.

    Raises:
        UsageError: naming what a query must be.
    """
    if not isinstance(query, str) or not query.strip():
        raise UsageError("query must be a non-empty string: the question the RLM should answer")


def check_context(context: Any, depth: int = 0) -> None:
    """Refuse context types the REPL cannot hold, cheaply (containers are sampled, not walked fully).

    Raises:
        UnsupportedContextError: naming the type and how to convert it.
    """
    if isinstance(context, _SCALARS):
        return
    if isinstance(context, list | tuple) and depth < 3:
        for item in list(context[:50]):
            check_context(item, depth + 1)
        return
    if isinstance(context, dict) and depth < 3:
        for key, value in list(context.items())[:50]:
            if not isinstance(key, str):
                raise UnsupportedContextError(
                    f"context dict keys must be str, got {type(key).__name__}; convert them with str()",
                    value_type="dict",
                )
            check_context(value, depth + 1)
        return
    if isinstance(context, list | tuple | dict):
        return
    raise UnsupportedContextError(
        f"context of type {type(context).__name__} is not supported. Pass a str, bytes, or JSON-compatible "
        "data (lists and dicts of str, numbers, bools, None); convert other objects first, e.g. with str().",
        value_type=type(context).__name__,
    )
