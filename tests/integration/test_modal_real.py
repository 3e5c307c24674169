"""ModalREPL against real Modal. Opt-in: runs only where the [modal] extra and Modal credentials exist.

    MODAL_TOKEN_ID=... MODAL_TOKEN_SECRET=... pytest tests/integration/test_modal_real.py -m modal

Each test creates (and terminates) sandboxes in the `rlm-integrations-tests` app, and the
first run builds the image, which takes a few minutes. These tests are not run in our CI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import cast

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.modal, pytest.mark.timeout(900)]

if importlib.util.find_spec("modal") is None:
    pytest.skip("the [modal] extra is not installed", allow_module_level=True)

from rlm_integrations.errors import MissingAPIKeyError  # noqa: E402
from rlm_integrations.repl.modal import ModalREPL, SandboxPool, check_credentials  # noqa: E402

try:
    check_credentials()
except MissingAPIKeyError as _missing:
    pytest.skip(f"no Modal credentials: {_missing}", allow_module_level=True)

APP = "rlm-integrations-tests"


def make(**options) -> ModalREPL:
    options.setdefault("cell_timeout_s", 20.0)
    options.setdefault("timeout_s", 600)
    options.setdefault("idle_timeout_s", 120)
    return ModalREPL(app_name=APP, pool=SandboxPool(max_sandboxes=4), **options)


async def test_cells_context_and_callbacks_in_a_real_sandbox() -> None:
    text = "line of text\n" * 400_000  # 5.2 MB: several upload chunks
    asked: list[str] = []

    async def llm_query(prompt: str) -> str:
        asked.append(prompt)
        return "host says hi"

    async with make() as repl:
        assert repl.sandbox_id and repl.sandbox_id.startswith("sb-")
        await repl.load("context", text)
        repl.register("llm_query", llm_query)
        assert (await repl.execute("len(context)")).value == str(len(text))
        assert (await repl.execute("llm_query('q')")).value == "'host says hi'"
        assert asked == ["q"]
        assert (await repl.execute("import os")).error_type == "ImportError"


async def test_network_is_blocked_even_unrestricted() -> None:
    async with make(policy="unrestricted") as repl:
        cell = await repl.execute(
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=3)\n    r = 'open'\n"
            "except OSError as e:\n    r = 'blocked'\nr"
        )
        assert cell.value == "'blocked'", cell


async def test_timeout_kills_the_cell_not_the_sandbox() -> None:
    async with make(cell_timeout_s=3.0) as repl:
        await repl.load("context", "kept")
        sandbox = repl.sandbox_id
        started = time.monotonic()
        cell = await repl.execute("while True:\n    pass")
        assert cell.timed_out and cell.restarted
        assert time.monotonic() - started < 3.0 + 15
        assert repl.sandbox_id == sandbox
        assert (await repl.execute("context")).value == "'kept'"


async def test_close_terminates_the_sandbox() -> None:
    import modal

    repl = make()
    await repl.start()
    sandbox_id = repl.sandbox_id
    await repl.close()
    handle = await modal.Sandbox.from_id.aio(cast(str, sandbox_id))
    for _ in range(60):
        if await handle.poll.aio() is not None:
            break
        await asyncio.sleep(1)
    assert await handle.poll.aio() is not None


async def test_attach_to_a_sandbox_made_from_our_image() -> None:
    import modal

    repl = make()
    app = await modal.App.lookup.aio(APP, create_if_missing=True)
    sandbox = await modal.Sandbox.create.aio(app=app, image=repl.image(), timeout=300, block_network=True)
    try:
        async with make(sandbox_id=sandbox.object_id) as attached:
            assert (await attached.execute("1 + 1")).value == "2"
        assert await sandbox.poll.aio() is None  # not ours: still running
    finally:
        await sandbox.terminate.aio()
