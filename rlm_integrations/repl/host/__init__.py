"""The host's side of a worker: `client.WorkerREPL` speaks the protocol over a channel.

`channel` is the interface a backend's transport implements, `replies` reads the
worker's answers, `transfer` moves contexts and callbacks, `sync_forms` supplies the
blocking methods.
"""
