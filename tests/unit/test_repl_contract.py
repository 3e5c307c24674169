"""The REPL contract: behaviour every backend shares, run against each of them.

Backends: `LocalREPL` (a real worker process), `ModalREPL` over the stand-in sandbox (local
subprocesses in place of Modal), `WorkerREPL` over `PlainTransport` (a transport written
here against the public seam alone, as a new backend would be), and `FakeREPL`
(in-process, for engine tests). The escape corpus (`test_repl_escapes.py`, which runs it
against `LocalREPL`) runs here against the other sandboxed backend, the stand-in sandbox.
What only the sandboxed ones do (limits, restarts) is tested in their own files.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from test_repl_escapes import CONTEXT, ESCAPES, INVARIANTS, INVARIANTS_VALUE, MARKER, Escape

from rlm_integrations.errors import REPLClosedError, UsageError
from rlm_integrations.repl import LocalREPL, WorkerREPL, WorkerTransport
from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend
from rlm_integrations.repl.protocol import REPL
from rlm_integrations.repl.transport import (
    EOF,
    MAX_MESSAGE_BYTES,
    Mailbox,
    decode_message,
    encode_message,
    worker_command,
)
from rlm_integrations.testing import FakeREPL

BACKENDS = ["local", "standin", "plain", "fake"]


class PlainTransport(WorkerTransport):
    """The worker as a plain child process (no bubblewrap), written against the public seam only."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={}
        )
        self.messages = Mailbox()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    async def connect(cls) -> PlainTransport:
        return cls()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as lines:
            while line := lines.readline(MAX_MESSAGE_BYTES + 1):
                self.messages.put(decode_message(line))
        self.messages.put(EOF)

    def _write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except ValueError as closed:
            raise BrokenPipeError(str(closed)) from None

    async def send(self, message: dict[str, Any]) -> None:
        await asyncio.to_thread(self._write, encode_message(message))

    async def receive(self) -> dict[str, Any]:
        return await self.messages.get()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, *, force: bool = False) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


