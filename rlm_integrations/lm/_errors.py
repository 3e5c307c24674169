"""Provider failures: sort them (retry or not), read `Retry-After`, and turn them into our typed errors.

Shared by every adapter built on `ProviderModel`. An adapter's own `classify_error` sorts
its SDK's exception types and falls back to `classify`, which reads what most HTTP
clients expose: a `status_code`, a `response` with headers, the exception chain.
"""

from __future__ import annotations

import email.utils
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from rlm_integrations.errors import ContextWindowExceededError, ModelError
from rlm_integrations.lm.protocol import Message
from rlm_integrations.lm.tokens import estimate_messages_tokens

__all__ = [
    "ErrorKind",
    "MalformedReplyError",
    "causes",
    "classify",
    "describe",
    "error_text",
    "retry_after_s",
    "status_of",
    "translate",
]

ErrorKind = Literal["context_window", "malformed", "timeout", "transient", "fatal"]
"""What to do with a failed attempt: `timeout` and `transient` are retried, the rest are not.

- `context_window`: the prompt is larger than the model's window (`ContextWindowExceededError`).
- `malformed`: the provider answered with something that is not a chat completion.
- `timeout`: the attempt ran past `timeout_s`.
- `transient`: a rate limit (429), a server error (5xx, 408), a dropped connection.
- `fatal`: a caller error (any other 4xx: a bad key, an unknown model, a bad parameter).
"""

RETRIED: frozenset[ErrorKind] = frozenset({"timeout", "transient"})

_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window")


class MalformedReplyError(ValueError):
    """A provider reply that is not a usable chat completion (raised by adapters, never retried)."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the exceptions it was raised from, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def status_of(error: BaseException) -> int | None:
    """The HTTP status an exception carries (`status_code`, or its `response.status_code`), if any."""
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def error_text(error: BaseException) -> str:
    """The exception's message, plus its HTTP response body when the message leaves it out (httpx's)."""
    text = str(error)
    body = getattr(getattr(error, "response", None), "text", None)
    if isinstance(body, str) and body.strip() and body.strip()[:200] not in text:
        text = f"{text} {body.strip()[:2000]}"
    return text


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, connection failures), including httpx's own when httpx is loaded."""
    timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
    connections: tuple[type[BaseException], ...] = (ConnectionError,)
    httpx = sys.modules.get("httpx")
    if httpx is not None:
        timeouts += (httpx.TimeoutException,)
        connections += (httpx.TransportError,)
    return timeouts, connections


def classify(error: BaseException) -> ErrorKind:
    """Sort any exception by what it exposes: its type, HTTP status, `code` and chain.

    Understood without an adapter's help: `TimeoutError`, `ConnectionError`, httpx's
    timeouts and transport errors, `json.JSONDecodeError`, `MalformedReplyError`, and any
    exception with a `status_code` (or a `response` with one, as `httpx.HTTPStatusError`).
    """
    chain = list(causes(error))
    if any(isinstance(cause, MalformedReplyError | json.JSONDecodeError) for cause in chain):
        return "malformed"
    timeouts, connections = _transport_errors()
    if any(isinstance(cause, timeouts) for cause in chain):
        return "timeout"
    status = status_of(error)
    if status is not None:
        if status >= 500 or status in (408, 429):
            return "transient"
        text = f"{getattr(error, 'code', '') or ''} {error_text(error)}".lower()
        if status in (400, 413) and any(marker in text for marker in _CONTEXT_MARKERS):
            return "context_window"
        return "fatal"
    if any(isinstance(cause, connections) for cause in chain):
        return "transient"
    return "fatal"


def _headers_of(error: BaseException) -> Mapping[str, str] | None:
    headers = getattr(error, "litellm_response_headers", None)
    if headers is None:
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else None


def retry_after_s(error: BaseException) -> float | None:
    """The wait a `Retry-After` (or OpenAI's `retry-after-ms`) header asks for, in seconds."""
    headers = _headers_of(error)
    if not headers:
        return None
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe(error: BaseException | None) -> str:
    """`Type (HTTP status): message`, one line, at most ~500 characters of message."""
    if error is None:
        return "unknown error"
    status = status_of(error)
    text = error_text(error).strip().replace("\n", " ")
    if len(text) > 500:
        text = text[:500] + "..."
    return (
        f"{type(error).__name__} (HTTP {status}): {text}"
        if isinstance(status, int)
        else f"{type(error).__name__}: {text}"
    )


def _parse_int(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else None


def translate(
    error: BaseException,
    kind: ErrorKind,
    *,
    model: str,
    messages: Sequence[Message],
    context_window: int | None,
    timeout_s: float,
    attempts: int,
    elapsed_s: float,
) -> ModelError:
    """Our typed error for a failure of kind `kind`, naming the model, the cause and the fix."""
    if isinstance(error, ModelError):
        return error
    if kind == "context_window":
        text = error_text(error)
        prompt_tokens = _parse_int(r"resulted in (\d+) tokens", text) or estimate_messages_tokens(messages)
        window = _parse_int(r"maximum context length is (\d+)", text) or context_window or 0
        return ContextWindowExceededError(
            f"{model}: the prompt (~{prompt_tokens} tokens) exceeds the model's context window"
            f"{f' of {window} tokens' if window else ''}: {describe(error)}",
            model=model,
            prompt_tokens=prompt_tokens,
            max_tokens=window,
        )
    if kind == "malformed":
        reason = str(error) if isinstance(error, MalformedReplyError) else describe(error)
        return ModelError(f"{model} returned a malformed response: {reason}", model=model)
    if kind in RETRIED:
        reason = f"timed out after {timeout_s:g}s (timeout_s)" if kind == "timeout" else describe(error)
        return ModelError(
            f"{model} failed after {attempts} attempt{'s' if attempts != 1 else ''} in {elapsed_s:.1f}s: {reason}",
            model=model,
        )
    status = status_of(error)
    if status is None:
        return ModelError(f"{model} call failed: {describe(error)}", model=model)
    hint = ""
    if status in (401, 403):
        hint = " (check the API key: pass api_key=... or set the provider's environment variable)"
    return ModelError(f"{model} rejected the request{hint}: {describe(error)}", model=model)
