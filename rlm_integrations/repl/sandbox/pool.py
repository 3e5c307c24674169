"""`SandboxPool`: a bound on sandboxes in flight, shared by many REPLs, and reuse of idle ones."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time

from rlm_integrations.errors import ConfigError
from rlm_integrations.repl.sandbox.backends import SandboxSpec
from rlm_integrations.repl.sandbox.channel import SandboxChannel

__all__ = ["SandboxPool", "default_sandbox_pool"]


class SandboxPool:
    """Bounds the sandboxes a process runs at once, and keeps a few idle ones for reuse.

    Every `ModalREPL` that uses a pool takes a slot before it creates a sandbox and gives
    it back when the sandbox is terminated, so at most `max_sandboxes` exist (in use or
    idle); further REPLs wait in `start()`. Child runs started by `rlm_query` inside a
    REPL that holds a sandbox do not wait (they may go past the limit), so a full pool
    cannot deadlock on its own children.

    With `keep_idle > 0`, a closed REPL's sandbox is parked instead of terminated, with a
    fresh worker (new process, new namespace, its files removed) started in it; the next
    REPL with the same options takes it and skips the sandbox start. Only sandboxes
    created by the pool with ``policy="restricted"`` are parked: restricted cells cannot
    write files or start processes, so nothing survives into the next run. Unrestricted
    and attached sandboxes are never reused. A parked sandbox still ends by its idle
    timeout and lifetime; one with less than `min_lifetime_left_s` to live is not reused.

    Works across event loops and threads (`dspy.Evaluate` threads, `asyncio.gather`).

    Args:
        max_sandboxes: most sandboxes alive at once through this pool.
        keep_idle: most idle sandboxes kept for reuse (0: terminate on close).
        min_lifetime_left_s: a parked sandbox with less lifetime left is terminated instead.
    """

    def __init__(self, *, max_sandboxes: int = 32, keep_idle: int = 0, min_lifetime_left_s: float = 120.0) -> None:
        if not isinstance(max_sandboxes, int) or max_sandboxes < 1:
            raise ConfigError(f"max_sandboxes must be a positive int, got {max_sandboxes!r}")
        if not isinstance(keep_idle, int) or not 0 <= keep_idle <= max_sandboxes:
            raise ConfigError(f"keep_idle must be an int between 0 and max_sandboxes, got {keep_idle!r}")
        if min_lifetime_left_s < 0:
            raise ConfigError(f"min_lifetime_left_s must not be negative, got {min_lifetime_left_s!r}")
        self.max_sandboxes = max_sandboxes
        self.keep_idle = keep_idle
        self.min_lifetime_left_s = min_lifetime_left_s
        self.created = 0
        """Sandboxes this pool let REPLs create."""
        self.reused = 0
        """Times a parked sandbox was handed to a new REPL."""
        self.peak_live = 0
        """The most sandboxes alive at once."""
        self._lock = threading.Lock()
        self._live = 0
        self._idle: collections.deque[SandboxChannel] = collections.deque()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def live(self) -> int:
        """Sandboxes alive through this pool now (in use or idle)."""
        with self._lock:
            return self._live

    @property
    def idle(self) -> int:
        """Parked sandboxes now."""
        with self._lock:
            return len(self._idle)

    async def _take(self, spec: SandboxSpec, *, nested: bool) -> SandboxChannel | None:
        """A parked sandbox for `spec`, or None once a slot for a new one is reserved."""
        loop = asyncio.get_running_loop()
        while True:
            evicted: list[SandboxChannel] = []
            future: asyncio.Future[None] | None = None
            with self._lock:
                found = self._pop_idle(spec, evicted)
                if found is None:
                    if self._live < self.max_sandboxes or nested:
                        self._reserve()
                    elif self._idle:
                        evicted.append(self._idle.popleft())  # its slot passes to us
                        self._live -= 1
                        self._reserve()
                    else:
                        future = loop.create_future()
                        self._waiters.append((loop, future))
                else:
                    self.reused += 1
            for channel in evicted:
                channel._pool = None
                channel.kill()
            if future is None:
                return found
            try:
                await future
            finally:
                with self._lock:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove((loop, future))

    def _pop_idle(self, spec: SandboxSpec, evicted: list[SandboxChannel]) -> SandboxChannel | None:
        """(lock held) The first healthy parked sandbox for `spec`; unhealthy ones go to `evicted`."""
        found = None
        for channel in list(self._idle):
            if not channel.supervisor_alive or not self._lifetime_ok(channel):
                self._idle.remove(channel)
                self._live -= 1
                evicted.append(channel)
            elif found is None and channel.spec == spec:
                found = channel
        if found is not None:
            self._idle.remove(found)
        return found

    def _reserve(self) -> None:
        self._live += 1
        self.created += 1
        self.peak_live = max(self.peak_live, self._live)

    def _lifetime_ok(self, channel: SandboxChannel) -> bool:
        left = channel.created + channel.spec.timeout_s - time.monotonic()
        return left >= min(self.min_lifetime_left_s, channel.spec.timeout_s / 2)

    def _worth_keeping(self, channel: SandboxChannel) -> bool:
        with self._lock:
            return self.keep_idle > len(self._idle) and channel.supervisor_alive and self._lifetime_ok(channel)

    def _park(self, channel: SandboxChannel) -> bool:
        with self._lock:
            if len(self._idle) >= self.keep_idle:
                return False
            self._idle.append(channel)
            self._wake()
        return True

    def _free(self) -> None:
        with self._lock:
            self._live = max(0, self._live - 1)
            self._wake()

    def _wake(self) -> None:
        """(lock held) Let every waiter look again."""
        for loop, future in self._waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_if_pending, future)

    async def aclose(self) -> None:
        """Terminate the parked sandboxes (REPLs in use keep theirs)."""
        self.close()

    def close(self) -> None:
        """Terminate the parked sandboxes now (REPLs in use keep theirs)."""
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for channel in idle:
            channel.kill()


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pool_size_from_environment() -> int:
    try:
        return max(1, int(os.environ.get("RLM_MODAL_MAX_SANDBOXES", "32")))
    except ValueError:
        return 32


default_sandbox_pool = SandboxPool(max_sandboxes=_pool_size_from_environment())
"""The pool `ModalREPL` uses unless given one: at most ``RLM_MODAL_MAX_SANDBOXES`` (32) at once, none kept idle."""
