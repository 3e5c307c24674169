"""The REPL seam: what the engine needs from a REPL, and what a cell returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["REPL", "CellResult", "FinalAnswer", "HostCallback"]

HostCallback = Callable[..., Awaitable[Any] | Any]
"""A host function that code in a cell can call by name (sync or async; JSON-able args and result)."""


class FinalAnswer(BaseModel):
    """The value a cell submitted with `FINAL(value)` or `FINAL_VAR(name)`.

    Attributes:
        value: the submitted value. Plain data (str, numbers, bools, None, and lists,
            tuples, dicts and sets of those) arrives as the same Python value; anything
            else arrives as its `repr` string and `exact` is False.
        exact: whether `value` is the submitted object itself (True) or its repr (False).
        variable: the REPL variable named by `FINAL_VAR`, if that was used.
        named: the value is a dict of named outputs, from `FINAL(answer=..., ...)`.
    """

    model_config = ConfigDict(frozen=True)

    value: Any
    exact: bool = True
    variable: str | None = None
    named: bool = False


class CellResult(BaseModel):
    """What running one cell produced.

    Attributes:
        stdout: what the cell printed, bounded: long output keeps its head and tail
            around a marker that says how many characters were cut.
        value: the repr of the cell's trailing expression (None if there was none, or it
            evaluated to None).
        error: a short traceback naming the cell line, or a description of a timeout or
            crash; None if the cell ran cleanly.
        error_type: the exception's class name (``"NameError"``, ``"TimeoutError"``, ...).
        duration: seconds the cell ran, excluding time spent waiting on host callbacks.
        final: the answer submitted with `FINAL`/`FINAL_VAR`, if the cell submitted one.
        timed_out: the cell hit its wall-clock limit and the worker was killed.
        restarted: the worker was replaced: during this cell (timeout, crash, or a reply
            that broke the protocol), or just before it, because it had died since the
            last cell (then the cell did not run, and `error` says so).
        lost_variables: names that existed before the cell and are gone after a restart.
        output_chars: characters printed in total, before bounding.
    """

    model_config = ConfigDict(frozen=True)

    stdout: str = ""
    value: str | None = None
    error: str | None = None
    error_type: str | None = None
    duration: float = 0.0
    final: FinalAnswer | None = None
    timed_out: bool = False
    restarted: bool = False
    lost_variables: list[str] = Field(default_factory=list)
    output_chars: int = 0

    @property
    def ok(self) -> bool:
        """True if the cell ran without an error."""
        return self.error is None


@runtime_checkable
class REPL(Protocol):
    """A persistent Python namespace that runs cells of LM-written code.

    Lifecycle: the constructor only stores options; `start()` starts the worker and is
    idempotent; `close()` releases everything and is idempotent; after `close()` every
    other method raises `REPLClosedError`. Implementations are async context managers
    (`async with` calls `start()` and `close()`).

    Errors inside a cell never raise on the host: they come back in `CellResult`, and so
    does a worker that died or was replaced (`CellResult.restarted`). Host-side failures
    raise `REPLError` subclasses.
    """

    async def start(self) -> None:
        """Start the worker (idempotent)."""
        ...

    async def load(self, name: str, value: Any) -> None:
        """Bind `value` to `name` in the namespace (kept across restarts)."""
        ...

    def register(self, name: str, function: HostCallback) -> None:
        """Make a host function callable from cells as `name(...)`."""
        ...

    async def execute(self, code: str) -> CellResult:
        """Run one cell and report what it did."""
        ...

    async def get(self, name: str) -> Any:
        """Return a variable's value (plain data exactly, anything else as its repr)."""
        ...

    async def close(self) -> None:
        """Stop the worker and remove its scratch directory (idempotent)."""
        ...

    async def __aenter__(self) -> Any:
        """Start the REPL and return it."""
        ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the REPL."""
        ...
