"""Engine events into DSPy: status messages and output fields for `dspy.streamify`, interpreter events for callbacks.

Module and LM events need nothing from us (the module, its predictors and the LMs are
DSPy objects, so `with_callbacks` reports them). This observer adds what DSPy cannot see:
each cell's run, reported to callbacks as `on_interpreter_execute_start` / `_end`, and a
`dspy.streaming.StatusMessage` per turn when the program runs under `dspy.streamify`.
When the run submits its outputs, `send_outputs` hands each output field watched by a
`dspy.streaming.StreamListener` to the stream as `StreamResponse` chunks.

A `StatusMessageProvider` may define `rlm_status_message(event) -> str | None` to word
(or silence) these messages; the default wording is `default_status_message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any, assert_never

import dspy
from dspy.streaming.messages import StatusMessage, StatusStreamingCallback, StreamResponse

from rlm_integrations.core.events import (
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

__all__ = ["DSPyBridge", "default_status_message"]

logger = logging.getLogger("rlm_integrations.dspy")

STREAM_CHUNK_CHARS = 1_000
"""Submitted output text is streamed in chunks of at most this many characters."""


def default_status_message(event: Event, max_iterations: int) -> str | None:
    """The status line for a root-run event, or None for events that get no message."""
    match event:
        case IterationStarted():
            return f"RLM turn {event.iteration}/{max_iterations}: writing code..."
        case CellFinished() if event.final:
            return f"RLM turn {event.iteration}: outputs submitted."
        case CellFinished() if event.error is not None:
            return f"RLM turn {event.iteration}: the cell failed ({event.error_type or 'error'})."
        case CellFinished():
            return f"RLM turn {event.iteration}: the cell ran in {event.duration:.2f} s."
        case LMCallStarted() if event.purpose == "final_answer":
            return "RLM: a limit was reached; extracting the outputs from what was found..."
        case RunFinished():
            return f"RLM finished: {event.status} after {event.iterations} turn(s)."
        case (
            RunStarted()
            | IterationFinished()
            | LMCallStarted()
            | LMCallFinished()
            | CellStarted()
            | SubCallStarted()
            | SubCallFinished()
            | CitationsFound()
        ):
            return None
        case _:
            assert_never(event)


class DSPyBridge:
    """An engine observer for one call of the module (built inside the call, where DSPy's settings are live).

    Args:
        module: the `dspy.Module` reported as the callbacks' `instance`.
        callbacks: the DSPy callbacks active for the call (global and the module's own).
        max_iterations: the run's turn limit, for the messages.
        extract: the module's `extract` predictor: the `StreamListener`s bound to it (by
            `dspy.streamify`, for an output field) receive the submitted outputs.
    """

    def __init__(
        self, module: Any, callbacks: Sequence[Any], max_iterations: int, extract: dspy.Predict | None = None
    ) -> None:
        self.module = module
        self.callbacks = [c for c in callbacks if not isinstance(c, StatusStreamingCallback)]
        self.max_iterations = max_iterations
        self.provider = next(
            (c.status_message_provider for c in callbacks if isinstance(c, StatusStreamingCallback)), None
        )
        self.stream = dspy.settings.send_stream
        self.loop = _stream_loop() if self.stream is not None else None
        self.tree = RunTree()
        """The call's run tree, fed every event; the bridge reports only its top-level run."""
        listeners = (dspy.settings.get("stream_listeners") or []) if self.stream is not None else []
        self.listeners = [
            item for item in listeners if extract is not None and getattr(item, "predict", None) is extract
        ]
        self._listener_states = [(item.stream_start, item.stream_end) for item in self.listeners]

    def __call__(self, event: Event) -> None:
        """Handle one engine event (called on the engine's thread, in order)."""
        self.tree(event)
        if event.run_id != self.root_run:
            return
        if self.callbacks:
            match event:
                case CellStarted() | CellFinished():
                    self._callbacks(event)
                case _:
                    pass  # DSPy's callbacks have no hook for the other steps
        if self.stream is not None:
            message = self._status(event)
            if message:
                self._send(StatusMessage(message))

    @property
    def root_run(self) -> str | None:
        """The id of the call's top-level run, once it has started."""
        root = self.tree.root
        return root.run_id if root is not None else None

    def send_outputs(self, outputs: dict[str, Any], *, unless_streamed: bool = False) -> None:
        """Stream the value of each output field a `StreamListener` watches (under `dspy.streamify`).

        Each value goes out as its text, in `StreamResponse` chunks named like the
        listener's predictor and field, the last one marked `is_last_chunk`. A listener
        that has already streamed once and does not allow reuse is skipped, as DSPy does.
        With `unless_streamed` (outputs written by `extract`), a listener that read
        `extract`'s reply chunk by chunk from the LM's own stream during this call is
        skipped too (one that got the whole reply at once, which DSPy yields nothing for, is not).
        """
        for listener, before in zip(self.listeners, self._listener_states, strict=True):
            name = listener.signature_field_name
            if name not in outputs or (listener.stream_end and not listener.allow_reuse and before[1]):
                continue
            if unless_streamed and (listener.stream_start, listener.stream_end) != before and not listener.cache_hit:
                continue  # DSPy streamed `extract`'s reply to it chunk by chunk
            text = _field_text(outputs[name])
            pieces = [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)] or [""]
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                self._send(StreamResponse(listener.predict_name or "extract", name, piece, is_last_chunk=last))
            listener.stream_start = True  # as if it had read the field itself: nothing is left to flush
            listener.stream_end = True

    def _callbacks(self, event: CellStarted | CellFinished) -> None:
        for callback in self.callbacks:
            try:
                if isinstance(event, CellStarted):
                    handler = getattr(callback, "on_interpreter_execute_start", None)
                    if handler is not None:
                        handler(call_id=event.cell_id, instance=self.module, inputs={"code": event.code})
                else:
                    handler = getattr(callback, "on_interpreter_execute_end", None)
                    if handler is not None:
                        outputs = {"stdout": event.stdout, "value": event.value, "error": event.error}
                        handler(call_id=event.cell_id, outputs={**outputs, "final": event.final}, exception=None)
            except Exception as error:
                logger.warning("DSPy callback %r failed on %s: %s", callback, event.kind, error)

    def _status(self, event: Event) -> str | None:
        custom = getattr(self.provider, "rlm_status_message", None)
        if callable(custom):
            text = custom(event)
            return str(text) if text else None
        return default_status_message(event, self.max_iterations)

    def _send(self, message: StatusMessage | StreamResponse) -> None:
        stream, loop = self.stream, self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None:
            return
        if running is loop:
            _deliver(stream, message, loop)
        else:
            with contextlib.suppress(RuntimeError):  # the stream's loop is closed: nobody is listening
                loop.call_soon_threadsafe(_deliver, stream, message, loop)


def _field_text(value: Any) -> str:
    """An output value as the text a listener streams: a str as is, other values as JSON."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(value, default=str, ensure_ascii=False)


def _deliver(stream: Any, message: StatusMessage | StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
    """Put `message` on the stream from the stream's own loop (never blocks the loop)."""
    import anyio

    try:
        stream.send_nowait(message)
    except anyio.WouldBlock:
        task = loop.create_task(_send_later(stream, message))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


async def _send_later(stream: Any, message: StatusMessage | StreamResponse) -> None:
    import anyio

    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
        await stream.send(message)


def _stream_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop `dspy.streamify` reads the stream on, seen from this call's thread."""
    try:
        return asyncio.get_running_loop()  # `acall` under streamify(is_async_program=True)
    except RuntimeError:
        pass
    try:
        import anyio.from_thread

        return anyio.from_thread.run_sync(asyncio.get_running_loop)  # a sync program in asyncify's worker thread
    except Exception:
        return None
