"""LiteLLM itself, imported once, and the HTTP session its calls share on each event loop.

LiteLLM is imported on first use (it takes seconds to import), with
`LITELLM_LOCAL_MODEL_COST_MAP=True` set beforehand so that it reads prices from the copy
it ships instead of fetching them from the internet.

LiteLLM caches one HTTP client per event loop and never closes it when the loop ends,
which leaks sockets (and `ResourceWarning`s) every time `asyncio.run` or our sync
`complete()` finishes. So every `LiteLLMModel` call on a loop shares one
`aiohttp.ClientSession` that we own (passed as LiteLLM's `shared_session`), closed when
the loop shuts down (see `PerLoop`). Connections are pooled for the lifetime of a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING

from rlm_integrations.lm._per_loop import PerLoop

if TYPE_CHECKING:
    import aiohttp

__all__ = ["CONNECTION_LIMIT", "import_litellm", "session_for_running_loop", "sessions"]

logger = logging.getLogger("rlm_integrations.lm")

CONNECTION_LIMIT = 256
"""Simultaneous connections per event loop, across all models."""

_litellm: ModuleType | None = None


def import_litellm() -> ModuleType:
    """Import LiteLLM once, offline and quiet."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Without this LiteLLM prints provider lists and "Give Feedback" banners to stdout.
        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


def _new_session() -> aiohttp.ClientSession:
    import aiohttp

    litellm = import_litellm()
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT),
        cookie_jar=aiohttp.DummyCookieJar(),
        # proxies from the environment only where LiteLLM itself would use them
        trust_env=bool(getattr(litellm, "aiohttp_trust_env", False))
        or os.environ.get("AIOHTTP_TRUST_ENV", "").lower() in {"1", "true", "yes"},
    )


async def _close_session(session: aiohttp.ClientSession) -> None:
    await _drain_litellm_logging(asyncio.get_running_loop())
    await session.close()


async def _drain_litellm_logging(loop: asyncio.AbstractEventLoop) -> None:
    """Run LiteLLM's queued logging callbacks before `loop` closes (best effort).

    LiteLLM queues a logging coroutine per call on a global worker bound to one loop; left
    pending when the loop closes, they are carried to the next loop with a warning.
    """
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER as worker

        if getattr(worker, "_bound_loop", None) is not loop:
            return
        if worker.pending_count:
            await asyncio.wait_for(worker.flush(), timeout=1.0)
        await worker.stop(timeout=1.0)
    except Exception:  # pragma: no cover - depends on LiteLLM internals
        logger.debug("could not drain LiteLLM's logging worker", exc_info=True)


sessions: PerLoop[aiohttp.ClientSession] = PerLoop(_new_session, _close_session)
"""The shared session of each running loop (`sessions.entries` lists the live ones)."""


async def session_for_running_loop() -> aiohttp.ClientSession:
    """The HTTP session shared by every LiteLLM call on the running loop, created on first use."""
    session = await sessions.get()
    if session.closed:  # closed behind our back: start a fresh one
        sessions.forget()
        session = await sessions.get()
    return session
