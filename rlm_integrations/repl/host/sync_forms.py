"""Blocking forms of a REPL's async methods, shared by every REPL class that offers them."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol, Self

from rlm_integrations._sync import run_sync
from rlm_integrations.repl.protocol import CellResult

__all__ = ["SyncForms"]


class _AsyncREPL(Protocol):
    async def start(self) -> None: ...
    async def load(self, name: str, value: Any) -> None: ...
    async def execute(self, code: str) -> CellResult: ...
    async def get(self, name: str) -> Any: ...
    async def close(self) -> None: ...


class SyncForms:
    """Mixin: `start_sync`, `load_sync`, `execute_sync`, `get_sync` and `close_sync`, and both context managers.

    Each runs its async twin to completion (also inside a running event loop, see `run_sync`).
    ``async with repl`` starts and closes it; ``with repl`` does the same with the blocking forms.
    """

    async def __aenter__(self) -> Self:
        await self.start()  # type: ignore[attr-defined]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        self.start_sync()  # type: ignore[misc]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_sync()  # type: ignore[misc]

    def start_sync(self: _AsyncREPL) -> None:
        """Blocking `start`."""
        run_sync(self.start())

    def load_sync(self: _AsyncREPL, name: str, value: Any) -> None:
        """Blocking `load`."""
        run_sync(self.load(name, value))

    def execute_sync(self: _AsyncREPL, code: str) -> CellResult:
        """Blocking `execute` (also works inside a running event loop)."""
        return run_sync(self.execute(code))

    def get_sync(self: _AsyncREPL, name: str) -> Any:
        """Blocking `get`."""
        return run_sync(self.get(name))

    def close_sync(self: _AsyncREPL) -> None:
        """Blocking `close`."""
        run_sync(self.close())
