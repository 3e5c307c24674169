"""REPLs that run LM-written code: the local sandboxed worker and the Modal sandbox.

Backends are chosen by name through a registry (`register_backend`, `resolve_backend`).

Importing this package is cheap: each backend loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
