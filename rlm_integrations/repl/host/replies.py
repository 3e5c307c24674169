"""The worker's replies, read into results: checked, matched to their request, bounded.

`check_reply` turns one message from a channel into a typed message that answers the
request in flight, or raises `ProtocolViolation`; `cell_result` turns a cell's result
into a `CellResult` (decoding its FINAL value under the size cap); `restart_report` is
the result of a cell whose worker was replaced.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rlm_integrations.repl.protocol import CellResult, FinalAnswer
from rlm_integrations.repl.wire.codec import decode_value
from rlm_integrations.repl.wire.messages import (
    Callback,
    Eof,
    ErrorReply,
    Invalid,
    Ok,
    ProtocolViolation,
    Result,
    Timeout,
    Value,
    parse,
)

__all__ = ["LOST_VARIABLES_MARKER", "cell_result", "check_reply", "lost_variables_note", "restart_report"]

LOST_VARIABLES_MARKER = " Lost variables"


def check_reply(
    raw: dict[str, Any], request_id: int, *, anonymous_error: bool = False
) -> Ok | Value | Result | Callback | ErrorReply | Timeout | Eof:
    """One message from the worker, checked: it must be well formed and answer `request_id`.

    `anonymous_error`: an error without an id answers too (for a load, the sandbox's
    supervisor reports a failed upload that way).

    Raises:
        ProtocolViolation: it is malformed, of a kind the host never accepts here, or
            answers another request.
    """
    message = parse(raw)
    if isinstance(message, Invalid):
        raise ProtocolViolation(message.error)
    if isinstance(message, Eof | Timeout):
        return message
    if isinstance(message, ErrorReply) and message.id is None and anonymous_error:
        return message
    if not isinstance(message, Ok | Value | Result | Callback | ErrorReply):
        raise ProtocolViolation(f"an unexpected {message.op!r} message")
    if message.id != request_id:
        raise ProtocolViolation(f"a {message.op!r} for request {message.id}, while request {request_id} is open")
    return message


def cell_result(message: Result, max_output_chars: int) -> CellResult:
    """What the cell did, with its FINAL value rebuilt.

    Raises:
        ProtocolViolation: output longer than the worker may send, or a malformed value.
    """
    slack = 2 * max_output_chars + 1_000
    if len(message.stdout) > slack or len(message.value or "") > slack:
        raise ProtocolViolation("cell output longer than max_output_chars allows")
    final = message.final
    answer: FinalAnswer | None = None
    if final is not None:
        try:
            value, exact = decode_value(final.encoded())
        except ValueError as error:
            raise ProtocolViolation(str(error)) from None
        answer = FinalAnswer(value=value, exact=exact, variable=final.variable, named=final.named)
    return CellResult(
        stdout=message.stdout,
        value=message.value,
        error=message.error,
        error_type=message.error_type,
        duration=message.duration,
        final=answer,
        output_chars=message.output_chars,
    )


def restart_report(reason: str, names_before: list[str], loaded: Collection[str], *, ran: bool) -> CellResult:
    """The result of a cell whose worker was replaced: why, what was reloaded, which variables are gone.

    `ran` is False when the worker had died before the cell (which then did not run).
    """
    lost = [name for name in names_before if name not in loaded]
    message = f"{reason}. The REPL was restarted; reloaded: {', '.join(loaded) or 'nothing'}."
    if not ran:
        message += " This cell did not run: run it again."
    message += lost_variables_note(lost)
    error_type = "TimeoutError" if reason.startswith("TimeoutError") else "WorkerCrashed"
    return CellResult(error=message, error_type=error_type, restarted=True, lost_variables=lost)


def lost_variables_note(lost: list[str]) -> str:
    """The sentence a restart report ends with, naming the variables that are gone ("" if none)."""
    if not lost:
        return ""
    return f"{LOST_VARIABLES_MARKER} (re-create them if you need them): {', '.join(lost)}."
