"""Named REPL backends: how ``RLM(repl="name")`` turns a name into a fresh `REPL` per run.

A backend is a factory ``factory(config: RLMConfig) -> REPL``: it maps the run's limits
(`cell_timeout_s`, `memory_limit_mb`, `max_output_chars`, ...) to the REPL's own options
and returns an unstarted REPL. The engine calls it once per run (and once per child run).

``"local"`` (the sandboxed worker process) and ``"modal"`` (a Modal sandbox) are
registered here like any other backend; each factory imports its REPL on first call, so
registering them imports nothing heavy. Add your own with `register_backend`:

```python
from rlm_integrations.repl import register_backend
from rlm_integrations.testing import FakeREPL

register_backend("fake", lambda config: FakeREPL(max_output_chars=config.max_output_chars))
```
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from rlm_integrations.errors import ConfigError, MissingExtraError, UsageError
from rlm_integrations.repl.protocol import REPL

if TYPE_CHECKING:
    from rlm_integrations.core.config import RLMConfig

__all__ = [
    "BackendFactory",
    "UnknownBackendError",
    "backend_names",
    "register_backend",
    "resolve_backend",
    "unregister_backend",
]

BackendFactory = Callable[["RLMConfig"], REPL]
"""Builds a fresh, unstarted `REPL` from a run's `RLMConfig`."""


class UnknownBackendError(ConfigError):
    """A REPL backend name that nothing registered.

    Attributes:
        name: the name asked for.
        known: the registered names, sorted.
    """

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown REPL backend {name!r}; registered backends: {', '.join(known)}. "
            "Register it with rlm_integrations.repl.register_backend(name, factory), "
            "or pass a callable that takes the RLMConfig and returns a REPL."
        )
        self.name = name
        self.known = known


def _local(config: RLMConfig) -> REPL:
    from rlm_integrations.repl.local import LocalREPL

    return LocalREPL(**config.repl_options())


def _modal(config: RLMConfig) -> REPL:
    try:
        from rlm_integrations.repl.modal import ModalREPL
    except ImportError as error:
        raise MissingExtraError("modal", "repl='modal'") from error
    return ModalREPL(**config.repl_options())


_lock = threading.Lock()
_backends: dict[str, BackendFactory] = {"local": _local, "modal": _modal}


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``RLM(repl=name)`` build its REPLs with `factory`.

    Args:
        name: the backend's name: a non-empty str without surrounding spaces.
        factory: ``factory(config: RLMConfig) -> REPL``, called once per run; it must
            return a new, unstarted REPL each time.
        replace: allow replacing a backend already registered under `name` (the built-in
            ``"local"`` and ``"modal"`` included). Without it, a second registration of
            the same name raises, so two libraries cannot silently take one name.

    Raises:
        UsageError: a bad name, a factory that is not callable, or a name already taken.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise UsageError(f"a REPL backend name must be a non-empty str without surrounding spaces, got {name!r}")
    if not callable(factory):
        raise UsageError(
            f"the factory for REPL backend {name!r} must be callable as factory(config) -> REPL, "
            f"got {type(factory).__name__}"
        )
    with _lock:
        if name in _backends and not replace and _backends[name] is not factory:
            raise UsageError(
                f"a REPL backend named {name!r} is already registered; pass replace=True to replace it, "
                "or choose another name"
            )
        _backends[name] = factory


def unregister_backend(name: str) -> None:
    """Remove a registered backend (for tests and plugins that clean up); unknown names are ignored."""
    with _lock:
        _backends.pop(name, None)


def resolve_backend(name: str) -> BackendFactory:
    """The factory registered under `name`.

    Raises:
        UnknownBackendError: nothing is registered under `name` (the message lists what is).
    """
    with _lock:
        factory = _backends.get(name) if isinstance(name, str) else None
        if factory is None:
            raise UnknownBackendError(name, sorted(_backends))
        return factory


def backend_names() -> list[str]:
    """The registered backend names, sorted."""
    with _lock:
        return sorted(_backends)
