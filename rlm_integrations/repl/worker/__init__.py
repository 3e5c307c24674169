"""The worker program and what it runs in: one process per REPL, standard library and RestrictedPython only.

`main` is the program (one JSON line in, one out), `notebook` runs cells, `policy`,
`safe_modules` and `host_calls` are the first wall (RestrictedPython), `lockdown` the
in-process part of the second, `supervisor` the relay that runs beside it in a remote
sandbox. Every file here is shipped to the worker (`supervisor.WORKER_MODULES`); this one
imports nothing.
"""
