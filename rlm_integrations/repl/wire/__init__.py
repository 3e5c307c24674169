"""The worker protocol, both sides of it.

Op names and limits (`schema`), the host's typed messages (`messages`), and the value
codec both sides share (`codec`, `jsonio`).

`schema`, `codec` and `jsonio` are standard library only: the worker imports them. This
file imports nothing, since it is shipped to the worker too.
"""
