"""Run a coroutine to completion from synchronous code, even inside a running event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` and return its result, blocking the caller.

    With no event loop running in this thread, the coroutine runs on a fresh loop
    (Ctrl-C cancels it cleanly, so `finally` blocks and `async with` exits run). Inside a
    running loop (a notebook, an async framework calling sync code) the coroutine runs on
    a new loop in a helper thread, with the caller's context variables, and the caller
    blocks until it finishes.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner() as runner:
            return runner.run(coroutine)

    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            with asyncio.Runner() as runner:
                outcome["value"] = runner.run(coroutine, context=context)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, name="rlm-run-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
