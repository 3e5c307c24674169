"""The suite's network guard (pytest-socket, see tests/conftest.py): only loopback is reachable."""

from __future__ import annotations

import socket

import pytest

from rlm_integrations.testing import FakeOpenAIServer


def test_a_connection_off_the_machine_is_refused() -> None:
    with pytest.raises(Exception, match=r"93\.184\.216\.34") as caught:
        socket.create_connection(("93.184.216.34", 80), timeout=2)
    assert not isinstance(caught.value, TimeoutError | ConnectionRefusedError)  # refused by the guard, not the network


def test_loopback_stays_reachable(fake_openai_server: FakeOpenAIServer) -> None:
    host, port = fake_openai_server.api_base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5):
        pass
