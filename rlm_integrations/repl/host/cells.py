"""The cell loop of `WorkerREPL`: run one cell on the worker, and replace a worker that failed it.

While a cell runs the host answers its callbacks (time spent in them does not count
against the cell's limit), keeps the wall-clock limit (by `kill`, or as a backstop
behind a transport that enforces it itself), and checks every message. A timeout, a
crash or a broken protocol ends in a fresh worker and a `CellResult` that reports the
restart and the variables it cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Literal

from rlm_integrations.errors import REPLClosedError, WorkerCrashedError
from rlm_integrations.repl.host.replies import cell_result, check_reply, restart_report
from rlm_integrations.repl.host.transfer import answer
from rlm_integrations.repl.protocol import CellResult, HostCallback
from rlm_integrations.repl.transport import WorkerTransport
from rlm_integrations.repl.wire.messages import Callback, Eof, ErrorReply, Exec, ProtocolViolation, Result, Timeout

__all__ = ["CellLoop"]


class CellLoop:
    """Mixin of `WorkerREPL`: `_run_cell` and `_recover`, over the state `WorkerREPL` keeps."""

    _channel: WorkerTransport | None
    _closed: bool
    _callbacks: dict[str, HostCallback]
    _loaded: dict[str, Any]
    _variables: list[str]
    _ids: Iterator[int]
    _cells_on_worker: int
    cell_timeout_s: float | None
    max_output_chars: int
    max_callback_bytes: int

    async def _spawn(self, channel: WorkerTransport | None = None) -> WorkerTransport:
        raise NotImplementedError

    async def _run_cell(self, code: str) -> CellResult:
        """Run `code` on the current worker: answer its callbacks, keep its limit, recover from its end."""
        channel = self._channel
        assert channel is not None
        names_before = list(self._variables)
        limit = self.cell_timeout_s
        grace = channel.timeout_grace_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        active = 0.0
        request = Exec(
            id=next(self._ids),
            code=code,
            cpu_limit_s=None if limit is None else 2 * limit + 5,
            wall_limit_s=limit if grace is not None else None,
        )
        try:
            await channel.send(request.wire())
            self._cells_on_worker += 1
            resumed = loop.time()
            while True:
                remaining = None if limit is None else max(limit - active, 0.0) + (grace or 0.0)
                try:
                    async with asyncio.timeout(remaining):
                        raw = await channel.receive()
                except TimeoutError:
                    return await self._recover(names_before, "timeout", duration=loop.time() - started)
                active += loop.time() - resumed
                try:
                    message = check_reply(raw, request.id)
                    if isinstance(message, Callback):
                        if message.wire_bytes > self.max_callback_bytes + 64:
                            raise ProtocolViolation(f"a callback of {message.wire_bytes:,} bytes, over the limit")
                        reply = await answer(self._callbacks.get(message.name), message, self.max_callback_bytes)
                        await channel.send(reply.wire())
                        resumed = loop.time()
                        continue
                    if isinstance(message, Result):
                        result = cell_result(message, self.max_output_chars)
                        self._variables = list(message.variables)
                        return result
                    if isinstance(message, ErrorReply):
                        return CellResult(error=message.error, error_type=message.error_type or "WorkerError")
                    if not isinstance(message, Eof | Timeout):
                        raise ProtocolViolation(f"a {message.op!r} message in reply to 'exec'")
                except ProtocolViolation as violation:
                    return await self._recover(names_before, "violation", duration=loop.time() - started, why=violation)
                kind: Literal["crash", "timeout"] = "crash" if isinstance(message, Eof) else "timeout"
                return await self._recover(names_before, kind, duration=loop.time() - started, hard=False)
        except (BrokenPipeError, ConnectionResetError):
            return await self._recover(names_before, "crash", duration=loop.time() - started, hard=False)
        except BaseException:
            # Cancelled (or the host failed) mid-cell: the worker may still be running it.
            self._channel = None
            channel.kill()
            raise

    async def _recover(
        self,
        names_before: list[str],
        kind: Literal["crash", "timeout", "violation"],
        *,
        duration: float,
        hard: bool = True,
        why: ProtocolViolation | None = None,
    ) -> CellResult:
        """Replace the worker after a timeout (`hard`: the host's own limit ran out), a crash or a broken protocol."""
        old = self._channel
        self._channel = None
        if old is None or self._closed:
            # `close()` ran while the cell did: it already stopped the worker.
            raise REPLClosedError(f"this REPL was closed while the cell ran; create a new {type(self).__name__}")
        if kind == "timeout":
            reason = f"TimeoutError: the cell ran longer than its {self.cell_timeout_s:g} s limit and was stopped"
        elif kind == "violation":
            reason = f"WorkerCrashed: the REPL worker broke the protocol ({why}) and was stopped"
        else:
            await old.settle()
            reason = f"WorkerCrashed: the REPL worker died while running the cell: {old.describe_exit()}"
        if hard:
            old.kill(force=True)
        reused = None if hard else old
        if reused is not None and not await reused.reset():
            reused = None
        if reused is None:
            old.kill()
        try:
            await self._spawn(reused)
        except Exception as error:
            raise WorkerCrashedError(f"{reason}; restarting the worker failed: {error}") from error
        result = restart_report(reason, names_before, self._loaded, ran=True)
        return result.model_copy(update={"duration": duration, "timed_out": kind == "timeout"})
