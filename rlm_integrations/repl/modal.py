"""`ModalREPL`: the same worker and protocol as `LocalREPL`, inside a Modal Sandbox.

The public face of the sandbox backend (`rlm_integrations.repl.sandbox`). Importing this
module does not import `modal`; the first `start()` does.
"""

from __future__ import annotations

from rlm_integrations.repl.sandbox.pool import SandboxPool, default_sandbox_pool
from rlm_integrations.repl.sandbox.repl import ModalREPL, check_credentials
from rlm_integrations.repl.sandbox.standin import StandInBackend

__all__ = ["ModalREPL", "SandboxPool", "StandInBackend", "check_credentials", "default_sandbox_pool"]
