"""`Mailbox`: where a transport's reader thread leaves the worker's messages for the REPL."""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

from rlm_integrations.repl.transport import EOF
from rlm_integrations.repl.wire.messages import invalid

__all__ = ["EOF", "Mailbox"]


class Mailbox:
    """A thread-safe FIFO whose `get` is awaitable from any event loop.

    It holds at most `MAX_QUEUED` messages nobody has asked for yet: past that (a worker
    flooding its channel) further messages are dropped, after one `invalid` message that
    makes the REPL replace the worker. The end of the stream (`EOF`) is always kept.
    """

    MAX_QUEUED = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[str, Any]]] | None = None
        self._flooded = False

    def put(self, item: dict[str, Any]) -> None:
        """Add an item (from any thread)."""
        with self._lock:
            waiter, self._waiter = self._waiter, None
            if waiter is None:
                self._queue(item)
                return
        loop, future = waiter
        try:
            loop.call_soon_threadsafe(self._deliver, future, item)
        except RuntimeError:  # that loop is closed: keep the item for the next reader
            with self._lock:
                self._items.appendleft(item)

    def _queue(self, item: dict[str, Any]) -> None:
        if len(self._items) < self.MAX_QUEUED or item is EOF:
            self._items.append(item)
        elif not self._flooded:
            self._flooded = True
            self._items.append(invalid(f"the worker sent more than {self.MAX_QUEUED} messages nobody asked for"))

    @property
    def flooded(self) -> bool:
        """True once unasked messages were dropped (until the queue is read empty)."""
        return self._flooded

    def _deliver(self, future: asyncio.Future[dict[str, Any]], item: dict[str, Any]) -> None:
        if future.done():  # the reader gave up (timeout or cancellation): keep the item, in order
            with self._lock:
                self._items.appendleft(item)
        else:
            future.set_result(item)

    async def get(self) -> dict[str, Any]:
        """Wait for the next item."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._items:
                item = self._items.popleft()
                if not self._items:
                    self._flooded = False
                return item
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._waiter = (loop, future)
        try:
            return await future
        finally:
            with self._lock:
                if self._waiter is not None and self._waiter[1] is future:
                    self._waiter = None
