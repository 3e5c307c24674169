"""`RLM`: the public face of the engine. `rlm.completion(query, context)` instead of `llm(prompt)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rlm_integrations._sync import run_sync
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.engine import PolicyFactory, REPLFactory
from rlm_integrations.core.events import Observer
from rlm_integrations.core.pricing import check_prices
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.run import Run, resolve_repl
from rlm_integrations.core.tools import ToolsArg, check_tools
from rlm_integrations.errors import RunCancelled, RunInterrupted, UsageError
from rlm_integrations.lm.protocol import LanguageModel

if TYPE_CHECKING:
    from rlm_integrations.core.session import RLMSession

__all__ = ["RLM"]


class RLM:
    r"""A Recursive Language Model: the context lives in a REPL and the model works on it with code.

    Args:
        model: the root model: a LiteLLM model string (``"openai/gpt-5-mini"``) or any
            `LanguageModel`.
        sub_model: the model behind `llm_query` (default: `model`).
        repl: the name of a registered REPL backend (``"local"``, the sandboxed worker,
            by default; ``"modal"``; or any name given to
            `rlm_integrations.repl.register_backend`), or a callable that takes the
            `RLMConfig` and returns a fresh `REPL`.
        config: limits and knobs (`RLMConfig`); budgets cover the whole recursion tree.
        observers: callables that receive every event of every run.
        tools: extra host functions callable from the REPL by name (their first
            docstring line is shown to the model): a dict of name to tool, or a list of
            tools. A tool is a callable, a LangChain `BaseTool` or a `dspy.Tool` (see
            `rlm_integrations.core.tools`); each runs in the host, never in the sandbox,
            and each call appears in the run tree as a sub-call.
        policy: how the root model is driven (default: `ChatPolicy`).

    The object holds no per-run state: concurrent `acompletion` calls are independent.

    Example:
        ```python
        rlm = RLM(ScriptedLM(["```repl\\nFINAL(len(context))\\n```"]))
        result = rlm.completion("How long is the context?", context="abc")
        assert result.answer == 3
        ```
    """

    def __init__(
        self,
        model: str | LanguageModel,
        sub_model: str | LanguageModel | None = None,
        *,
        repl: str | REPLFactory = "local",
        config: RLMConfig | None = None,
        observers: Sequence[Observer] = (),
        tools: ToolsArg | None = None,
        policy: PolicyFactory | None = None,
    ) -> None:
        self.model = _resolve_model(model)
        self.sub_model = self.model if sub_model is None else _resolve_model(sub_model)
        self.config = config or RLMConfig()
        self.repl_factory = resolve_repl(repl)
        self.observers = list(observers)
        self.tools = check_tools(tools)  # a bad or reserved name is refused here, before any run
        self.policy = policy
        check_prices(self.config, [self.model, self.sub_model])

    def completion(
        self, query: str, context: Any = None, *, observers: Sequence[Observer] = (), **overrides: Any
    ) -> RLMResult:
        """Answer `query` over `context` (blocking; also works inside a running event loop).

        Args:
            query: the question.
            context: str, bytes, or JSON-compatible data (lists, dicts, ...), loaded once
                into the REPL as `context`.
            observers: extra observers for this call only.
            **overrides: `RLMConfig` fields for this call only (validated like the constructor).

        Raises:
            pydantic.ValidationError: an override that is out of range or not a field.
            RunInterrupted: Ctrl-C (a `KeyboardInterrupt`); `.result` is the partial result.
        """
        kept: list[RLMResult] = []

        async def keeping() -> RLMResult:
            try:
                return await self.acompletion(query, context, observers=observers, **overrides)
            except RunCancelled as cancelled:
                kept.append(cancelled.result)
                raise

        try:
            return run_sync(keeping())
        except KeyboardInterrupt as interrupt:
            if kept and not isinstance(interrupt, RunInterrupted):
                raise RunInterrupted(kept[0]) from None
            raise

    async def acompletion(
        self, query: str, context: Any = None, *, observers: Sequence[Observer] = (), **overrides: Any
    ) -> RLMResult:
        """Answer `query` over `context`.

        Running out of a budget is not an error: the result's `status` and `limit` say
        which limit ended the run, and `answer` is the best answer the model gave.

        Raises:
            UsageError: an empty query.
            pydantic.ValidationError: an `RLMConfig` override that is out of range or not a
                field (nothing has started).
            BudgetConfigError: `max_cost_usd` is set and a model has no price.
            UnsupportedContextError: a context the REPL cannot hold (before any model call).
            RunCancelled: the task was cancelled (an `asyncio.CancelledError`); the REPLs are
                closed first and `.result` is the partial result, status ``"cancelled"``.
        """
        return await self.prepare(observers=observers, overrides=overrides).execute(query, context)

    def prepare(
        self,
        *,
        config: RLMConfig | None = None,
        observers: Sequence[Observer] = (),
        overrides: Mapping[str, Any] | None = None,
    ) -> Run:
        """A `Run` with this RLM's models, REPL backend, tools, policy, observers and call cache.

        Args:
            config: the config to start from (default: this RLM's).
            observers: extra observers for this run only (after the RLM's own).
            overrides: `RLMConfig` fields for this run only.

        Raises:
            pydantic.ValidationError: an override that is out of range or not a field.
        """
        return Run(
            model=self.model,
            sub_model=self.sub_model,
            repl=self.repl_factory,
            config=self.config if config is None else config,
            overrides=overrides,
            tools=self.tools,
            observers=[*self.observers, *observers],
            policy=self.policy,
            cache_scope=self,
        )

    def session(self, context: Any = None, **overrides: Any) -> RLMSession:
        """A session over `context`: follow-up questions that share one live REPL.

        Each `ask` is a full run with its own budgets; the REPL (every variable earlier
        asks created) and a digest of earlier questions and answers carry over. See
        `RLMSession` and the sessions guide.

        Raises:
            pydantic.ValidationError: an `RLMConfig` override that is out of range or not a field.
            UnsupportedContextError: a context the REPL cannot hold.
        """
        from rlm_integrations.core.session import RLMSession

        return RLMSession(self, context, **overrides)


def _resolve_model(model: str | LanguageModel) -> LanguageModel:
    if isinstance(model, str):
        from rlm_integrations.lm import resolve_model  # the provider registry: prefix -> adapter

        return resolve_model(model)
    for attribute in ("acomplete", "name", "count_tokens"):
        if not hasattr(model, attribute):
            raise UsageError(
                f"model must be a model string or a LanguageModel; {type(model).__name__} has no {attribute!r}"
            )
    return model
