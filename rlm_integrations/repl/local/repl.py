"""`LocalREPL`: the default REPL, a sandboxed worker process on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import rlm_integrations.repl.wire.schema as ops
from rlm_integrations.errors import IsolationError, WorkerStartError
from rlm_integrations.repl.host.client import Policy, WorkerREPL
from rlm_integrations.repl.local.isolation import Isolation, describe, record_refusal, warn_if_incomplete
from rlm_integrations.repl.local.pool import default_pool
from rlm_integrations.repl.local.process import WorkerProcess, encode
from rlm_integrations.repl.transport import Payload, WorkerTransport
from rlm_integrations.repl.wire.schema import DEFAULT_MAX_CALLBACK_BYTES

__all__ = ["LocalREPL"]


class LocalREPL(WorkerREPL):
    """A persistent, sandboxed Python namespace in a worker process on this machine.

    Cells are compiled with RestrictedPython (the first wall) and run in a separate worker
    process (the second wall): started inside bubblewrap where it works (its own user,
    mount, PID, IPC, UTS and network namespaces, an unprivileged uid, a minimal
    read-only view of the file system), with no environment, a scratch directory,
    no_new_privs, no capabilities, a seccomp filter and hard limits on memory and file
    writes. `isolation` reports which layers are in force; a missing one is logged as a
    warning at start, and `require_isolation=True` refuses to run without all of them.
    A cell that runs past `cell_timeout_s` is stopped by killing the worker from outside;
    the REPL then starts a fresh worker, reloads what was passed to `load`, and reports
    the variables that were lost. See docs/security.md for what each wall does and does
    not stop.

    Args:
        cell_timeout_s: wall-clock limit per cell in seconds, not counting time spent in
            host callbacks; None for no limit.
        memory_limit_mb: address space the worker may use beyond what it holds after
            loading the context (which gets twice its size again as working room);
            None means 2048.
        max_output_chars: bound on each cell's printed output and value repr; longer
            output keeps its head and tail around a marker.
        policy: ``"restricted"`` (RestrictedPython, the default) or ``"unrestricted"``
            (plain Python, OS walls only: for containers that are the boundary, such as Modal).
        pool: take a pre-started worker from the warm pool if one is ready.
        python: interpreter for the worker (default: the running one; disables the pool).
        start_timeout_s: how long to wait for a worker to report ready.
        require_isolation: refuse to run (raise `IsolationError` at start) unless every
            layer of the OS wall is in force; by default a missing layer is only logged.
        max_callback_bytes: bound on the JSON of one host callback's arguments (checked in
            the worker, so a cell passing more gets a ValueError and nothing reaches the
            host) and of its result.

    Example:
        ```python
        async with LocalREPL(cell_timeout_s=10) as repl:
            await repl.load("context", "some long text")
            cell = await repl.execute("len(context)")
            assert cell.value == "14"
        ```
    """

    def __init__(
        self,
        *,
        cell_timeout_s: float | None = 30.0,
        memory_limit_mb: int | None = None,
        max_output_chars: int = 10_000,
        policy: Policy = "restricted",
        pool: bool = True,
        python: str | None = None,
        start_timeout_s: float = 30.0,
        require_isolation: bool = False,
        max_callback_bytes: int = DEFAULT_MAX_CALLBACK_BYTES,
    ) -> None:
        super().__init__(
            cell_timeout_s=cell_timeout_s,
            memory_limit_mb=memory_limit_mb,
            max_output_chars=max_output_chars,
            policy=policy,
            start_timeout_s=start_timeout_s,
            max_callback_bytes=max_callback_bytes,
        )
        self.use_pool = pool and python is None
        self.python = python
        self.require_isolation = require_isolation

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before start or after close)."""
        channel = self._channel
        return channel.worker.pid if isinstance(channel, _LocalTransport) else None

    @property
    def network_isolated(self) -> bool:
        """Whether the worker runs in its own network namespace (no network at all)."""
        channel = self._channel
        return bool(channel is not None and channel.info.get("network_isolated"))

    @property
    def isolation(self) -> Isolation | None:
        """What the OS wall holds for the current worker, layer by layer (None before start).

        See `Isolation`: each flag is read back from the kernel by the worker or set up by
        the launcher, and `missing` says, for each layer that is not in force, why and how
        to fix it.
        """
        channel = self._channel
        return channel.isolation if isinstance(channel, _LocalTransport) else None

    async def _connect(self) -> WorkerTransport:
        worker = default_pool.take() if self.use_pool else None
        if worker is None:
            try:
                worker = WorkerProcess(self.python)
            except OSError as error:
                raise WorkerStartError(f"could not start the REPL worker: {error}") from error
        return _LocalTransport(worker, require_isolation=self.require_isolation, python=self.python)


