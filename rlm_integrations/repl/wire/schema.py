"""The worker protocol's vocabulary: every op name, the size limits, and the worker's checks on requests.

One JSON object per line; ``op`` names the kind. The host's typed models of these
messages are in `messages` (pydantic); this module is the standard-library half that the
worker (and the in-sandbox supervisor) can import, so each op string is defined once.

Requests carry an ``id`` that the worker echoes in its reply (and in the callbacks a cell
makes), so a reply can never be taken for the answer to another request.

Standard library only: the worker imports it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CALLBACK",
    "CALLBACK_RESULT",
    "CONFIGURE",
    "DEFAULT_MAX_CALLBACK_BYTES",
    "DEFINE",
    "DISCARD",
    "EOF",
    "ERROR",
    "EXEC",
    "GET",
    "INVALID",
    "LOAD",
    "MAX_CODE_CHARS",
    "MAX_MESSAGE_BYTES",
    "MAX_VARIABLES",
    "OK",
    "PING",
    "READY",
    "RESTART",
    "RESULT",
    "SHUTDOWN",
    "TIMEOUT",
    "UPLOAD",
    "VALUE",
    "VARIABLES",
    "WORKER_EXIT",
    "check_request",
]

# host -> worker
CONFIGURE = "configure"
DEFINE = "define"
LOAD = "load"
EXEC = "exec"
GET = "get"
VARIABLES = "variables"
CALLBACK_RESULT = "callback_result"
SHUTDOWN = "shutdown"
# worker -> host
READY = "ready"
OK = "ok"
RESULT = "result"
VALUE = "value"
CALLBACK = "callback"
ERROR = "error"
# host -> supervisor (in a sandbox; never forwarded to the worker)
UPLOAD = "upload"
DISCARD = "discard"
RESTART = "restart"
PING = "ping"
# supervisor -> host
TIMEOUT = "timeout"
WORKER_EXIT = "worker_exit"
# made on the host by the reader of a channel, never sent
EOF = "eof"
INVALID = "invalid"

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""Longest line either side accepts; a longer one is a broken protocol (the worker is replaced)."""
MAX_CODE_CHARS = 4 * 1024 * 1024
"""Longest cell the host sends."""
DEFAULT_MAX_CALLBACK_BYTES = 4 * 1024 * 1024
"""Default bound on one host callback's arguments, and on its result, as JSON."""
MAX_VARIABLES = 10_000
"""Most variable names a reply lists."""

_POLICIES = ("restricted", "unrestricted")
_FORMATS = ("str", "bytes", "json")
_MAX_NAMES = 1_000


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _is_int_between(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 1_000 and value.isidentifier()


def _check_configure(message: dict[str, Any]) -> str | None:
    if message.get("policy") not in _POLICIES:
        return "policy must be 'restricted' or 'unrestricted'"
    chars = message.get("max_output_chars")
    if not _is_int_between(chars, 100, MAX_MESSAGE_BYTES // 16):
        return "max_output_chars must be an int between 100 and 2 million"
    memory = message.get("memory_limit_mb")
    if memory is not None and not _is_int_between(memory, 16, 1 << 40):
        return "memory_limit_mb must be None or an int of at least 16"
    callback = message.get("max_callback_bytes")
    if not _is_int_between(callback, 1024, MAX_MESSAGE_BYTES // 2):
        return "max_callback_bytes must be an int between 1024 and half the message limit"
    return None


def _check_fields(message: dict[str, Any]) -> str | None:
    op = message["op"]
    if op == CONFIGURE:
        return _check_configure(message)
    if op == DEFINE:
        names = message.get("names")
        if type(names) is not list or len(names) > _MAX_NAMES or not all(_is_name(n) for n in names):
            return "names must be a list of identifiers"
        return None
    if op == LOAD:
        if not _is_name(message.get("name")) or type(message.get("path")) is not str:
            return "load needs an identifier name and a path"
        if message.get("format") not in _FORMATS:
            return "format must be 'str', 'bytes' or 'json'"
        return None
    if op == EXEC:
        code = message.get("code")
        if type(code) is not str or len(code) > MAX_CODE_CHARS:
            return "code must be a str of at most MAX_CODE_CHARS characters"
        for key in ("cpu_limit_s", "wall_limit_s"):
            limit = message.get(key)
            if limit is not None and not _is_number(limit):
                return f"{key} must be a number or None"
        return None
    if op == GET:
        return None if type(message.get("name")) is str else "get needs a name"
    return None


def check_request(message: Any) -> str | None:
    """What is wrong with a host request (None: nothing). Plain checks, exact types only.

    `callback_result` is checked where a cell waits for it (`Worker._call_host`), since it
    is no request.
    """
    if type(message) is not dict:
        return "a message must be a JSON object"
    op = message.get("op")
    if op not in (CONFIGURE, DEFINE, LOAD, EXEC, GET, VARIABLES, SHUTDOWN):
        return f"unknown or unexpected op {op!r}"
    if op != SHUTDOWN and not _is_int(message.get("id")):
        return f"{op!r} needs an integer id"
    return _check_fields(message)
