"""The worker protocol as the host sees it: typed messages, checked on arrival.

The op names and size limits are defined once, in `schema` (standard library, shared
with the worker); this module adds the host's pydantic models of every message the host
sends or accepts, and `parse`, which turns a message from a channel into one of them or
raises `ProtocolViolation`. Checks are strict (no coercion, no unknown fields, finite
numbers) and every message has already been bounded by its reader (`MAX_MESSAGE_BYTES`
per line, annotated with its length as ``wire_bytes``).

A worker is not trusted to follow the protocol (a cell that escaped its policy could
write anything), so a message that fails these checks, or that answers a request it was
not asked, ends that worker: the REPL kills it, starts a fresh one, and reports the
restart like a crash.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from rlm_integrations.repl.wire.schema import MAX_MESSAGE_BYTES, MAX_VARIABLES

__all__ = [
    "REQUEST_OPS",
    "Callback",
    "CallbackResult",
    "Configure",
    "Define",
    "Eof",
    "ErrorReply",
    "Exec",
    "Final",
    "Get",
    "Invalid",
    "Load",
    "Ok",
    "ProtocolViolation",
    "Ready",
    "Result",
    "Timeout",
    "Value",
    "Variables",
    "WorkerMessage",
    "decode_line",
    "invalid",
    "oversized",
    "parse",
]

REQUEST_OPS = frozenset({"configure", "define", "load", "exec", "get", "variables", "callback_result"})
"""Ops the host sends (their literals below must match `schema`, a test checks it)."""

_SHORT = 1_000


class ProtocolViolation(Exception):
    """A worker sent a message the protocol does not allow (malformed, oversized, unknown or out of order)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- host -> worker ---------------------------------------------------------------------------------


class _Request(_Strict):
    id: int

    def wire(self) -> dict[str, Any]:
        """The message as sent."""
        return self.model_dump()


class Configure(_Request):
    """The first request to a fresh worker, and the only one of its kind."""

    op: Literal["configure"] = "configure"
    policy: Literal["restricted", "unrestricted"]
    max_output_chars: int
    memory_limit_mb: int | None
    max_callback_bytes: int


class Define(_Request):
    """Bind stubs for host callbacks."""

    op: Literal["define"] = "define"
    names: list[str]


class Load(_Request):
    """Bind a value the host staged in a file."""

    op: Literal["load"] = "load"
    name: str
    path: str
    format: Literal["str", "bytes", "json"]


class Exec(_Request):
    """Run one cell."""

    op: Literal["exec"] = "exec"
    code: str
    cpu_limit_s: float | None = None
    wall_limit_s: float | None = None

    def wire(self) -> dict[str, Any]:
        """The message as sent (``wall_limit_s`` only when a supervisor enforces it)."""
        return self.model_dump(exclude_none=True) | {"cpu_limit_s": self.cpu_limit_s}


class Get(_Request):
    """Read one variable's value."""

    op: Literal["get"] = "get"
    name: str


class Variables(_Request):
    """List the namespace's variables."""

    op: Literal["variables"] = "variables"


class CallbackResult(_Strict):
    """The host's answer to a cell's callback."""

    op: Literal["callback_result"] = "callback_result"
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None

    def wire(self) -> dict[str, Any]:
        """The message as sent."""
        if self.ok:
            return {"op": self.op, "ok": True, "value": self.value}
        return {"op": self.op, "ok": False, "error": self.error, "error_type": self.error_type}


# -- worker (or supervisor, or reader) -> host --------------------------------------------------


class _Incoming(_Strict):
    wire_bytes: int = Field(default=0, ge=0)
    """Length of the line the message came on (set by the channel's reader, never by the worker)."""