class _LocalTransport(WorkerTransport):
    """A worker process on this machine: the host itself kills it when a cell overruns."""

    def __init__(self, worker: WorkerProcess, *, require_isolation: bool = False, python: str | None = None) -> None:
        self.worker = worker
        self.require_isolation = require_isolation
        self.python = python
        self.isolation: Isolation | None = None

    @property
    def info(self) -> dict[str, Any]:
        """The worker's ``ready`` message."""
        return self.worker.info

    @property
    def alive(self) -> bool:
        """True while the worker process runs."""
        return self.worker.alive

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for ``ready``; start plainly if bubblewrap refused here, and check the isolation."""
        ready = await asyncio.wait_for(self.worker.mailbox.get(), timeout_s)
        if ready.get("op") != ops.READY and self.worker.launch.sandboxed:
            said = await asyncio.to_thread(self.worker.launch_output)
            if record_refusal(self.worker.launch, said):
                # bubblewrap cannot work here: start plainly (reported in `isolation`, refused if required).
                self.worker.kill()
                self.worker = WorkerProcess(self.python)
                ready = await asyncio.wait_for(self.worker.mailbox.get(), timeout_s)
        if ready.get("op") != ops.READY:
            raise WorkerStartError(f"the REPL worker did not start: {self.worker.describe_exit()}")
        isolation = describe(ready, self.worker.launch)
        self.isolation = isolation
        if not isolation.complete:
            if self.require_isolation:
                raise IsolationError(
                    "the REPL worker's OS isolation is incomplete and require_isolation=True; not in force:\n  "
                    + "\n  ".join(isolation.missing),
                    missing=isolation.missing,
                )
            warn_if_incomplete(isolation)
        return ready

    async def send(self, message: dict[str, Any]) -> None:
        """Write one request to the worker's stdin."""
        # Small requests go out at once; a larger one, or a full pipe, waits in a thread with a
        # deadline, so a worker that stops reading never blocks the event loop.
        data = encode(message)
        if not self.worker.write_now(data):
            await asyncio.to_thread(self.worker.write, data)

    async def receive(self) -> dict[str, Any]:
        """The next message from the worker's reader thread."""
        return await self.worker.mailbox.get()

    @contextlib.asynccontextmanager
    async def staged(self, payload: Payload, kind: str) -> AsyncIterator[str]:
        """Write the value into the worker's staging directory, the one its sandbox shows it."""
        # The worker's own staging directory: the only one its sandbox shows it (read-only, same path).
        handle, path = tempfile.mkstemp(prefix="rlm-load-", dir=self.worker.stage_dir)
        try:
            with os.fdopen(handle, "wb") as file:
                await asyncio.to_thread(payload, file)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def settle(self) -> None:
        """Wait up to a second for the process to exit."""
        await asyncio.to_thread(_wait_briefly, self.worker)

    def describe_exit(self) -> str:
        """Why the process stopped (exit code or signal, and the end of its stderr)."""
        return self.worker.describe_exit()

    def kill(self, *, force: bool = False) -> None:
        """Kill the worker's process group."""
        self.worker.kill()


def _wait_briefly(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 1.0
    while worker.alive and time.monotonic() < deadline:
        time.sleep(0.01)
