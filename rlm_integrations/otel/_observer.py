"""`OpenTelemetryObserver`: the engine's events as OpenTelemetry spans.

For one call the span tree is:

```
invoke_agent rlm              one per run (the top-level run and each child run)
├── rlm.iteration             one per root-model turn
│   ├── chat <root model>     the turn's model call (CLIENT)
│   └── rlm.cell              one per code cell
│       ├── chat <sub model>  each llm_query / llm_query_batched prompt (CLIENT)
│       ├── execute_tool <name>  each call of a user tool (tools=[...])
│       └── rlm_query         a child run started by the cell
│           └── invoke_agent rlm   the child run; its turns nest the same way
└── chat <root model>         the closing request, when a limit ended the run
```

Parents come from the ids the events carry (`run_id`, `cell_id`, `parent_call_id`), never
from the current OpenTelemetry context, because sub-calls run concurrently; depths, the runs
below a run and a run's usage come from core's `RunTree`, fed the same events. Only the
top-level run takes the caller's current context as its parent, so a run nests under a
span the application has open. Start and end times are the events' own timestamps.
"""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass
from typing import Any, Never

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

import rlm_integrations.otel._attributes as attr
from rlm_integrations.core.events import (
    EVENT_TYPES,
    CellFinished,
    CellStarted,
    CitationsFound,
    Event,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.core.run_tree import RunTree
from rlm_integrations.core.tools import TOOL_MODEL

__all__ = [
    "HANDLED_EVENTS",
    "CellFailed",
    "ModelCallFailed",
    "OpenTelemetryObserver",
    "RunFailed",
    "StepInterrupted",
    "SubCallFailed",
]


class ModelCallFailed(Exception):
    """A model call's failure, recorded on its span (never raised)."""


class SubCallFailed(Exception):
    """A failed `llm_query` / `rlm_query`, recorded on its span (never raised)."""


class CellFailed(Exception):
    """A cell's error, recorded on its span only with ``cell_errors_as_span_errors=True`` (never raised)."""


class StepInterrupted(Exception):
    """A step cut short by a time limit, a cancellation, or a run that ended around it (never raised)."""


class RunFailed(Exception):
    """A run that ended with status ``"error"`` or ``"cancelled"`` (never raised)."""


for _error in (ModelCallFailed, SubCallFailed, CellFailed, StepInterrupted, RunFailed):
    _error.__module__ = "rlm_integrations.otel"  # spans name them where users import them from


def _ns(at: float) -> int:
    """An event's timestamp (seconds since the epoch) in the nanoseconds OpenTelemetry takes."""
    return int(at * 1_000_000_000)


@dataclass
class _Open:
    """A span that has started and not ended, and the run it belongs to."""

    span: Span
    run_id: str


class OpenTelemetryObserver:
    """An engine observer that records every run as OpenTelemetry spans.

    Pass it wherever observers go: `RLM(..., observers=[OpenTelemetryObserver()])`,
    `rlm_integrations.dspy.RLM(..., observers=[...])` or
    `RLMRunnable(..., observers=[...])`. One observer may serve many concurrent runs.

    Args:
        tracer_provider: where spans go; None uses the global provider
            (`opentelemetry.trace.set_tracer_provider`).
        capture_content: also record prompts, replies, code, cell output and answers
            (off by default: they may hold the user's data).
        max_content_chars: each captured text is cut to this many characters.
        cell_errors_as_span_errors: mark a cell whose code raised (or timed out) as a span
            error. Off by default: such an error is the model's to read and fix, part of a
            normal run, so it is recorded as an ``rlm.cell.error`` span event and the
            ``rlm.cell.error_type`` attribute instead.

    The observer does no I/O: it starts and ends spans, and the span processor the
    provider was built with (a `BatchSpanProcessor` in production) does the exporting.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        capture_content: bool = False,
        max_content_chars: int = 2_000,
        cell_errors_as_span_errors: bool = False,
    ) -> None:
        if max_content_chars < 0:
            raise ValueError("max_content_chars must be >= 0")
        self.capture_content = capture_content
        self.max_content_chars = max_content_chars
        self.cell_errors_as_span_errors = cell_errors_as_span_errors
        self._tracer = trace.get_tracer("rlm_integrations", _version(), tracer_provider=tracer_provider)
        self._lock = threading.RLock()
        self._open: dict[str, _Open] = {}
        self._tree = RunTree()
        self.unknown_kinds: set[str] = set()
        """Kinds of events this observer received and does not handle (objects that are no `Event`)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> OpenTelemetryObserver:
        """The observer itself: a copied program (DSPy optimizers copy modules) reports to the same place."""
        return self

    def __call__(self, event: Event) -> None:
        """Start or end the span an event marks (called by the engine, in order)."""
        with self._lock:
            if isinstance(event, EVENT_TYPES):
                self._tree(event)
            match event:
                case RunStarted():
                    self._run_started(event)
                case RunFinished():
                    self._run_finished(event)
                case IterationStarted():
                    self._iteration_started(event)
                case IterationFinished():
                    self._iteration_finished(event)
                case LMCallStarted():
                    self._lm_started(event)
                case LMCallFinished():
                    self._lm_finished(event)
                case CellStarted():
                    self._cell_started(event)
                case CellFinished():
                    self._cell_finished(event)
                case SubCallStarted():
                    self._sub_started(event)
                case SubCallFinished():
                    self._sub_finished(event)
                case CitationsFound():
                    pass  # found after the run ended: no span
                case _:
                    self._skip(event)

    def _skip(self, event: Never) -> None:
        """Count an object that is no known event (typed `Never`, as `assert_never`: an unmatched class fails mypy)."""
        self.unknown_kinds.add(str(getattr(event, "kind", type(event).__name__)))

    @property
    def open_spans(self) -> int:
        """How many spans are started and not yet ended."""
        with self._lock:
            return len(self._open)

    def end_open_spans(self, reason: str = "the run ended before this step finished") -> None:
        """End every open span now, innermost first, as interrupted (e.g. before the process exits)."""
        with self._lock:
            for key in reversed(list(self._open)):
                self._interrupt(self._open.pop(key).span, reason, None)
            self._tree = RunTree()

    # -- runs -----------------------------------------------------------------------------------
    def _run_started(self, event: RunStarted) -> None:
        attributes: dict[str, Any] = {
            attr.OPERATION: "invoke_agent",
            attr.AGENT_NAME: "rlm",
            attr.AGENT_ID: event.run_id,
            **attr.model_attributes(event.model),
            "rlm.run_id": event.run_id,
            "rlm.depth": event.depth,
            "rlm.sub_model": event.sub_model,
        }
        if event.parent_id is not None:
            attributes["rlm.parent_run_id"] = event.parent_id
        if event.context is not None:
            attributes["rlm.context.type"] = event.context.type
            attributes["rlm.context.chars"] = event.context.chars
            if event.context.items is not None:
                attributes["rlm.context.items"] = event.context.items
        if self.capture_content:
            attributes["rlm.query"] = self._text(event.query)
        parent = self._parent(f"sub:{event.parent_call_id}", f"cell:{event.parent_cell_id}", f"run:{event.parent_id}")
        if event.parent_id is not None and parent is None:
            parent = Context()  # a child whose parent this observer never saw: its own trace, not the caller's
        sub = self._open.get(f"sub:{event.parent_call_id}")
        if sub is not None:
            sub.span.set_attribute("rlm.child_run_id", event.run_id)
        self._start(f"run:{event.run_id}", event.run_id, attr.SPAN_RUN, parent, attributes, event.at)

    def _run_finished(self, event: RunFinished) -> None:
        node = self._tree.runs.get(event.run_id)
        finished = {run.run_id for run in node.walk()} if node is not None else {event.run_id}
        for key in reversed(list(self._open)):  # whatever the run left open ends first, innermost first
            step = self._open[key]
            if step.run_id in finished and key != f"run:{event.run_id}":
                del self._open[key]
                self._interrupt(step.span, f"the run ended ({event.status}) before this step finished", event.at)
        entry = self._open.pop(f"run:{event.run_id}", None)
        usage = event.usage
        if usage is None and node is not None and node.start is not None:
            usage = node.usage.token_usage()  # the run's calls and its children's
        if node is not None and node.parent is None:  # a top-level run: its tree is done
            self._tree.forget(event.run_id)
            if not self._tree.runs:
                self._tree = RunTree()
        if entry is None:
            return
        span = entry.span
        span.set_attributes(
            {
                "rlm.status": event.status,
                "rlm.iterations": event.iterations,
                **({"rlm.limit": event.limit} if event.limit is not None else {}),
                **attr.usage_attributes(usage),
            }
        )
        if self.capture_content and event.answer is not None:
            span.set_attribute("rlm.answer", self._text(str(event.answer)))
        if event.status in ("error", "cancelled"):
            message = f"the run ended with status {event.status}"
            self._fail(span, RunFailed(message), "cancelled" if event.status == "cancelled" else "RunFailed", event.at)
        span.end(end_time=_ns(event.at))

    # -- turns ----------------------------------------------------------------------------------
    def _iteration_started(self, event: IterationStarted) -> None:
        attributes = {"rlm.iteration": event.iteration, "rlm.depth": self._depth(event.run_id)}
        key = f"iteration:{event.run_id}:{event.iteration}"
        self._start(key, event.run_id, attr.SPAN_ITERATION, self._parent(f"run:{event.run_id}"), attributes, event.at)

    def _iteration_finished(self, event: IterationFinished) -> None:
        entry = self._open.pop(f"iteration:{event.run_id}:{event.iteration}", None)
        if entry is None:
            return
        if event.interrupted:
            self._interrupt(entry.span, "the turn was cut short", event.at)
            return
        entry.span.end(end_time=_ns(event.at))

    # -- root-model calls -----------------------------------------------------------------------
    def _lm_started(self, event: LMCallStarted) -> None:
        attributes: dict[str, Any] = {
            attr.OPERATION: "chat",
            **attr.model_attributes(event.model),
            "rlm.role": "root",
            "rlm.purpose": event.purpose,
            "rlm.iteration": event.iteration,
            "rlm.depth": self._depth(event.run_id),
            "rlm.call_id": event.call_id,
        }
        if self.capture_content:
            attributes[attr.INPUT_MESSAGES] = attr.input_messages(event.new_messages, self.max_content_chars)
        parents = (f"iteration:{event.run_id}:{event.iteration}",) if event.purpose == "step" else ()
        parent = self._parent(*parents, f"run:{event.run_id}")
        key = f"lm:{event.call_id}"
        self._start(key, event.run_id, attr.chat_span_name(event.model), parent, attributes, event.at, SpanKind.CLIENT)

    def _lm_finished(self, event: LMCallFinished) -> None:
        entry = self._open.pop(f"lm:{event.call_id}", None)
        if entry is None:
            return
        span = entry.span
        span.set_attributes(
            {attr.RESPONSE_MODEL: event.model, attr.CACHE_HIT: event.cached, **attr.usage_attributes(event.usage)}
        )
        if self.capture_content and event.error is None:
            span.set_attribute(attr.OUTPUT_MESSAGES, attr.output_messages(event.text, self.max_content_chars))
        if event.interrupted:
            self._interrupt(span, event.error or "the model call was cut short", event.at)
            return
        if event.error is not None:
            self._fail(span, ModelCallFailed(event.error), "ModelError", event.at)
        span.end(end_time=_ns(event.at))

    # -- code cells -----------------------------------------------------------------------------
    def _cell_started(self, event: CellStarted) -> None:
        attributes: dict[str, Any] = {
            "rlm.cell.id": event.cell_id,
            "rlm.iteration": event.iteration,
            "rlm.depth": self._depth(event.run_id),
        }
        if self.capture_content:
            attributes["rlm.cell.code"] = self._text(event.code)
        parent = self._parent(f"iteration:{event.run_id}:{event.iteration}", f"run:{event.run_id}")
        self._start(f"cell:{event.cell_id}", event.run_id, attr.SPAN_CELL, parent, attributes, event.at)

    def _cell_finished(self, event: CellFinished) -> None:
        entry = self._open.pop(f"cell:{event.cell_id}", None)
        if entry is None:
            return
        span = entry.span
        span.set_attributes(
            {
                "rlm.cell.duration_s": event.duration,
                "rlm.cell.timed_out": event.timed_out,
                "rlm.cell.restarted": event.restarted,
                "rlm.cell.final": event.final,
                "rlm.cell.stdout_chars": len(event.stdout),
            }
        )
        if event.lost_variables:
            span.set_attribute("rlm.cell.lost_variables", list(event.lost_variables))
        if self.capture_content:
            span.set_attribute("rlm.cell.stdout", self._text(event.stdout))
            if event.value is not None:
                span.set_attribute("rlm.cell.value", self._text(event.value))
        if event.interrupted:
            self._interrupt(span, event.error or "the cell was cut short", event.at)
            return
        if event.error is not None:
            error_type = event.error_type or ("TimeoutError" if event.timed_out else "CellError")
            span.set_attribute("rlm.cell.error_type", error_type)
            details: dict[str, Any] = {attr.ERROR_TYPE: error_type, "rlm.cell.timed_out": event.timed_out}
            if self.capture_content:
                details["rlm.cell.error"] = self._text(event.error)
            span.add_event("rlm.cell.error", details, timestamp=_ns(event.at))
            if self.cell_errors_as_span_errors:
                message = self._text(event.error) if self.capture_content else error_type
                self._fail(span, CellFailed(message), error_type, event.at)
        span.end(end_time=_ns(event.at))

    # -- sub-calls ------------------------------------------------------------------------------
    def _sub_started(self, event: SubCallStarted) -> None:
        if _is_tool_call(event):
            self._tool_started(event)
            return
        attributes: dict[str, Any] = {
            **attr.model_attributes(event.model),
            "rlm.role": "sub",
            "rlm.function": event.function,
            "rlm.call_id": event.call_id,
            "rlm.depth": self._depth(event.run_id),
            "rlm.prompt_chars": event.prompt_chars,
        }
        if event.function == "rlm_query":
            name, kind = attr.SPAN_SUB_CALL, SpanKind.INTERNAL
        else:
            name, kind = attr.chat_span_name(event.model), SpanKind.CLIENT
            attributes[attr.OPERATION] = "chat"
        if self.capture_content:
            prompt = [{"role": "user", "content": event.prompt}]
            attributes[attr.INPUT_MESSAGES] = attr.input_messages(prompt, self.max_content_chars)
        parent = self._parent(f"cell:{event.cell_id}", f"run:{event.run_id}")
        self._start(f"sub:{event.call_id}", event.run_id, name, parent, attributes, event.at, kind)

    def _tool_started(self, event: SubCallStarted) -> None:
        """A user tool called from a cell: an ``execute_tool`` span (the event's `function` names the tool)."""
        attributes: dict[str, Any] = {
            attr.OPERATION: "execute_tool",
            attr.TOOL_NAME: event.function,
            attr.TOOL_TYPE: "function",
            "rlm.role": "tool",
            "rlm.call_id": event.call_id,
            "rlm.depth": self._depth(event.run_id),
            "rlm.prompt_chars": event.prompt_chars,
        }
        if self.capture_content:
            attributes[attr.TOOL_ARGUMENTS] = self._text(event.prompt)
        parent = self._parent(f"cell:{event.cell_id}", f"run:{event.run_id}")
        name = attr.tool_span_name(event.function)
        self._start(f"sub:{event.call_id}", event.run_id, name, parent, attributes, event.at)

    def _sub_finished(self, event: SubCallFinished) -> None:
        entry = self._open.pop(f"sub:{event.call_id}", None)
        if entry is None:
            return
        span = entry.span
        tool = _is_tool_call(event)
        if event.child_run_id is not None:
            span.set_attribute("rlm.child_run_id", event.child_run_id)
        elif not tool and (event.usage is not None or event.cached):  # a model call (`rlm_query` at max_depth too)
            span.set_attributes({attr.OPERATION: "chat", attr.RESPONSE_MODEL: event.model})
        if not tool and event.child_run_id is None:
            span.set_attribute(attr.CACHE_HIT, event.cached)
        span.set_attributes(attr.usage_attributes(event.usage))
        if self.capture_content and event.error is None:
            if tool:
                span.set_attribute(attr.TOOL_RESULT, self._text(event.response))
            else:
                span.set_attribute(attr.OUTPUT_MESSAGES, attr.output_messages(event.response, self.max_content_chars))
        if event.interrupted:
            self._interrupt(span, event.error or "the sub-call was cut short", event.at)
            return
        if event.error is not None:
            self._fail(span, SubCallFailed(event.error), "SubCallFailed", event.at)
        span.end(end_time=_ns(event.at))

    # -- helpers --------------------------------------------------------------------------------
    def _parent(self, *keys: str) -> Context | None:
        """The context of the first open span among `keys`; None (the current context) if none is open."""
        for key in keys:
            entry = self._open.get(key)
            if entry is not None:
                return trace.set_span_in_context(entry.span)
        return None

    def _start(
        self,
        key: str,
        run_id: str,
        name: str,
        parent: Context | None,
        attributes: dict[str, Any],
        at: float,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        stale = self._open.pop(key, None)
        if stale is not None:  # the same step started twice without an end: keep the tree consistent
            self._interrupt(stale.span, "started again before it ended", at)
        span = self._tracer.start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=_ns(at), record_exception=False
        )
        self._open[key] = _Open(span=span, run_id=run_id)

    def _fail(self, span: Span, error: Exception, error_type: str, at: float | None) -> None:
        span.set_attribute(attr.ERROR_TYPE, error_type)
        span.record_exception(error, timestamp=None if at is None else _ns(at))
        span.set_status(Status(StatusCode.ERROR, str(error)))

    def _interrupt(self, span: Span, reason: str, at: float | None) -> None:
        span.set_attribute("rlm.interrupted", True)
        self._fail(span, StepInterrupted(reason), "interrupted", at)
        span.end(end_time=None if at is None else _ns(at))

    def _depth(self, run_id: str) -> int:
        run = self._tree.runs.get(run_id)
        return run.depth if run is not None else 0

    def _text(self, text: str) -> str:
        return attr.truncate(text, self.max_content_chars)


HANDLED_EVENTS: tuple[type[Any], ...] = EVENT_TYPES
"""Every event type the observer turns into spans: all of core's (`__call__` matches them exhaustively)."""


def _is_tool_call(event: SubCallStarted | SubCallFinished) -> bool:
    """True for a user tool's call (tools=[...]): the engine records it with the model ``"tool"``."""
    return event.model == TOOL_MODEL and event.function not in ("llm_query", "rlm_query")


def _version() -> str | None:
    try:
        return importlib.metadata.version("rlm-integrations")
    except importlib.metadata.PackageNotFoundError:
        return None
