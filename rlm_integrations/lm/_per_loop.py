"""One resource per running event loop (an HTTP session or client), closed when that loop shuts down.

HTTP clients hold connections bound to the event loop that opened them, so a client
cannot be shared across loops, and one left open when its loop ends leaks sockets (and
`ResourceWarning`s). `PerLoop` keeps one resource per loop, created on first use, and
closes it when the loop shuts down its async generators, which `asyncio.run`,
`asyncio.Runner` (so our sync `complete()`) and pytest-asyncio all do. Within a loop the
resource, and its connection pool, is reused by every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """A resource per event loop, made by `create` and closed by `close` at loop shutdown.

    Attributes:
        entries: the live resources by loop (with the closer parked for each); exposed so
            tests can check that every loop closed its resource.
    """

    def __init__(self, create: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._create = create
        self._close = close
        self.entries: dict[asyncio.AbstractEventLoop, tuple[T, AsyncIterator[None]]] = {}

    async def get(self) -> T:
        """The running loop's resource, created on first use.

        Its closer is an async generator parked at its `yield`: the loop records it when
        it first runs, and `loop.shutdown_asyncgens()` resumes it, which closes the
        resource before the loop closes.
        """
        loop = asyncio.get_running_loop()
        entry = self.entries.get(loop)
        if entry is not None:
            return entry[0]
        resource = self._create()

        async def closer() -> AsyncIterator[None]:
            try:
                yield
            finally:
                if self.entries.get(loop, (None,))[0] is resource:
                    del self.entries[loop]
                await self._close(resource)

        keeper = closer()
        self.entries[loop] = (resource, keeper)
        await anext(keeper)
        return resource

    def forget(self) -> None:
        """Drop the running loop's resource without closing it (it was found closed)."""
        self.entries.pop(asyncio.get_running_loop(), None)
