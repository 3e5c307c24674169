"""`RLMRunnable`: a Recursive Language Model as a LangChain `Runnable`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any, cast, overload

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, model_validator

from rlm_integrations._sync import run_sync
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import Event, RunStarted
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.run import Run
from rlm_integrations.errors import BudgetExhaustedError, RunFailedError, UsageError
from rlm_integrations.langchain._streams import iterate_in_thread, one
from rlm_integrations.langchain.callbacks import RunTreeTracer
from rlm_integrations.langchain.chat_adapter import RunnableLM, runnable_model_name
from rlm_integrations.langchain.messages import DEFAULT_THRESHOLD_CHARS, output_message, split_messages
from rlm_integrations.langchain.schema import (
    BUDGET_FIELDS,
    FAILURE_STATUSES,
    LIMIT_STATUSES,
    RLMInput,
    RLMProgress,
    RunnableInput,
    input_from,
    trace_view,
)
from rlm_integrations.langchain.tool import RLMTool

__all__ = ["RLMBudgetExhaustedError", "RLMRunnable", "RunFailedError", "should_retry"]

RetrySpec = tuple[type[BaseException], ...] | Callable[[BaseException], bool]
ChainRunManager = CallbackManagerForChainRun | AsyncCallbackManagerForChainRun
StreamChunk = RLMProgress | RLMResult | dict[str, Any]
"""What `stream` yields: progress, then the result (or, for a messages state, the state update)."""


def _config_field(name: str) -> Any:
    """`RLMConfig`'s field `name`, its default and constraints included, to declare as this runnable's own."""
    return copy.deepcopy(RLMConfig.model_fields[name])


class RLMBudgetExhaustedError(BudgetExhaustedError):
    """A run ended on a limit and the runnable was built with ``raise_on_limit=True``.

    `RLMRunnable.with_retry` never retries it (nor does a retry that uses `should_retry`):
    running again would only spend the same budget again.

    Attributes:
        output: the run's output, with the best answer the model gave.
    """

    def __init__(self, output: RLMResult) -> None:
        limit = output.limit or output.status
        super().__init__(
            f"the RLM run stopped early: {output.status} ({limit}); the best answer so far is on .output.answer",
            status=output.status,
            limit=output.limit,
        )
        self.output = output


def should_retry(error: BaseException) -> bool:
    """Whether a retry may help: False for exhausted budgets and for the caller's own mistakes.

    Use it when wrapping a chain that contains an RLM:
    `chain.with_retry(retry_if_exception_type=should_retry)`.
    """
    return not isinstance(error, BudgetExhaustedError | UsageError)


class RLMRunnable(RunnableSerializable[RunnableInput, RLMResult]):
    r"""A Recursive Language Model as a LangChain `Runnable`.

    The context is loaded into a sandboxed REPL; the root chat model writes code over
    it, turn by turn, and the code can call the sub-model (`llm_query`) or a child RLM
    (`rlm_query`). Every chat model call is a real LangChain call with callbacks, so
    the run tree (turns, code cells as tool runs, sub-model calls under their cell,
    child RLMs) appears in LangSmith and in `astream_events`.

    Example:
        ```python
        from rlm_integrations.langchain import RLMRunnable

        rlm = RLMRunnable(model=chat_model)             # any chat model Runnable
        out = rlm.invoke({"query": "Which city is mentioned most?", "context": big_text})
        out.answer, out.status, out.usage.total_tokens
        ```

    The budget fields (`max_iterations`, `max_depth`, `max_llm_calls`, `max_tokens`,
    `max_cost_usd`, `timeout_s`) are the runnable's own fields, so
    `configurable_fields` can expose them; they start from `rlm_config` when it is
    given. An input can override them for one call. Nothing about a call is stored on
    the instance: one runnable serves concurrent `batch` / `abatch` calls.

    Failures raise: a run that ends with status ``"error"`` (the model failed after its
    retries, the REPL died) or ``"cancelled"`` raises `RunFailedError` with the partial
    `RLMResult` on `.result`, so callbacks record an error, `with_retry` retries and
    `with_fallbacks` falls back (`raise_on_error=False` returns the output instead). A
    limit that ends the run early (``"max_iterations"``, ``"budget_exhausted"``,
    ``"timeout"``) is not a failure: the output carries the best answer so far
    (`raise_on_limit=True` raises `RLMBudgetExhaustedError` instead).

    A LangGraph ``MessagesState``-shaped input, ``{"messages": [...]}``, makes it a graph
    node: the messages are split into question and context as `RLMChatModel` does
    (long parts and marked parts become `context`, see `rlm_integrations.langchain.messages`)
    and `invoke` / `ainvoke` / `batch` return the state update ``{"messages": [AIMessage(...)]}``
    (`stream` ends with that update too).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str | None = "RLM"
    """The name of the runnable's run."""
    model: Runnable[Any, Any]
    """The root chat model: any `Runnable` that takes messages (wrappers included)."""
    sub_model: Runnable[Any, Any] | None = None
    """The model behind `llm_query` (default: `model`)."""
    rlm_config: RLMConfig = Field(default_factory=lambda: RLMConfig.model_validate({}))
    """Every other knob of the loop (cell timeout, output bounds, sub-call concurrency, ...)."""
    # The budget fields are `RLMConfig`'s own (same defaults and bounds), declared here so
    # that `configurable_fields` can expose them.
    max_iterations: int = _config_field("max_iterations")
    """Root-model turns per run."""
    max_depth: int = _config_field("max_depth")
    """How deep `rlm_query` may recurse."""
    max_llm_calls: int | None = _config_field("max_llm_calls")
    """Model calls in the whole tree (None: no limit)."""
    max_tokens: int | None = _config_field("max_tokens")
    """Tokens in the whole tree, from `usage_metadata` (None: no limit)."""
    max_cost_usd: float | None = _config_field("max_cost_usd")
    """Spend in USD; LangChain models report no price: give theirs in `rlm_config.prices` (or `BudgetConfigError`)."""
    timeout_s: float | None = _config_field("timeout_s")
    """Wall-clock limit for the whole run (None: no limit)."""
    repl: str | Callable[[RLMConfig], Any] = "local"
    """``"local"`` (the sandboxed worker), ``"modal"``, or a callable returning a REPL."""
    tools: dict[str, Any] | list[Any] = Field(default_factory=dict)
    """Host functions callable from the REPL by name: callables, LangChain tools, `dspy.Tool`s (list or dict)."""
    nostream: bool = False
    """Tag internal model calls `nostream`, so LangGraph's "messages" stream leaves them out."""
    raise_on_limit: bool = False
    """Raise `RLMBudgetExhaustedError` when a limit ends the run, instead of returning the output."""
    raise_on_error: bool = True
    """Raise `RunFailedError` when the run ends with status "error" or "cancelled" (False: return the output)."""
    context_threshold_chars: int = Field(DEFAULT_THRESHOLD_CHARS, ge=0)
    """For a ``{"messages": [...]}`` input: text parts longer than this go to the REPL as `context`."""
    custom_events: bool = True
    """Dispatch each loop event as a custom event (seen by `astream_events(version="v2")`)."""
    trace_context_chars: int = Field(2_000, ge=0)
    """A context longer than this is traced as its type, size and a preview, never whole."""
    observers: list[Callable[[Event], None]] = Field(default_factory=list, exclude=True)
    """Engine event observers for every call (e.g. an `OpenTelemetryObserver`), next to the LangChain tracer."""

    @model_validator(mode="before")
    @classmethod
    def _budgets_from_config(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rlm_config") is not None:
            config = data["rlm_config"]
            config = config if isinstance(config, RLMConfig) else RLMConfig.model_validate(config)
            data = {**data, "rlm_config": config}
            for field in BUDGET_FIELDS:
                data.setdefault(field, getattr(config, field))
        return data

    @property
    def InputType(self) -> type[RLMInput]:
        """The input model."""
        return RLMInput

    @property
    def OutputType(self) -> type[RLMResult]:
        """The output model."""
        return RLMResult

    # -- invoke -------------------------------------------------------------------------------
    @overload
    def invoke(
        self, input: RLMInput | str | PromptValue | BaseMessage, config: RunnableConfig | None = None, **kwargs: Any
    ) -> RLMResult: ...
    @overload
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any: ...
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run the RLM on one input (a `RLMInput`, a dict of its fields, or a query string).

        Returns:
            the `RLMResult`; for a ``{"messages": [...]}`` state, the update ``{"messages": [AIMessage]}``.

        Raises:
            RunFailedError: the run ended with status "error" or "cancelled" (unless `raise_on_error=False`).
            RLMBudgetExhaustedError: a limit ended the run and `raise_on_limit=True`.
            UsageError: an input that cannot be read.
        """
        request, as_state = self._read(input)

        def call(_: Any, run_manager: ChainRunManager, config: RunnableConfig) -> Any:
            output = run_sync(self._arun(request, config, run_manager))
            return self._state_update(output) if as_state else output

        return self._call_with_config(cast(Any, call), cast(Any, self._traced_input(request)), config)

    @overload
    async def ainvoke(
        self, input: RLMInput | str | PromptValue | BaseMessage, config: RunnableConfig | None = None, **kwargs: Any
    ) -> RLMResult: ...
    @overload
    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any: ...
    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async `invoke`."""
        request, as_state = self._read(input)

        async def call(_: Any, run_manager: ChainRunManager, config: RunnableConfig) -> Any:
            output = await self._arun(request, config, run_manager)
            return self._state_update(output) if as_state else output

        return await self._acall_with_config(cast(Any, call), cast(Any, self._traced_input(request)), config)

    def _state_update(self, output: RLMResult) -> dict[str, Any]:
        model_name = f"rlm:{runnable_model_name(self.model)}"
        return {"messages": [output_message(output, model_name, name=self.name)]}

    # -- streaming ----------------------------------------------------------------------------
    # The four stream methods yield progress chunks before the output, more than `Runnable`'s
    # Iterator[Output] declares: hence their narrow `override` ignores.
    def stream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Generator[StreamChunk, None, None]:
        """Yield `RLMProgress` chunks while the run goes, then the `RLMResult` (for a messages state: the update).

        Closing the generator early (`close()`) cancels the run and closes its REPL.
        """
        request, as_state = self._read(input)
        transformer: Any = functools.partial(self._stream_transformer, request, as_state)
        traced: Any = self._traced_input(request)
        yield from self._transform_stream_with_config(iter([traced]), transformer, config)

    async def astream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncGenerator[StreamChunk, None]:
        """Yield `RLMProgress` chunks while the run goes, then the `RLMResult` (for a messages state: the update).

        Closing the generator early (`aclose()`) cancels the run and closes its REPL.
        """
        request, as_state = self._read(input)
        transformer: Any = functools.partial(self._astream_transformer, request, as_state)
        traced: Any = self._traced_input(request)
        async for chunk in self._atransform_stream_with_config(one(traced), transformer, config):
            yield chunk

    def transform(  # type: ignore[override]
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[StreamChunk]:
        """Stream from streamed input: the input chunks are merged first (an RLM needs the whole request)."""
        merged: Any = None
        for chunk in input:
            merged = _merge(merged, chunk)
        yield from self.stream(merged, config, **kwargs)

    async def atransform(  # type: ignore[override]
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[StreamChunk]:
        """Async `transform`."""
        merged: Any = None
        async for chunk in input:
            merged = _merge(merged, chunk)
        async for item in self.astream(merged, config, **kwargs):
            yield item

    def _stream_transformer(
        self,
        request: RLMInput,
        as_state: bool,
        inputs: Iterator[Any],
        run_manager: ChainRunManager,
        config: RunnableConfig,
    ) -> Iterator[StreamChunk]:
        for _ in inputs:
            pass
        yield from iterate_in_thread(lambda: self._progress(request, config, run_manager, as_state))

    async def _astream_transformer(
        self,
        request: RLMInput,
        as_state: bool,
        inputs: AsyncIterator[Any],
        run_manager: ChainRunManager,
        config: RunnableConfig,
    ) -> AsyncIterator[StreamChunk]:
        async for _ in inputs:
            pass
        async for chunk in self._progress(request, config, run_manager, as_state):
            yield chunk

    async def _progress(
        self, request: RLMInput, config: RunnableConfig, run_manager: ChainRunManager, as_state: bool = False
    ) -> AsyncIterator[StreamChunk]:
        chunks: asyncio.Queue[RLMProgress | None] = asyncio.Queue()
        task = asyncio.create_task(self._arun(request, config, run_manager, progress=chunks.put_nowait))
        task.add_done_callback(lambda _: chunks.put_nowait(None))
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            output = task.result()
            yield self._state_update(output) if as_state else output
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- the run ------------------------------------------------------------------------------
    async def _arun(
        self,
        request: RLMInput,
        config: RunnableConfig,
        run_manager: ChainRunManager,
        progress: Callable[[RLMProgress], None] | None = None,
    ) -> RLMResult:
        tracer = RunTreeTracer(run_manager, run_manager.run_id, custom_events=self.custom_events)
        model = RunnableLM(self.model, config=config, router=tracer, nostream=self.nostream)
        sub_model = (
            model
            if self.sub_model is None
            else RunnableLM(self.sub_model, config=config, router=tracer, nostream=self.nostream)
        )
        observers: list[Callable[[Event], None]] = [tracer, *self.observers]
        if progress is not None:
            observers.append(_ProgressRelay(progress))
        run = Run(
            model=model,
            sub_model=sub_model,
            repl=self.repl,
            config=self.config_for(request),
            tools=self.tools,
            observers=observers,
        )
        try:
            output = await run.execute(request.query, request.context)
        except BaseException as error:
            await tracer.aclose(error)
            raise
        await tracer.aclose()
        if self.raise_on_error and output.status in FAILURE_STATUSES:
            raise RunFailedError(
                f"the RLM run failed ({output.status}): {output.error or 'no detail'}; "
                "the partial output is on .result (raise_on_error=False returns it instead)",
                result=output,
                status=output.status,
                error=output.error,
            )
        if self.raise_on_limit and output.status in LIMIT_STATUSES:
            raise RLMBudgetExhaustedError(output)
        return output

    def config_for(self, request: RLMInput | None = None) -> RLMConfig:
        """The `RLMConfig` a call runs with: `rlm_config`, the budget fields, then the input's overrides.

        Raises:
            pydantic.ValidationError: an override out of range.
        """
        values = self.rlm_config.model_dump()
        values.update({field: getattr(self, field) for field in BUDGET_FIELDS})
        if request is not None:
            values.update(request.overrides())
        return self.rlm_config.with_overrides(**values)

    def coerce_input(self, input: Any) -> RLMInput:
        """Read an input: a `RLMInput`, a dict of its fields, a query string, a prompt value or a message.

        A mapping with ``"messages"`` (and no ``"query"``), as a LangGraph ``MessagesState``,
        is split into question and context by the rule of `rlm_integrations.langchain.messages`;
        its other keys are ignored.

        Raises:
            UsageError: anything else, or a dict that is not a valid `RLMInput`.
        """
        return self._read(input)[0]

    def _read(self, input: Any) -> tuple[RLMInput, bool]:
        if _is_messages_state(input):
            messages = input["messages"]
            if isinstance(messages, BaseMessage):
                messages = [messages]
            query, context = split_messages(list(messages), self.context_threshold_chars)
            return RLMInput(query=query, context=context), True
        return input_from(input), False

    def _traced_input(self, request: RLMInput) -> dict[str, Any]:
        traced: dict[str, Any] = {
            "query": request.query,
            "context": trace_view(request.context, self.trace_context_chars),
        }
        traced.update(request.overrides())
        return traced

    # -- LangChain conveniences ---------------------------------------------------------------
    def with_retry(
        self,
        *,
        retry_if_exception_type: RetrySpec = (Exception,),
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: Any = None,
        stop_after_attempt: int = 3,
    ) -> Runnable[RunnableInput, RLMResult]:
        """`Runnable.with_retry`, except that exhausted budgets and usage errors are never retried."""
        return super().with_retry(
            retry_if_exception_type=_retry_predicate(retry_if_exception_type),
            wait_exponential_jitter=wait_exponential_jitter,
            exponential_jitter_params=exponential_jitter_params,
            stop_after_attempt=stop_after_attempt,
        )

    def as_tool(
        self,
        args_schema: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """This RLM as an `RLMTool` (with `args_schema` or `arg_types`: LangChain's generic tool)."""
        if args_schema is not None or arg_types is not None:
            return super().as_tool(args_schema, name=name, description=description, arg_types=arg_types)
        options: dict[str, Any] = {}
        if name:
            options["name"] = name
        if description:
            options["description"] = description
        return RLMTool(rlm=self, **options)


class _ProgressRelay:
    """An observer that turns events into `RLMProgress` chunks, knowing each run's depth."""

    def __init__(self, sink: Callable[[RLMProgress], None]) -> None:
        self.sink = sink
        self.depths: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.depths[event.run_id] = event.depth
        self.sink(RLMProgress.from_event(event, self.depths.get(event.run_id, 0)))


def _retry_predicate(spec: RetrySpec) -> Callable[[BaseException], bool]:
    def predicate(error: BaseException) -> bool:
        if not should_retry(error):
            return False
        if isinstance(spec, tuple):
            return isinstance(error, spec)
        return bool(spec(error))

    return predicate


def _is_messages_state(input: Any) -> bool:
    return isinstance(input, Mapping) and "messages" in input and "query" not in input


def _merge(merged: Any, chunk: Any) -> Any:
    if isinstance(merged, dict) and isinstance(chunk, dict):
        return {**merged, **chunk}
    return chunk
