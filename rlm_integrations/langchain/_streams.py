"""Helpers for `RLMRunnable`'s streams: an async iterator driven from sync code, and a one-item source."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar, cast

__all__ = ["iterate_in_thread", "one"]

T = TypeVar("T")


async def one(item: T) -> AsyncIterator[T]:
    """An async iterator of `item` alone."""
    yield item


def iterate_in_thread(make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Drive an async iterator on a fresh loop in a helper thread and yield its items here.

    Closing the returned iterator early cancels the async one and waits for the thread.
    """
    items: queue.Queue[tuple[str, Any]] = queue.Queue()
    handles: dict[str, Any] = {}
    context = contextvars.copy_context()

    async def pump() -> None:
        handles["loop"] = asyncio.get_running_loop()
        handles["task"] = asyncio.current_task()
        iterator = make()
        try:
            async for item in iterator:
                items.put(("item", item))
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()

    def target() -> None:
        try:
            with asyncio.Runner() as runner:
                runner.run(pump(), context=context)
        except BaseException as error:
            items.put(("error", error))
        else:
            items.put(("done", None))

    thread = threading.Thread(target=target, name="rlm-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield cast(T, value)
            elif kind == "error":
                raise value
            else:
                return
    finally:
        if thread.is_alive():
            loop, task = handles.get("loop"), handles.get("task")
            if loop is not None and task is not None:
                loop.call_soon_threadsafe(task.cancel)
            thread.join()