class Ready(_Incoming):
    """A fresh worker is up (supervisors add their own fields)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    op: Literal["ready"]
    pid: int


class Ok(_Incoming):
    """A request succeeded (load and variables list the namespace)."""

    op: Literal["ok"]
    id: int
    variables: list[Annotated[str, Field(max_length=_SHORT)]] | None = Field(default=None, max_length=MAX_VARIABLES)


class EncodedValue(_Strict):
    """A value as `codec.encode_value` wrote it."""

    exact: bool
    json_text: str | None = Field(default=None, alias="json")
    repr: str | None = None

    def encoded(self) -> dict[str, Any]:
        """Back to `codec.decode_value`'s input."""
        return {"exact": self.exact, "json": self.json_text, "repr": self.repr}


class Final(EncodedValue):
    """A value submitted with FINAL/FINAL_VAR."""

    variable: str | None = Field(default=None, max_length=_SHORT)
    named: bool = False


class Value(_Incoming):
    """The answer to `get`."""

    op: Literal["value"]
    id: int
    value: EncodedValue


class Result(_Incoming):
    """What a cell did."""

    op: Literal["result"]
    id: int
    stdout: str
    output_chars: int = Field(ge=0)
    value: str | None
    error: str | None
    error_type: str | None = Field(max_length=_SHORT)
    duration: float = Field(ge=0, allow_inf_nan=False)
    final: Final | None
    variables: list[Annotated[str, Field(max_length=_SHORT)]] = Field(max_length=MAX_VARIABLES)


class Callback(_Incoming):
    """A cell calls a host function and waits for its `CallbackResult`."""

    op: Literal["callback"]
    id: int
    name: str = Field(max_length=_SHORT)
    args: list[Any]
    kwargs: dict[str, Any]


class ErrorReply(_Incoming):
    """A request failed in the worker (or, for a load, in the sandbox's supervisor)."""

    op: Literal["error"]
    id: int | None = None
    error: str
    error_type: str | None = Field(default=None, max_length=_SHORT)


class Timeout(_Incoming):
    """The supervisor killed a cell that ran past its limit."""

    op: Literal["timeout"]
    limit_s: float | None = None


class Eof(_Incoming):
    """The worker is gone (its stream ended, or the supervisor saw it exit)."""

    op: Literal["eof"]
    reason: dict[str, Any] | None = None


class Invalid(_Incoming):
    """The channel's reader got a line that is not a protocol message."""

    op: Literal["invalid"]
    error: str


WorkerMessage = Annotated[
    Ready | Ok | Value | Result | Callback | ErrorReply | Timeout | Eof | Invalid, Field(discriminator="op")
]
_MESSAGES: TypeAdapter[Ready | Ok | Value | Result | Callback | ErrorReply | Timeout | Eof | Invalid] = TypeAdapter(
    WorkerMessage
)


def parse(message: dict[str, Any]) -> Ready | Ok | Value | Result | Callback | ErrorReply | Timeout | Eof | Invalid:
    """Check one message from a channel.

    Raises:
        ProtocolViolation: it is not a well-formed message of any kind the host accepts.
    """
    try:
        return _MESSAGES.validate_python(message)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'message'}: {item['msg']}" for item in error.errors()[:3]
        )
        op = message.get("op") if isinstance(message, dict) else None
        raise ProtocolViolation(f"a malformed {op!r} message ({problems})") from None


def invalid(error: str) -> dict[str, Any]:
    """What a channel's reader delivers in place of a line that is no protocol message."""
    return {"op": "invalid", "error": error}


def decode_line(line: bytes) -> dict[str, Any]:
    """One line from a worker (already bounded by the reader) as a message dict, or an `invalid` one.

    Never raises: a channel's reader thread must survive whatever the worker writes.
    """
    try:
        message = json.loads(line)
    except (ValueError, RecursionError, MemoryError):  # UnicodeDecodeError is a ValueError
        return invalid("a line that is not JSON")
    if type(message) is not dict or type(message.get("op")) is not str:
        return invalid("a line that is not a message (a JSON object with a str 'op')")
    message["wire_bytes"] = len(line)
    return message


def oversized() -> dict[str, Any]:
    """What a reader delivers for a line over `MAX_MESSAGE_BYTES` (it skips the line)."""
    return invalid(f"a message longer than {MAX_MESSAGE_BYTES:,} bytes")
