"""`PrestartedREPL`: a REPL whose worker starts while the root model writes its first cell.

The engine starts a run's REPL and loads its inputs before the first model call. Wrapped
in `PrestartedREPL`, `start()` and `load()` return at once and the work goes on in the
background; the first call that needs the worker (`execute`, `get`) waits for it. A cold
worker start (a Python process, 50-400 ms on a busy machine) then overlaps the model's
first turn instead of adding to it, which is what lets many concurrent calls overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from rlm_integrations.repl.protocol import REPL, CellResult, HostCallback

__all__ = ["PrestartedREPL", "prestarted"]


class PrestartedREPL:
    """Wraps a `REPL`; start and loads run in the background until the worker is first needed.

    Errors from the background start surface from the first `execute` or `get` (as the
    wrapped REPL raised them, e.g. `WorkerStartError`). Registrations made meanwhile are
    applied once the worker is up.
    """

    def __init__(self, inner: REPL) -> None:
        self.inner = inner
        self._ready: asyncio.Task[None] | None = None
        self._registrations: list[tuple[str, HostCallback]] = []

    async def start(self) -> None:
        """Begin starting the worker (idempotent); returns without waiting for it."""
        if self._ready is None:
            self._ready = asyncio.create_task(self.inner.start())

    async def load(self, name: str, value: Any) -> None:
        """Queue `value` to be loaded as `name` once the worker is up (in call order)."""
        await self.start()
        self._chain(lambda: self.inner.load(name, value))

    def register(self, name: str, function: HostCallback) -> None:
        """Make `function` callable from cells; applied when the worker is first needed."""
        self._registrations.append((name, function))

    async def execute(self, code: str) -> CellResult:
        """Wait for the worker, then run the cell."""
        await self._wait()
        return await self.inner.execute(code)

    async def get(self, name: str) -> Any:
        """Wait for the worker, then read a variable."""
        await self._wait()
        return await self.inner.get(name)

    async def close(self) -> None:
        """Stop any background start and close the wrapped REPL (idempotent)."""
        task, self._ready = self._ready, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(BaseException):
                await task
        await self.inner.close()

    async def __aenter__(self) -> PrestartedREPL:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _chain(self, step: Callable[[], Awaitable[None]]) -> None:
        previous = self._ready

        async def after_previous() -> None:
            if previous is not None:
                await previous
            await step()

        self._ready = asyncio.create_task(after_previous())

    async def _wait(self) -> None:
        await self.start()
        assert self._ready is not None
        await self._ready
        for name, function in self._registrations:
            self.inner.register(name, function)
        self._registrations.clear()


def prestarted(factory: Callable[[Any], REPL]) -> Callable[[Any], REPL]:
    """A REPL factory whose REPLs start in the background (see `PrestartedREPL`)."""

    def make(config: Any) -> REPL:
        return PrestartedREPL(factory(config))

    return make