@pytest.fixture(params=BACKENDS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """A factory of unstarted REPLs of one backend; everything it made is closed afterwards."""
    made: list[Any] = []
    backend = StandInBackend()
    pool = SandboxPool(max_sandboxes=4)

    def build(**options: Any) -> Any:
        if request.param == "local":
            repl: Any = LocalREPL(cell_timeout_s=20.0, **options)
        elif request.param == "standin":
            repl = ModalREPL(backend=backend, pool=pool, cell_timeout_s=20.0, **options)
        elif request.param == "plain":
            repl = WorkerREPL(PlainTransport.connect, cell_timeout_s=20.0, **options)
        else:
            repl = FakeREPL(**options)
        made.append(repl)
        return repl

    yield build
    for repl in made:
        await repl.close()
    pool.close()
    for sandbox in backend.created:
        sandbox.terminate()


async def test_it_implements_the_protocol(make: Callable[..., Any]) -> None:
    repl = make()
    assert isinstance(repl, REPL)
    for name in ("start_sync", "load_sync", "execute_sync", "get_sync", "close_sync", "variables"):
        assert callable(getattr(repl, name)), name


async def test_load_execute_get(make: Callable[..., Any]) -> None:
    async with make() as repl:
        await repl.load("context", "some long text")
        await repl.load("data", {"rows": [1, 2, 3], "name": "n", "nested": {"ok": True, "none": None}})
        cell = await repl.execute("words = context.split()\nlen(words)")
        assert cell.error is None and cell.value == "3"
        assert await repl.get("words") == ["some", "long", "text"]
        assert await repl.get("data") == {"rows": [1, 2, 3], "name": "n", "nested": {"ok": True, "none": None}}
        cell = await repl.execute("total = sum(data['rows']) * 2")
        assert cell.value is None and await repl.get("total") == 12


async def test_loaded_values_cross_as_json(make: Callable[..., Any]) -> None:
    async with make() as repl:
        await repl.load("pair", (1, 2))  # a tuple is JSON data: it arrives as a list
        assert (await repl.execute("isinstance(pair, list)")).value == "True"
        await repl.load("raw", b"\x00\xffbytes")
        assert (await repl.execute("len(raw), raw[:2]")).value == "(7, b'\\x00\\xff')"


async def test_printed_output_and_value_repr(make: Callable[..., Any]) -> None:
    async with make() as repl:
        cell = await repl.execute("print('a', 1)\nprint('b', end='!')\n[1, 'x', None]")
        assert cell.stdout == "a 1\nb!"
        assert cell.value == "[1, 'x', None]"
        assert (await repl.execute("None")).value is None
        assert (await repl.execute("x = 1")).stdout == ""


async def test_long_output_is_bounded(make: Callable[..., Any]) -> None:
    async with make(max_output_chars=200) as repl:
        cell = await repl.execute("print('y' * 5000)")
        assert cell.error is None
        assert len(cell.stdout) < 600
        assert cell.output_chars == 5001


async def test_errors_come_back_in_the_result(make: Callable[..., Any]) -> None:
    async with make() as repl:
        cell = await repl.execute("kept = 'before'\n1 / 0\nafter = 1")
        assert cell.error_type == "ZeroDivisionError"
        assert "division by zero" in (cell.error or "") and "line 2" in (cell.error or "")
        assert not cell.ok
        assert await repl.get("kept") == "before"
        assert "after" not in await repl.variables()
        syntax = await repl.execute("ran = 1\ndef broken(:\n")
        assert syntax.error_type == "SyntaxError"
        assert "ran" not in await repl.variables()  # nothing in a cell that does not compile runs
        assert (await repl.execute("undefined_name")).error_type == "NameError"


async def test_final_and_final_var(make: Callable[..., Any]) -> None:
    async with make() as repl:
        cell = await repl.execute("FINAL(42)\nnot_reached = 1")
        assert cell.final is not None and cell.final.value == 42 and cell.final.exact
        assert "not_reached" not in await repl.variables()
        named = await repl.execute("FINAL(answer='yes', score=0.5)")
        assert named.final is not None and named.final.named and named.final.value == {"answer": "yes", "score": 0.5}
        cell = await repl.execute("result = {'k': [1, 2]}\nFINAL_VAR('result')")
        assert cell.final is not None
        assert cell.final.value == {"k": [1, 2]} and cell.final.variable == "result"
        missing = await repl.execute("FINAL_VAR('nothing_here')")
        assert missing.final is None and missing.error_type == "NameError"
        assert "nothing_here" in (missing.error or "")
        opaque = await repl.execute("def helper():\n    return 1\nFINAL(helper)")  # not plain data: its repr
        assert opaque.final is not None and not opaque.final.exact
        assert opaque.final.value.startswith("<function helper")
        assert (await repl.execute("1 + 1")).final is None  # each cell starts without an answer


async def test_callbacks_run_on_the_host(make: Callable[..., Any]) -> None:
    seen: list[Any] = []

    async def shout(text: str, times: int = 1) -> str:
        await asyncio.sleep(0)
        seen.append((text, times))
        return text.upper() * times

    def pairs(items: list[int]) -> list[list[int]]:
        seen.append(items)
        return [[item, item * item] for item in items]

    def refuse(reason: str) -> None:
        raise ValueError(f"refused: {reason}")

    def explode() -> None:
        raise OSError("disk on fire")

    async with make() as repl:
        repl.register("shout", shout)
        repl.register("pairs", pairs)
        cell = await repl.execute("a = shout('hi', times=2)\nb = pairs((1, 2))\nprint(a, b)")
        assert cell.error is None, cell.error
        assert cell.stdout == "HIHI [[1, 1], [2, 4]]\n"
        assert seen == [("hi", 2), [1, 2]]  # the tuple crossed as a JSON list
        repl.register("refuse", refuse)  # registered after start: still reachable
        repl.register("explode", explode)
        cell = await repl.execute(
            "try:\n    refuse('no')\nexcept ValueError as error:\n    print('caught', error)\nexplode()"
        )
        assert "caught refuse() failed: refused: no" in cell.stdout
        assert cell.error_type == "RuntimeError" and "disk on fire" in (cell.error or "")
        unencodable = await repl.execute("shout(object())")
        assert unencodable.error_type == "TypeError"
        assert "shout" not in await repl.variables()


async def test_variables_lists_what_was_defined(make: Callable[..., Any]) -> None:
    async with make() as repl:
        repl.register("helper", lambda: 1)
        await repl.load("context", "c")
        await repl.execute("first = 1\nsecond = [first]")
        names = await repl.variables()
        assert names == ["context", "first", "second"]


async def test_get_of_a_missing_name_is_a_key_error(make: Callable[..., Any]) -> None:
    async with make() as repl:
        with pytest.raises(KeyError):
            await repl.get("missing")


async def test_bad_names_are_refused(make: Callable[..., Any]) -> None:
    repl = make()
    with pytest.raises(UsageError):
        await repl.load("not a name", 1)
    with pytest.raises(UsageError):
        repl.register("FINAL", lambda: 1)
    with pytest.raises(UsageError):
        repl.register("callback", "not callable")
    await repl.close()


async def test_close_is_idempotent_and_final(make: Callable[..., Any]) -> None:
    repl = make()
    await repl.start()
    await repl.start()  # idempotent too
    assert (await repl.execute("1")).value == "1"
    await repl.close()
    await repl.close()
    with pytest.raises(REPLClosedError):
        await repl.execute("1")
    with pytest.raises(REPLClosedError):
        await repl.load("x", 1)
    with pytest.raises(REPLClosedError):
        repl.register("f", lambda: 1)


def test_sync_forms(make: Callable[..., Any]) -> None:
    with make() as repl:
        repl.load_sync("n", 20)
        assert repl.execute_sync("n + 1").value == "21"
        assert repl.get_sync("n") == 20
    with pytest.raises(REPLClosedError):
        repl.execute_sync("1")


# -- the seam itself ------------------------------------------------------------------------------


def test_a_transport_needs_only_its_four_members() -> None:
    required = set(WorkerTransport.__abstractmethods__)
    assert required == {"send", "receive", "alive", "kill"}

    class Incomplete(WorkerTransport):
        async def send(self, message: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


async def test_worker_repl_without_a_transport_says_what_to_pass() -> None:
    repl = WorkerREPL()
    with pytest.raises(UsageError, match="connect="):
        await repl.start()
    await repl.close()


async def test_a_plain_transport_gets_timeouts_and_restarts_from_worker_repl() -> None:
    async with WorkerREPL(PlainTransport.connect, cell_timeout_s=1.0) as repl:
        await repl.load("context", "abc")
        await repl.execute("scratch = 1")
        cell = await repl.execute("while True:\n    pass")
        assert cell.timed_out and cell.restarted and cell.lost_variables == ["scratch"]
        assert (await repl.execute("context")).value == "'abc'"  # reloaded in the fresh worker


async def test_a_worker_that_breaks_the_protocol_is_replaced() -> None:
    class Forging(PlainTransport):
        forged = False

        async def receive(self) -> dict[str, Any]:
            message = await super().receive()
            if message.get("op") == "result" and not Forging.forged:
                Forging.forged = True
                return decode_message(b'{"op": "result", "id": 99999}')  # answers no request in flight
            return message

    async with WorkerREPL(Forging.connect) as repl:
        cell = await repl.execute("x = 1")
        assert cell.restarted and "protocol" in (cell.error or "")
        assert (await repl.execute("1 + 1")).value == "2"


# -- the escape corpus over the stand-in sandbox ----------------------------------------------------


@pytest.fixture(scope="module")
def walled() -> Iterator[ModalREPL]:
    """One started, restricted stand-in sandbox REPL with the escape tests' context and `llm_query`.

    Shared by the corpus (a sandbox start per attempt would cost most of its time): every
    attempt is followed by the invariants check, so one that changed the namespace fails there.
    The REPL is reached from each test's own event loop, as the blocking forms do.
    """
    backend = StandInBackend()
    pool = SandboxPool(max_sandboxes=1)
    repl = ModalREPL(backend=backend, pool=pool, cell_timeout_s=5.0, memory_limit_mb=512)
    repl.start_sync()
    try:
        repl.load_sync("context", CONTEXT)
        repl.register("llm_query", lambda prompt: f"pong:{prompt}")
        yield repl
    finally:
        repl.close_sync()
        pool.close()
        for sandbox in backend.created:
            sandbox.terminate()


@pytest.mark.slow
@pytest.mark.parametrize("escape", ESCAPES, ids=[escape.id for escape in ESCAPES])
async def test_escape_is_refused_in_the_standin_sandbox(walled: ModalREPL, escape: Escape) -> None:
    cell = await walled.execute(escape.code + "\nattempt_finished = True")
    assert not cell.ok, f"the escape ran without an error; stdout={cell.stdout!r} value={cell.value!r}"
    assert cell.error and cell.error_type and cell.final is None
    assert MARKER not in cell.stdout + (cell.value or ""), cell.stdout
    check = await walled.execute(INVARIANTS)
    assert check.error is None and check.value == INVARIANTS_VALUE, check.error
