"""The local backend: a sandboxed worker process on this machine.

`repl.LocalREPL` is the REPL, `process` one worker process, `isolation` the bubblewrap
launch, `pool` the pre-started processes.
"""

from rlm_integrations.repl.local.repl import LocalREPL

__all__ = ["LocalREPL"]
