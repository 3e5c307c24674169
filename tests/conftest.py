"""Fixtures shared by the whole suite, and the suite's isolation.

Network: pytest-socket (configured in pyproject.toml's pytest addopts) refuses every
connection from the test process except to 127.0.0.1, localhost and ::1 (and Unix
sockets), so no test can reach the internet by accident; worker processes, servers and
browsers the tests start are separate processes and keep their own walls.

Speed: engine tests run on the in-process `FakeREPL`. Tests marked ``slow`` (the suites of
the sandboxed worker and the Modal stand-in, which start real worker processes, the browser
tests, and single tests marked by hand) still run by default; ``pytest -m "not slow"`` is the
quick loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rlm_integrations.repl import registry
from rlm_integrations.testing import FakeOpenAIServer, FakeREPL

_SLOW_MODULES = ("test_repl_", "test_modal_standin", "test_concurrency", "test_cancellation")
"""Test modules whose every test starts real sandboxed workers (by file-name prefix)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the worker, stand-in and browser suites ``slow`` (``-m "not slow"`` leaves them out)."""
    for item in items:
        path = Path(str(item.path))
        if path.name.startswith(_SLOW_MODULES) or path.parent.name == "browser":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _restore_repl_backends() -> Iterator[None]:
    """Backends a test (or a docs example) registers do not leak into the next test."""
    saved = dict(registry._backends)
    yield
    with registry._lock:
        registry._backends.clear()
        registry._backends.update(saved)


@pytest.fixture(autouse=True)
def _restore_providers() -> Iterator[None]:
    """LM providers a test (or a docs example) registers do not leak into the next test."""
    from rlm_integrations.lm import registry as providers

    saved = dict(providers._providers)
    yield
    with providers._lock:
        providers._providers.clear()
        providers._providers.update(saved)


@pytest.fixture
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """A running OpenAI-compatible fake server on 127.0.0.1."""
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture
async def fake_repl() -> AsyncIterator[FakeREPL]:
    """A started in-process `FakeREPL` (no sandbox: only for code the test wrote)."""
    async with FakeREPL() as repl:
        yield repl
