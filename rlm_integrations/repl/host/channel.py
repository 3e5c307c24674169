"""The host's handle on one live worker: the contract every backend's channel meets.

`LocalREPL` reaches a worker process on this machine (`local._LocalChannel`); `ModalREPL`
a supervisor and worker in a sandbox (`_sandbox_channel.SandboxChannel`). `WorkerREPL`
(`_client`) speaks the protocol through either.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from rlm_integrations.repl.host.transfer import Payload

__all__ = ["Channel"]


class Channel(Protocol):
    """The host's handle on one live worker, behind whatever carries its JSON lines.

    Messages from the worker arrive through `receive`, in order, each a dict with a str
    ``op`` and at most `MAX_MESSAGE_BYTES` long (annotated with ``wire_bytes``); a line
    that is no message arrives as ``{"op": "invalid", ...}``; when the worker is gone
    `receive` returns ``{"op": "eof"}``. A channel whose far side supervises the worker
    may also deliver ``{"op": "timeout"}`` (the far side killed an overrunning cell).
    """

    @property
    def info(self) -> dict[str, Any]:
        """The worker's ``ready`` message."""
        ...

    @property
    def timeout_grace_s(self) -> float | None:
        """Who enforces each cell's wall-clock limit.

        None: the host, by `kill`. A number: the far side (the exec message carries
        ``wall_limit_s``), and the host forces a `kill` only this many seconds later.
        """
        ...

    @property
    def alive(self) -> bool:
        """True while the worker can take requests."""
        ...

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the worker's ``ready``; raises `TimeoutError` or `WorkerStartError`."""
        ...

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message; raises `OSError` (`BrokenPipeError`, ...) if the worker is gone."""
        ...

    async def receive(self) -> dict[str, Any]:
        """The next message from the worker."""
        ...

    def staged(self, payload: Payload, kind: str) -> AbstractAsyncContextManager[str]:
        """Put a value's file form where the worker can read it; yields that path, removes it after."""
        ...

    async def reset(self) -> bool:
        """Start a fresh worker in place of a dead or killed one; False if only a new channel will do."""
        ...

    async def settle(self) -> None:
        """After an unexpected end of messages, wait briefly for the worker to finish exiting."""
        ...

    def describe_exit(self) -> str:
        """Why the worker stopped, in words."""
        ...

    def kill(self, *, force: bool = False) -> None:
        """Stop the worker now (idempotent); `force` when its supervisor stopped answering."""
        ...

    async def release(self, *, reusable: bool) -> None:
        """The REPL is done with this channel; `reusable` when no request is in flight."""
        ...
