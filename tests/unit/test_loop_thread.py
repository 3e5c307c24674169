"""`LoopThread`, the private event loop of a blocking session: stopping it closes what lives on the loop."""

from __future__ import annotations

import asyncio

from rlm_integrations.core.session import LoopThread
from rlm_integrations.lm._per_loop import PerLoop


class _Client:
    def __init__(self) -> None:
        self.closed = False


async def _close(client: _Client) -> None:
    await asyncio.sleep(0)
    client.closed = True


def test_stop_closes_the_per_loop_clients_made_on_the_loop() -> None:
    clients: PerLoop[_Client] = PerLoop(_Client, _close)
    thread = LoopThread()
    client = thread.run(clients.get())
    assert not client.closed and len(clients.entries) == 1
    thread.stop()
    assert client.closed  # an HTTP client would otherwise leak its connections
    assert clients.entries == {}
    assert thread.loop.is_closed() and not thread.thread.is_alive()


def test_stop_twice_is_harmless() -> None:
    thread = LoopThread()
    assert thread.run(asyncio.sleep(0, result=7)) == 7
    thread.stop()
    thread.stop()
    assert thread.loop.is_closed()
