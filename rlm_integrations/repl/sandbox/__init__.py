"""The sandbox backend: the worker inside a remote sandbox (Modal, or the local stand-in).

`backends` is the narrow interface over Modal and the stand-in, `channel` the host's
end of one in-sandbox supervisor, `pool` the `SandboxPool`, `repl` the `ModalREPL`.
The public names are in `rlm_integrations.repl.modal`.
"""
