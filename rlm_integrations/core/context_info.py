"""The context as a run records it: type, size, hash and a short preview, never the context itself."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from rlm_integrations.core.events import ContextInfo
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["describe"]


async def describe(context: Any, preview_chars: int) -> ContextInfo | None:
    """Record the context once: type, size, hash and a preview (never the context itself)."""
    if context is None:
        return None
    if isinstance(context, str | bytes):
        digest = await asyncio.to_thread(_sha256_of, context)
        preview = context[:preview_chars] if isinstance(context, str) else repr(context[:preview_chars])
        return ContextInfo(type=type(context).__name__, chars=len(context), sha256=digest, preview=preview)
    if isinstance(context, list | tuple | dict):
        chars = sum(len(item) if isinstance(item, str) else len(repr(item)) for item in _sample_values(context))
        preview = truncate_middle(
            repr(context[:3] if not isinstance(context, dict) else dict(list(context.items())[:3])), preview_chars
        )
        return ContextInfo(type=type(context).__name__, chars=chars, items=len(context), preview=preview)
    text = repr(context)
    return ContextInfo(type=type(context).__name__, chars=len(text), preview=text[:preview_chars])


def _sha256_of(context: str | bytes, chunk: int = 4 * 1024 * 1024) -> str:
    """SHA-256 of the context's UTF-8 bytes, encoded a chunk at a time (no second copy of a huge context)."""
    digest = hashlib.sha256()
    if isinstance(context, bytes):
        digest.update(context)
    else:
        for start in range(0, len(context), chunk):
            digest.update(context[start : start + chunk].encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _sample_values(context: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> list[Any]:
    return list(context.values()) if isinstance(context, dict) else list(context)
