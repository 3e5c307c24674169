"""`ModalREPL`: the same worker and protocol as `LocalREPL`, inside a Modal Sandbox.

The host execs a small supervisor in the sandbox (`worker/supervisor.py`), which runs our
worker program and relays its JSON lines over the sandbox process's own stdin/stdout.
`llm_query`, `rlm_query` and tools are answered on the host, so no credential enters
the sandbox. Importing this module does not import `modal`; the first `start()` does.

The pieces: `backends.py` (the narrow interface over Modal, and the stand-in),
`worker/supervisor.py` (runs in the sandbox), `channel.py` (the host's end of one
supervisor), `pool.py` (`SandboxPool`), `host/client.py` (the protocol, shared with
`LocalREPL`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from rlm_integrations.errors import (
    ConfigError,
    MissingAPIKeyError,
    MissingExtraError,
    RLMError,
    WorkerStartError,
)
from rlm_integrations.repl.host.client import Policy, WorkerREPL, invoke
from rlm_integrations.repl.protocol import HostCallback
from rlm_integrations.repl.sandbox.backends import ModalBackend, Sandbox, SandboxBackend, SandboxSpec
from rlm_integrations.repl.sandbox.channel import (
    HOLDING,
    SandboxChannel,
    holding_a_sandbox,
    run_in_thread,
    terminate_in_background,
    terminate_quietly,
)
from rlm_integrations.repl.sandbox.pool import SandboxPool, default_sandbox_pool
from rlm_integrations.repl.sandbox.standin import StandInBackend
from rlm_integrations.repl.transport import WorkerTransport
from rlm_integrations.repl.wire.schema import DEFAULT_MAX_CALLBACK_BYTES

__all__ = ["ModalREPL", "SandboxPool", "StandInBackend", "check_credentials", "default_sandbox_pool"]

_SUPERVISOR_BOOTSTRAP = (
    "import sys; sys.path.insert(0, {root!r}); from rlm_integrations.repl.worker.supervisor import main; main()"
)
_APP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PYTHON_VERSION = re.compile(r"^3\.(\d+)$")


class ModalREPL(WorkerREPL):
    """A persistent Python namespace in our worker, running inside a Modal Sandbox.

    The sandbox is the boundary: a gVisor container with the network blocked, CPU and
    memory capped, a lifetime and an idle timeout. Inside it a supervisor runs the same
    worker program as `LocalREPL` and enforces each cell's wall-clock limit by killing the
    worker; if the supervisor stops answering, the host terminates the whole sandbox. On
    a timeout or a crash a fresh worker starts, `load`ed values are uploaded again and
    the lost variables are reported, as with `LocalREPL`. The sandbox is terminated on
    `close()`, on a host-side error and on cancellation (or parked for reuse, see
    `SandboxPool`).

    Args:
        cell_timeout_s: wall-clock limit per cell in seconds, not counting time spent in
            host callbacks; None for no limit.
        max_output_chars: bound on each cell's printed output and value repr.
        memory_limit_mb: the worker's address-space allowance beyond the loaded context
            (None means 2048), inside the sandbox's own `memory_mb` cap.
        policy: ``"restricted"`` (RestrictedPython, as locally; the default) or
            ``"unrestricted"`` (plain Python: the container is the boundary; needed to
            import `packages`). Only restricted sandboxes are ever reused across runs.
        app_name: the Modal App the sandboxes belong to (looked up, created if missing).
        image: a `modal.Image` to build on (default: Debian slim with `python_version`);
            the pinned worker and RestrictedPython are added on top.
        python_version: the sandbox's Python, ``"3.11"`` or newer (default: the host's).
        packages: extra pip requirements to install in the image (unrestricted only).
        cpu: CPU cores reserved and allowed (request = limit).
        memory_mb: memory reserved and allowed, in MiB (request = limit).
        timeout_s: the sandbox's lifetime in seconds (Modal's `timeout`, at most 24 h).
        idle_timeout_s: end the sandbox after this long without a message from the host
            (the host pings while it holds one); None for no idle limit.
        region: a Modal region or list of regions to run in.
        environment_name: the Modal environment (default: the profile's).
        sandbox_id: attach to this running sandbox instead of creating one; it must run
            an image made by this version (see `ModalREPL.image`). It is not terminated on
            close, only on a hung supervisor; a replacement, if one is needed, is created
            from the options above.
        pool: the `SandboxPool` that bounds sandboxes in flight and keeps idle ones
            (default: `default_sandbox_pool`).
        backend: where sandboxes come from: Modal (default) or a `StandInBackend`.
        start_timeout_s: how long to wait for the worker to report ready once the
            sandbox exists (creating it, and building the image on a first run, is not
            counted).
        timeout_grace_s: how long past a cell's limit the host waits for the supervisor
            before terminating the sandbox.
        max_callback_bytes: bound on the JSON of one host callback's arguments and of its
            result (see `LocalREPL`).

    Raises:
        ConfigError: an option is out of range (at construction, before any network call).
        MissingExtraError: `modal` is not installed (at construction).
        MissingAPIKeyError: no Modal credentials (at `start`, before any network call).

    Example:
        ```python
        async with ModalREPL(cell_timeout_s=30, cpu=1.0, memory_mb=2048) as repl:
            await repl.load("context", "some long text")
            cell = await repl.execute("len(context)")
        ```
    """

    def __init__(
        self,
        *,
        cell_timeout_s: float | None = 30.0,
        max_output_chars: int = 10_000,
        memory_limit_mb: int | None = None,
        policy: Policy = "restricted",
        app_name: str = "rlm-integrations",
        image: Any = None,
        python_version: str | None = None,
        packages: Sequence[str] = (),
        cpu: float = 1.0,
        memory_mb: int = 2048,
        timeout_s: float = 3600,
        idle_timeout_s: float | None = 300,
        region: str | Sequence[str] | None = None,
        environment_name: str | None = None,
        sandbox_id: str | None = None,
        pool: SandboxPool | None = None,
        backend: SandboxBackend | None = None,
        start_timeout_s: float = 120.0,
        timeout_grace_s: float = 10.0,
        max_callback_bytes: int = DEFAULT_MAX_CALLBACK_BYTES,
    ) -> None:
        self._box: list[WorkerTransport | None] = [None]
        super().__init__(
            cell_timeout_s=cell_timeout_s,
            memory_limit_mb=memory_limit_mb,
            max_output_chars=max_output_chars,
            policy=policy,
            start_timeout_s=start_timeout_s,
            max_callback_bytes=max_callback_bytes,
        )
        self.spec = _build_spec(
            app_name=app_name,
            image=image,
            python_version=python_version,
            packages=packages,
            policy=policy,
            cpu=cpu,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            idle_timeout_s=idle_timeout_s,
            region=region,
            environment_name=environment_name,
        )
        if cell_timeout_s is not None and cell_timeout_s >= self.spec.timeout_s:
            raise ConfigError(f"cell_timeout_s ({cell_timeout_s:g}) must be shorter than timeout_s ({timeout_s:g})")
        if timeout_grace_s <= 0:
            raise ConfigError(f"timeout_grace_s must be positive, got {timeout_grace_s!r}")
        if start_timeout_s <= 0:
            raise ConfigError(f"start_timeout_s must be positive, got {start_timeout_s!r}")
        if sandbox_id is not None and (not isinstance(sandbox_id, str) or not sandbox_id.strip()):
            raise ConfigError(f"sandbox_id must be a sandbox id such as 'sb-...', got {sandbox_id!r}")
        if backend is None and importlib.util.find_spec("modal") is None:
            raise MissingExtraError("modal", "ModalREPL")
        self.sandbox_id_to_attach = sandbox_id
        self.pool = pool if pool is not None else default_sandbox_pool
        self.backend: SandboxBackend = backend if backend is not None else _default_backend()
        self.timeout_grace_s = timeout_grace_s
        # A REPL dropped without close() still ends its sandbox (the channel lives in a box
        # so the finalizer need not hold the REPL).
        weakref.finalize(self, _kill_boxed, self._box)

    @property
    def _channel(self) -> WorkerTransport | None:
        return self._box[0]

    @_channel.setter
    def _channel(self, channel: WorkerTransport | None) -> None:
        self._box[0] = channel

    @property
    def sandbox_id(self) -> str | None:
        """The id of the sandbox in use (None before start or after close)."""
        channel = self._channel
        return channel.sandbox.id if isinstance(channel, SandboxChannel) else None

    @property
    def info(self) -> dict[str, Any]:
        """The worker's ready message (pid, generation, worker version, ...)."""
        channel = self._channel
        return dict(channel.info) if channel is not None else {}

    def image(self) -> Any:
        """The `modal.Image` this REPL's sandboxes run (for creating sandboxes to attach to)."""
        backend = self.backend
        if not isinstance(backend, ModalBackend):
            raise ConfigError("image() needs the Modal backend")
        return backend.image(self.spec)

    async def _connect(self) -> WorkerTransport:
        if isinstance(self.backend, ModalBackend):
            check_credentials()
        if self.sandbox_id_to_attach is not None:
            sandbox_id, self.sandbox_id_to_attach = self.sandbox_id_to_attach, None
            try:
                sandbox = await asyncio.to_thread(self.backend.attach, sandbox_id)
            except Exception as error:
                raise WorkerStartError(f"could not attach to sandbox {sandbox_id!r}: {error}") from error
            return await self._open(sandbox, owned=False)
        parked = await self.pool._take(self.spec, nested=holding_a_sandbox())
        if parked is not None:
            parked._hold()
            return parked
        try:
            sandbox = await run_in_thread(lambda: self.backend.create(self.spec), cleanup=terminate_quietly)
        except BaseException as error:
            self.pool._free()
            if isinstance(error, Exception) and not isinstance(error, RLMError):
                raise WorkerStartError(f"could not create a {self.backend.name} sandbox: {error}") from error
            raise
        return await self._open(sandbox, owned=True)

    async def _open(self, sandbox: Sandbox, *, owned: bool) -> SandboxChannel:
        settings = json.dumps({"idle_timeout_s": self.spec.idle_timeout_s})
        command = (sandbox.python, "-I", "-B", "-c", _SUPERVISOR_BOOTSTRAP.format(root=sandbox.worker_root), settings)
        try:
            process = await asyncio.to_thread(sandbox.exec, *command)
        except BaseException as error:
            if owned:
                terminate_in_background(sandbox)
                self.pool._free()
            if isinstance(error, Exception):
                raise WorkerStartError(f"could not start the supervisor in sandbox {sandbox.id}: {error}") from error
            raise
        channel = SandboxChannel(
            sandbox,
            process,
            owned=owned,
            pool=self.pool if owned else None,
            spec=self.spec,
            reusable=self.policy == "restricted",
            grace_s=self.timeout_grace_s,
            ping_every_s=_ping_interval(self.spec.idle_timeout_s),
        )
        channel._hold()
        return channel

    def register(self, name: str, function: HostCallback) -> None:
        """Make `function` callable from cells as `name(...)` (see `LocalREPL.register`).

        While it runs, REPLs it starts (child runs of `rlm_query`) count as nested: they
        never wait for a slot in the pool, so a full pool cannot deadlock on them.
        """
        box = self._box

        async def nested(*args: Any, **kwargs: Any) -> Any:
            token = HOLDING.set(box[0] if isinstance(box[0], SandboxChannel) else None)
            try:
                return await invoke(function, list(args), kwargs)
            finally:
                HOLDING.reset(token)

        if callable(function):
            super().register(name, nested)
        else:
            super().register(name, function)  # let the base class refuse it


def _kill_boxed(box: list[WorkerTransport | None]) -> None:
    channel, box[0] = box[0], None
    if channel is not None:
        channel.kill()


def _ping_interval(idle_timeout_s: int | None) -> float | None:
    return None if idle_timeout_s is None else max(1.0, min(60.0, idle_timeout_s / 4))


def _build_spec(
    *,
    app_name: str,
    image: Any,
    python_version: str | None,
    packages: Sequence[str],
    policy: Policy,
    cpu: float,
    memory_mb: int,
    timeout_s: float,
    idle_timeout_s: float | None,
    region: str | Sequence[str] | None,
    environment_name: str | None,
) -> SandboxSpec:
    """Check the sandbox options (no network, no `modal` import) and freeze them."""
    if not isinstance(app_name, str) or not _APP_NAME.match(app_name):
        raise ConfigError(f"app_name must be 1-64 letters, digits, '.', '-' or '_', got {app_name!r}")
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    match = _PYTHON_VERSION.match(version) if isinstance(version, str) else None
    if match is None or int(match.group(1)) < 11:
        raise ConfigError(f"python_version must be '3.11' or newer, like '3.12', got {python_version!r}")
    if isinstance(packages, str):
        raise ConfigError("packages must be a list of requirements, not one string")
    packages = tuple(packages)
    if not all(isinstance(p, str) and p.strip() for p in packages):
        raise ConfigError(f"packages must be non-empty requirement strings, got {list(packages)!r}")
    if packages and policy != "unrestricted":
        raise ConfigError(
            "packages can only be imported with policy='unrestricted' (RestrictedPython allows a fixed list "
            "of modules); pass policy='unrestricted' to rely on the container as the boundary"
        )
    if not isinstance(cpu, int | float) or not 0.125 <= cpu <= 64:
        raise ConfigError(f"cpu must be between 0.125 and 64 cores, got {cpu!r}")
    if not isinstance(memory_mb, int) or not 128 <= memory_mb <= 256 * 1024:
        raise ConfigError(f"memory_mb must be an int between 128 and 262144, got {memory_mb!r}")
    if not isinstance(timeout_s, int | float) or not 10 <= timeout_s <= 24 * 3600:
        raise ConfigError(f"timeout_s (the sandbox's lifetime) must be between 10 s and 24 h, got {timeout_s!r}")
    if idle_timeout_s is not None and (
        not isinstance(idle_timeout_s, int | float) or not 10 <= idle_timeout_s <= timeout_s
    ):
        raise ConfigError(f"idle_timeout_s must be None or between 10 s and timeout_s, got {idle_timeout_s!r}")
    regions: str | tuple[str, ...] | None
    if region is None or isinstance(region, str):
        regions = region
        if isinstance(region, str) and not region.strip():
            raise ConfigError("region must be a non-empty string, a list of them, or None")
    else:
        regions = tuple(region)
        if not regions or not all(isinstance(r, str) and r.strip() for r in regions):
            raise ConfigError(f"region must be a non-empty string, a list of them, or None, got {region!r}")
    return SandboxSpec(
        app_name=app_name,
        python_version=version,
        packages=packages,
        cpu=float(cpu),
        memory_mb=memory_mb,
        timeout_s=int(timeout_s),
        idle_timeout_s=None if idle_timeout_s is None else int(idle_timeout_s),
        region=regions,
        environment_name=environment_name,
        image=image,
    )


def check_credentials() -> None:
    """Raise `MissingAPIKeyError` unless Modal can authenticate; makes no network call."""
    try:
        import modal.config
    except ImportError as error:
        raise MissingExtraError("modal", "ModalREPL") from error
    config = modal.config.config
    if not modal.is_local():
        return  # inside a Modal container: the container's identity is used
    has_token = bool(_setting(config, "token_id")) and bool(_setting(config, "token_secret"))
    has_oauth = bool(_setting(config, "oauth_refresh_token"))
    if not (has_token or has_oauth):
        raise MissingAPIKeyError(
            "ModalREPL needs Modal credentials, and none were found. Run `modal token set --token-id ... "
            "--token-secret ...` (or `modal token new`), or set the MODAL_TOKEN_ID and MODAL_TOKEN_SECRET "
            "environment variables.",
            model="modal",
            env_vars=["MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"],
        )


def _setting(config: Any, key: str) -> Any:
    try:
        return config.get(key)
    except KeyError:  # a setting this Modal version does not have
        return None


_backend_lock = threading.Lock()
_modal_backend: ModalBackend | None = None


def _default_backend() -> ModalBackend:
    global _modal_backend
    with _backend_lock:
        if _modal_backend is None:
            _modal_backend = ModalBackend()
        return _modal_backend
