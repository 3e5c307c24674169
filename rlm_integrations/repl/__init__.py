"""REPLs that run LM-written code: the local sandboxed worker and the Modal sandbox.

Backends are chosen by name through a registry (`register_backend`, `resolve_backend`).
A new backend implements one object, a `WorkerTransport` (`repl.transport`), and runs
under `WorkerREPL`, which speaks the worker protocol the same way for every backend.

Layout: `host/` (the protocol's host side: `WorkerREPL`), `worker/` (the worker program
and its walls), `wire/` (the messages both sides exchange), `local/` (`LocalREPL`, a
worker process here), `sandbox/` (`ModalREPL` and its stand-in).

Importing this package is cheap: each backend loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm_integrations.repl.host.client import WorkerREPL
    from rlm_integrations.repl.local import LocalREPL
    from rlm_integrations.repl.local.isolation import Isolation
    from rlm_integrations.repl.local.pool import prewarm
    from rlm_integrations.repl.modal import ModalREPL
    from rlm_integrations.repl.protocol import REPL, CellResult, FinalAnswer, HostCallback
    from rlm_integrations.repl.registry import (
        UnknownBackendError,
        backend_names,
        register_backend,
        resolve_backend,
        unregister_backend,
    )
    from rlm_integrations.repl.transport import WorkerTransport
    from rlm_integrations.repl.worker.output import truncate_middle

__all__ = [
    "REPL",
    "CellResult",
    "FinalAnswer",
    "HostCallback",
    "Isolation",
    "LocalREPL",
    "ModalREPL",
    "UnknownBackendError",
    "WorkerREPL",
    "WorkerTransport",
    "backend_names",
    "prewarm",
    "register_backend",
    "resolve_backend",
    "truncate_middle",
    "unregister_backend",
]

_LOCATIONS = {
    "REPL": "rlm_integrations.repl.protocol",
    "CellResult": "rlm_integrations.repl.protocol",
    "FinalAnswer": "rlm_integrations.repl.protocol",
    "HostCallback": "rlm_integrations.repl.protocol",
    "Isolation": "rlm_integrations.repl.local.isolation",
    "LocalREPL": "rlm_integrations.repl.local",
    "ModalREPL": "rlm_integrations.repl.modal",
    "prewarm": "rlm_integrations.repl.local.pool",
    "truncate_middle": "rlm_integrations.repl.worker.output",
    "UnknownBackendError": "rlm_integrations.repl.registry",
    "WorkerREPL": "rlm_integrations.repl.host.client",
    "WorkerTransport": "rlm_integrations.repl.transport",
    "backend_names": "rlm_integrations.repl.registry",
    "register_backend": "rlm_integrations.repl.registry",
    "resolve_backend": "rlm_integrations.repl.registry",
    "unregister_backend": "rlm_integrations.repl.registry",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlm_integrations.repl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
