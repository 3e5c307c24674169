"""The worker protocol holds against the cells: sealed reader and writer, checked messages, bounded host cost.

Every attack here runs in a real worker. Where a test needs code that the policy would
refuse (patching `json`, writing to the protocol's descriptor), it uses
``policy="unrestricted"``: the protocol must hold even when the policy has fallen.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.core.events import CellFinished
from rlm_integrations.errors import ConfigError, WorkerCrashedError
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.repl import LocalREPL
from rlm_integrations.repl.local.process import EOF, Mailbox, WorkerProcess, _read_protocol
from rlm_integrations.repl.wire import messages as _wire
from rlm_integrations.repl.wire import schema as _schema
from rlm_integrations.repl.wire.codec import MAX_EXACT_CHARS, decode_value, encode_value
from rlm_integrations.repl.wire.jsonio import TooLarge, dumps, loads, plain

CONTEXT = "abc"


@pytest.fixture
async def plain_repl() -> AsyncIterator[LocalREPL]:
    repl = LocalREPL(cell_timeout_s=20.0, policy="unrestricted")
    await repl.start()
    await repl.load("context", CONTEXT)
    yield repl
    await repl.close()


@pytest.fixture
async def repl() -> AsyncIterator[LocalREPL]:
    repl = LocalREPL(cell_timeout_s=20.0)
    await repl.start()
    await repl.load("context", CONTEXT)
    yield repl
    await repl.close()


def host_rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


async def assert_usable(repl: LocalREPL) -> None:
    """The REPL runs the next cell correctly, with the context reloaded."""
    cell = await repl.execute("len(context) * 2")
    assert cell.error is None, cell.error
    assert cell.value == str(2 * len(CONTEXT))
    assert not cell.restarted


def record(log: list[Any], item: Any, reply: str) -> str:
    log.append(item)
    return reply


def dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


# -- the worker's reader and writer cannot be patched by a cell ------------------------------------------

_FORGE_EXEC = """
import json, re
def forged(text):
    ident = int(re.search(r'"id":(\\d+)', text).group(1)) if '"id":' in text else 0
    if '"op":"exec"' in text:
        return {"op": "exec", "id": ident, "code": "print('hijacked')", "cpu_limit_s": None}
    return None
"""

PATCHES = {
    "JSONDecoder.decode": _FORGE_EXEC
    + """
original = json.JSONDecoder.decode
def decode(self, s, *args, **kwargs):
    return forged(s if isinstance(s, str) else s.decode()) or original(self, s, *args, **kwargs)
json.JSONDecoder.decode = decode
""",
    "json.loads": _FORGE_EXEC
    + """
original = json.loads
def loads(s, *args, **kwargs):
    return forged(s if isinstance(s, str) else s.decode()) or original(s, *args, **kwargs)
json.loads = loads
""",
    "C scanner type": _FORGE_EXEC
    + """
scanner_type = type(json.decoder.JSONDecoder().scan_once)
def call(self, s, index):
    return forged(s), len(s)
scanner_type.__call__ = call
""",
}


@pytest.mark.parametrize("patch", list(PATCHES), ids=list(PATCHES))
async def test_a_patched_json_decoder_cannot_rewrite_the_next_request(plain_repl: LocalREPL, patch: str) -> None:
    setup = await plain_repl.execute(PATCHES[patch] + "x = 41")
    assert setup.error is None, setup.error
    cell = await plain_repl.execute("x + 1")
    assert cell.stdout == "", "the worker's reader used the patched decoder: the host's next cell was replaced"
    assert cell.value == "42" and cell.error is None
    assert not cell.restarted


async def test_a_patched_decoder_cannot_turn_a_request_into_configure(plain_repl: LocalREPL) -> None:
    setup = await plain_repl.execute(
        "import json\n"
        "original = json.JSONDecoder.decode\n"
        "def decode(self, s, *args, **kwargs):\n"
        "    message = original(self, s, *args, **kwargs)\n"
        "    if isinstance(message, dict) and message.get('op') == 'exec':\n"
        "        return {'op': 'configure', 'id': message.get('id'), 'policy': 'unrestricted',\n"
        "                'max_output_chars': 10000, 'memory_limit_mb': None, 'max_callback_bytes': 4096}\n"
        "    return message\n"
        "json.JSONDecoder.decode = decode\n"
        "kept = 'still here'"
    )
    assert setup.error is None, setup.error
    cell = await plain_repl.execute("kept")
    assert cell.error is None, cell.error
    assert cell.value == "'still here'"


@pytest.mark.parametrize(
    "patch",
    [
        "import json\njson.dumps = lambda *args, **kwargs: '[1]'\njson.JSONEncoder.encode = lambda self, o: '[1]'",
        "import json\njson.encoder.JSONEncoder.iterencode = lambda self, o, _one_shot=False: iter(['[1]'])",
    ],
    ids=["dumps-and-encode", "iterencode"],
)
async def test_a_patched_json_encoder_cannot_break_the_host(plain_repl: LocalREPL, patch: str) -> None:
    setup = await plain_repl.execute(patch)
    assert setup.error is None, setup.error
    async with asyncio.timeout(60):  # before: the host's reader thread died and load() waited forever
        await plain_repl.load("more", "xyz")
        cell = await plain_repl.execute("more + context")
    assert cell.error is None, cell.error
    assert cell.value == "'xyzabc'"


# -- configure once, well-formed requests only ------------------------------------------------------------


async def _raw_reply(worker: WorkerProcess) -> dict[str, Any]:
    async with asyncio.timeout(30):
        return await worker.mailbox.get()


async def test_configure_after_the_first_cell_is_refused_and_the_worker_stops() -> None:
    worker = WorkerProcess()
    try:
        assert (await _raw_reply(worker))["op"] == "ready"
        configure = {
            "op": "configure",
            "id": 1,
            "policy": "restricted",
            "max_output_chars": 1000,
            "memory_limit_mb": None,
            "max_callback_bytes": 4096,
        }
        worker.send(configure)
        assert (await _raw_reply(worker))["op"] == "ok"
        worker.send({"op": "exec", "id": 2, "code": "6 * 7", "cpu_limit_s": None})
        result = await _raw_reply(worker)
        assert result["op"] == "result" and result["value"] == "42" and result["id"] == 2
        worker.send({**configure, "id": 3, "policy": "unrestricted"})
        refused = await _raw_reply(worker)
        assert refused["op"] == "error" and refused["id"] == 3
        assert "configure is accepted once" in refused["error"]
        assert (await _raw_reply(worker)) is EOF  # the worker stopped
    finally:
        worker.kill()


@pytest.mark.parametrize(
    "request_",
    [
        {"op": "exec", "id": 2, "code": 7},
        {"op": "exec", "code": "1"},
        {"op": "load", "id": 2, "name": "x", "path": "/etc/passwd", "format": "pickle"},
        {"op": "no-such-op", "id": 2},
        {"op": "callback_result", "ok": True, "value": 1},
    ],
    ids=["code-not-str", "no-id", "bad-format", "unknown-op", "unasked-callback-result"],
)
async def test_a_malformed_request_stops_the_worker(request_: dict[str, Any]) -> None:
    worker = WorkerProcess()
    try:
        assert (await _raw_reply(worker))["op"] == "ready"
        worker.send(
            {
                "op": "configure",
                "id": 1,
                "policy": "restricted",
                "max_output_chars": 1000,
                "memory_limit_mb": None,
                "max_callback_bytes": 4096,
            }
        )
        assert (await _raw_reply(worker))["op"] == "ok"
        worker.send(request_)
        refused = await _raw_reply(worker)
        assert refused["op"] == "error" and "malformed request" in refused["error"]
        assert (await _raw_reply(worker)) is EOF
    finally:
        worker.kill()


# -- a compromised worker cannot break the host ----------------------------------------------------------

FIND_PROTOCOL_FD = """
import os, stat, fcntl
def protocol_fd():
    stderr = os.fstat(2).st_ino
    for name in sorted(os.listdir('/proc/self/fd'), key=int):
        fd = int(name)
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if (stat.S_ISFIFO(info.st_mode) and info.st_ino != stderr
                and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY):
            return fd
    raise RuntimeError('no protocol descriptor')
fd = protocol_fd()
"""

FORGED_LINES = {  # what the compromised cell writes, as an expression evaluated in the worker
    "not-json": "b'this is not json\\n'",
    "not-an-object": "b'[1, 2, 3]\\n'",
    "unknown-op": """b'{"op": "bogus", "id": 1}\\n'""",
    "malformed-result": """b'{"op":"result","id":1,"stdout":"","duration":"abc"}\\n'""",
    "wrong-id": """b'{"op":"ok","id":987654321}\\n'""",
    "unasked-ready": """b'{"op":"ready","pid":1}\\n'""",
    "oversized": "b'[' + b'0,' * (17 * 1024 * 1024) + b'0]\\n'",
}


@pytest.mark.parametrize("line", list(FORGED_LINES), ids=list(FORGED_LINES))
async def test_a_forged_reply_restarts_the_worker_and_is_reported(plain_repl: LocalREPL, line: str) -> None:
    await plain_repl.execute("lost = 1")
    forge = f"data = {FORGED_LINES[line]}\nwhile data:\n    data = data[os.write(fd, data):]\n"
    cell = await plain_repl.execute(FIND_PROTOCOL_FD + forge + "import time\ntime.sleep(5)")
    assert cell.restarted, cell
    assert cell.error_type == "WorkerCrashed"
    assert "broke the protocol" in (cell.error or "")
    assert "lost" in cell.lost_variables
    await assert_usable(plain_repl)


async def test_a_forged_result_with_the_right_id_but_a_bad_final_value(plain_repl: LocalREPL) -> None:
    cell = await plain_repl.execute(
        FIND_PROTOCOL_FD + "import gc, json\n"
        "worker = next(o for o in gc.get_objects() if type(o).__name__ == 'Worker')\n"
        "forged = {'op': 'result', 'id': worker._exec_id, 'stdout': '', 'output_chars': 0, 'value': None,\n"
        "          'error': None, 'error_type': None, 'duration': 0.0, 'variables': [],\n"
        "          'final': {'exact': True, 'json': '{\"s\": [[1]]}', 'variable': None, 'named': False}}\n"
        "os.write(fd, json.dumps(forged).encode() + b'\\n')\n"
        "import time\ntime.sleep(5)"
    )
    assert cell.restarted and "broke the protocol" in (cell.error or "")
    assert cell.final is None
    await assert_usable(plain_repl)


async def test_a_message_between_cells_is_out_of_order(plain_repl: LocalREPL) -> None:
    cell = await plain_repl.execute(
        # (cells may not start threads: a timer signal fires while the worker waits for a request)
        FIND_PROTOCOL_FD + "import signal\n"
        'signal.signal(signal.SIGALRM, lambda *_: os.write(fd, b\'{"op":"ok","id":1}\\n\'))\n'
        "signal.setitimer(signal.ITIMER_REAL, 0.3)\n"
        "lost = 1"
    )
    assert cell.error is None, cell.error
    await asyncio.sleep(1.5)
    late = await plain_repl.execute("lost")
    assert late.restarted and "broke the protocol" in (late.error or "")
    await assert_usable(plain_repl)


async def test_a_flood_between_cells_is_bounded(plain_repl: LocalREPL) -> None:
    cell = await plain_repl.execute(
        FIND_PROTOCOL_FD + "import signal\n"
        "def flood(*_):\n"
        "    for _ in range(200_000):\n"
        '        os.write(fd, b\'{"op":"ok","id":1,"variables":["\' + b\'x\' * 900 + b\'"]}\\n\')\n'
        "signal.signal(signal.SIGALRM, flood)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.5)  # after the cell's own result"
    )
    assert cell.error is None, cell.error
    before = host_rss_kib()
    await asyncio.sleep(3)
    grown_mib = (host_rss_kib() - before) / 1024
    assert grown_mib < 64, f"the host queued the flood: +{grown_mib:.0f} MiB"
    late = await plain_repl.execute("1")
    assert late.restarted and "broke the protocol" in (late.error or "")
    await assert_usable(plain_repl)


def _read_all(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What `_read_protocol` delivers for a worker that wrote `data` (up to EOF), and the ready info."""
    mailbox, ready, info = Mailbox(), threading.Event(), dict[str, Any]()
    thread = threading.Thread(target=_read_protocol, args=(io.BufferedReader(io.BytesIO(data)), mailbox, ready, info))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()

    async def drain() -> list[dict[str, Any]]:
        got = []
        while (item := await mailbox.get()) is not EOF:
            got.append(item)
        return got

    return asyncio.run(drain()), info


READY = b'{"op":"ready","pid":1}\n'
GOOD = b'{"op":"ok","id":7,"wire_bytes":-5}\n'


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (b"garbage\n", "not JSON"),
        (b"[1]\n", "not a message"),
        (b'{"op": 5}\n', "not a message"),
        (b"\xff\xfe\n", "not JSON"),
        (READY, "second 'ready'"),
        (b"x" * (_schema.MAX_MESSAGE_BYTES + 10) + b"\n", "longer than"),
    ],
    ids=["not-json", "not-an-object", "op-not-str", "not-utf8", "second-ready", "oversized"],
)
def test_the_reader_thread_survives_anything_the_worker_writes(bad: bytes, says: str) -> None:
    got, info = _read_all(READY + GOOD + bad + GOOD)
    assert [m["op"] for m in got] == ["ready", "ok", "invalid"]  # then it reads no more: the worker is replaced
    assert says in got[2]["error"]
    assert info["pid"] == 1 and "wire_bytes" not in info
    assert got[1]["wire_bytes"] == len(GOOD)


def test_a_line_cut_short_by_the_workers_death_is_dropped() -> None:
    got, _ = _read_all(READY + GOOD + b'{"op":"ok","id":8}')
    assert [m["op"] for m in got] == ["ready", "ok"]


def test_the_mailbox_holds_a_bounded_number_of_unasked_messages() -> None:
    mailbox = Mailbox()
    for number in range(10_000):
        mailbox.put({"op": "ok", "id": number})
    mailbox.put(EOF)

    async def drain() -> list[dict[str, Any]]:
        got = []
        while (item := await mailbox.get()) is not EOF:
            got.append(item)
        return got

    got = asyncio.run(drain())
    assert len(got) == Mailbox.MAX_QUEUED + 1
    assert got[-1]["op"] == "invalid" and "more than" in got[-1]["error"]


# -- get, load and variables run no cell code in the protocol's path -------------------------------------

HOSTILE_COUNTER = (
    "import collections\n"
    "class C(collections.Counter):\n"
    "    def most_common(self, n=None):\n"
    "        {body}\n"
    "c = C('abc')\n"
    "kept = 5"
)


async def test_get_of_a_counter_calling_back_into_the_host_does_not_desynchronise() -> None:
    async with LocalREPL(cell_timeout_s=20.0) as repl:
        calls: list[str] = []
        repl.register("llm_query", lambda prompt: record(calls, prompt, "answer"))
        setup = await repl.execute(HOSTILE_COUNTER.format(body="return llm_query('from get')"))
        assert setup.error is None, setup.error
        shown = await repl.get("c")  # before: KeyError, and the next cell silently did not run
        assert isinstance(shown, str) and "RuntimeError" in shown
        assert calls == []
        cell = await repl.execute("kept + 1")
        assert cell.value == "6" and cell.error is None


async def test_get_of_a_counter_whose_repr_never_ends_is_bounded() -> None:
    async with LocalREPL(cell_timeout_s=2.0) as repl:
        await repl.load("context", CONTEXT)
        setup = await repl.execute(HOSTILE_COUNTER.format(body="while True:\n            pass"))
        assert setup.error is None, setup.error
        started = time.monotonic()
        with pytest.raises(WorkerCrashedError, match="did not answer 'get'"):
            await repl.get("c")
        assert time.monotonic() - started < 10
        await assert_usable(repl)


@pytest.mark.parametrize("cell_timeout_s", [2.0, None])
async def test_load_over_a_value_whose_finalizer_spins_is_bounded(cell_timeout_s: float | None) -> None:
    async with LocalREPL(cell_timeout_s=cell_timeout_s) as repl:
        await repl.load("context", CONTEXT)
        setup = await repl.execute(
            "def spin():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
            "context = spin()\nnext(context)"
        )
        assert setup.error is None, setup.error
        started = time.monotonic()
        async with asyncio.timeout(30):  # before: load ran the finalizer and never returned
            await repl.load("context", "replaced")
            names = await repl.variables()
        assert time.monotonic() - started < 10
        assert "context" in names
        if cell_timeout_s is not None:
            # The finalizer runs when the next cell starts, under that cell's limit.
            cell = await repl.execute("len(context)")
            assert cell.timed_out and cell.restarted
            cell = await repl.execute("len(context)")
            assert cell.value == str(len("replaced"))


async def test_callbacks_are_refused_outside_a_cell(repl: LocalREPL) -> None:
    calls: list[str] = []
    repl.register("llm_query", lambda prompt: record(calls, prompt, "answer"))
    setup = await repl.execute(
        "def leave():\n    try:\n        yield 1\n    finally:\n        print(llm_query('from a finalizer'))\n"
        "context = leave()\nnext(context)\nkept = 1"
    )
    assert setup.error is None, setup.error
    await repl.load("context", CONTEXT)
    assert calls == []
    cell = await repl.execute("kept + len(context)")
    assert cell.value == "4" and not cell.restarted


# -- a worker that dies between cells ---------------------------------------------------------------------


async def test_a_worker_killed_between_cells_is_reported_by_the_next_cell(repl: LocalREPL) -> None:
    setup = await repl.execute("import re\nx = 41")
    assert setup.error is None
    pid = repl.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(500):
        if dead(pid):
            break
        await asyncio.sleep(0.01)
    cell = await repl.execute("x + 1")
    assert cell.restarted and not cell.timed_out
    assert cell.error_type == "WorkerCrashed"
    assert "between cells" in (cell.error or "") and "did not run" in (cell.error or "")
    assert sorted(cell.lost_variables) == ["re", "x"]
    assert repl.pid != pid
    await assert_usable(repl)


async def test_the_engine_restores_the_prelude_after_a_death_between_cells() -> None:
    repls: list[LocalREPL] = []
    finished: list[CellFinished] = []

    def factory(config: RLMConfig) -> LocalREPL:
        repls.append(LocalREPL(cell_timeout_s=20.0))
        return repls[-1]

    def kill_after_the_first_cell(event: Any) -> None:
        if isinstance(event, CellFinished):
            finished.append(event)
            if len(finished) == 1:
                pid = repls[0].pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while not dead(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)

    root = ScriptedLM(
        [
            "```repl\nx = 41\n```",
            "```repl\nprint(x)\n```",
            "```repl\nprint(re.sub('a', 'b', context))\nFINAL(len(context))\n```",
        ]
    )
    rlm = RLM(root, repl=factory, config=RLMConfig(max_iterations=5), observers=[kill_after_the_first_cell])
    result = await rlm.acompletion("How long is it?", "aaa")
    assert result.answer == 3
    second, third = finished[1], finished[2]
    assert second.restarted and second.lost_variables == ["x"]
    assert "between cells" in (second.error or "")
    assert third.error is None, third.error
    assert third.stdout == "bbb\n"  # `re` came back with the prelude


# -- bounded host cost --------------------------------------------------------------------------------------


async def test_a_callback_argument_over_the_limit_never_reaches_the_host() -> None:
    async with LocalREPL(cell_timeout_s=30.0, max_callback_bytes=1024 * 1024) as repl:
        sizes: list[int] = []
        repl.register("llm_query", lambda prompt: record(sizes, len(prompt), "ok"))
        reset_peak_rss()
        before = host_rss_kib("VmHWM")
        cell = await repl.execute(
            "try:\n    llm_query('x' * (96 * 1024 * 1024))\nexcept ValueError as error:\n    print(error)"
        )
        grown_mib = (host_rss_kib("VmHWM") - before) / 1024
        assert cell.error is None, cell.error
        assert "max_callback_bytes" in cell.stdout and "1,048,576" in cell.stdout
        assert sizes == []
        assert grown_mib < 32, f"host peak RSS grew by {grown_mib:.0f} MiB"
        fits = await repl.execute("llm_query('y' * 1000)")
        assert fits.value == "'ok'" and sizes == [1000]


async def test_a_callback_result_over_the_limit_is_an_error_in_the_cell() -> None:
    async with LocalREPL(cell_timeout_s=30.0, max_callback_bytes=4096) as repl:
        repl.register("big", lambda: "z" * 10_000)
        cell = await repl.execute("try:\n    big()\nexcept ValueError as error:\n    print(error)")
        assert cell.error is None, cell.error
        assert "max_callback_bytes" in cell.stdout and "big()" in cell.stdout


def test_max_callback_bytes_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_callback_bytes"):
        LocalREPL(max_callback_bytes=10)
    with pytest.raises(ConfigError, match="max_callback_bytes"):
        LocalREPL(max_callback_bytes=_schema.MAX_MESSAGE_BYTES)


async def _final_cost(repl: LocalREPL, code: str) -> tuple[Any, float, float]:
    """(final answer, host peak RSS growth in MiB, longest event-loop stall in s) for one cell."""
    reset_peak_rss()
    before = host_rss_kib("VmRSS")
    worst = 0.0
    running = True

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    cell = await repl.execute(code)
    running = False
    await ticker
    assert cell.error is None, cell.error
    return cell.final, (host_rss_kib("VmHWM") - before) / 1024, worst


async def test_final_of_a_large_list_has_bounded_host_cost(repl: LocalREPL) -> None:
    final, grown_mib, stall = await _final_cost(repl, "FINAL([0] * 600_000)")
    assert final is not None and final.exact and final.value == [0] * 600_000
    assert grown_mib < 150, f"host peak RSS +{grown_mib:.0f} MiB (it was +560 MiB with ast.literal_eval)"
    assert stall < 1.5, f"the event loop stalled {stall:.2f} s"


async def test_final_of_a_huge_list_comes_back_as_a_bounded_repr(repl: LocalREPL) -> None:
    final, grown_mib, stall = await _final_cost(repl, "FINAL(list(range(8_000_000)))")
    assert final is not None and not final.exact
    assert isinstance(final.value, str) and len(final.value) < 200_000
    assert final.value.startswith("[0, 1, 2, 3") and "too large to return exactly" in final.value
    assert grown_mib < 64 and stall < 1.0


# -- the codec and the sealed JSON --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        ("x", 1, {2}),
        {"a": [1, (2, 3)], "b": None, 3: frozenset({1})},
        {(1, 2): {"k"}, None: b"\x00\xff", 1.5: -0.0},
        [True, False, None, 1.25, float("inf"), -float("inf"), 10**5000, -(10**30)],
        "snow ☃ 😀 lone \udc80",
        [[[[]]]],
    ],
)
def test_plain_values_round_trip_exactly(value: Any) -> None:
    assert decode_value(encode_value(value)) == (value, True)


def test_nan_round_trips() -> None:
    value, exact = decode_value(encode_value(float("nan")))
    assert exact and value != value


@pytest.mark.parametrize(
    "text",
    ['{"s": [[1]]}', '{"t": 1}', '{"a": 1, "b": 2}', '{"q": []}', '{"d": [[1]]}', "[" * 5000 + "]" * 5000, "nope"],
)
def test_malformed_exact_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode_value({"exact": True, "json": text})


def test_an_exact_value_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="limit"):
        decode_value({"exact": True, "json": "[" + "0," * MAX_EXACT_CHARS + "0]"})


def test_sealed_json_reads_and_writes_exact_types() -> None:
    class Text(str):
        def __str__(self) -> str:
            raise AssertionError("no method of the value runs")

    class Number(int):
        def __repr__(self) -> str:
            raise AssertionError("no method of the value runs")

    tree = plain({"a": (Text("t"), Number(5)), 1: [None, True, 2.5]})
    assert dumps(tree) == '{"a":["t",5],"1":[null,true,2.5]}'
    assert type(tree["a"][0]) is str and type(tree["a"][1]) is int
    assert loads('{"x": [1, "\\u00e9", NaN]}')["x"][:2] == [1, "é"]
    for bad in ["[1] 2", "", "{", "[" * 100_000]:
        with pytest.raises(ValueError):
            loads(bad)
    with pytest.raises(TooLarge):
        plain(["x" * 100] * 100, 1000)
    with pytest.raises(TypeError):
        plain({"set": {1}})


def test_every_op_is_defined_once() -> None:
    constants = [value for name, value in vars(_schema).items() if name.isupper() and isinstance(value, str)]
    schema_ops = set(constants)
    assert len(schema_ops) == len(constants) == 22
    models = [getattr(_wire, name) for name in _wire.__all__ if isinstance(getattr(_wire, name), type)]
    model_ops = {
        model.model_fields["op"].annotation.__args__[0]
        for model in models
        if "op" in getattr(model, "model_fields", {})
    }
    assert model_ops <= schema_ops
    assert _wire.REQUEST_OPS <= schema_ops


def test_messages_are_checked_strictly() -> None:
    good: dict[str, Any] = {
        "op": "result",
        "id": 3,
        "stdout": "",
        "output_chars": 0,
        "value": None,
        "error": None,
        "error_type": None,
        "duration": 0.5,
        "final": None,
        "variables": ["x"],
    }
    assert isinstance(_wire.parse(good), _wire.Result)
    changes: list[dict[str, Any]] = [
        {"duration": "abc"},
        {"duration": float("nan")},
        {"id": True},
        {"variables": "x"},
        {"extra": 1},
        {"op": "bogus"},
        {"final": {"exact": "yes"}},
    ]
    for change in changes:
        with pytest.raises(_wire.ProtocolViolation):
            _wire.parse({**good, **change})
    assert json.loads(json.dumps(good)) == good


# -- the same over the Modal path (stand-in sandbox: supervisor relay, sandbox channel) -----------------


async def test_a_forged_reply_through_the_sandbox_relay_restarts_the_worker() -> None:
    from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend

    backend, pool = StandInBackend(), SandboxPool(max_sandboxes=4)
    repl = ModalREPL(backend=backend, pool=pool, cell_timeout_s=20.0, policy="unrestricted")
    try:
        await repl.start()
        await repl.load("context", CONTEXT)
        await repl.execute("lost = 1")
        forge = "os.write(fd, b'[not json\\n')\nimport time\ntime.sleep(5)"
        cell = await repl.execute(FIND_PROTOCOL_FD + forge)
        assert cell.restarted and "broke the protocol" in (cell.error or ""), cell
        assert "lost" in cell.lost_variables
        after = await repl.execute("len(context) * 2")
        assert after.error is None and after.value == "6"
        oversized = "data = b'x' * (33 * 1024 * 1024) + b'\\n'\nwhile data:\n    data = data[os.write(fd, data):]\n"
        cell = await repl.execute(FIND_PROTOCOL_FD + oversized + "import time\ntime.sleep(5)")
        assert cell.restarted and "longer than" in (cell.error or ""), cell
        after = await repl.execute("len(context) * 2")
        assert after.error is None and after.value == "6"
    finally:
        await repl.close()
        pool.close()
        for sandbox in backend.created:
            sandbox.terminate()


async def test_a_cell_cannot_start_threads_to_interleave_callbacks(plain_repl: LocalREPL) -> None:
    # Threads could interleave callbacks on the protocol; the lockdown refuses them from the first cell.
    plain_repl.register("llm_query", lambda prompt: f"<{prompt}>")
    cell = await plain_repl.execute("import threading\nthreading.Thread(target=llm_query, args=('x',)).start()")
    assert not cell.ok and "RuntimeError" in (cell.error or ""), cell.error
    assert (await plain_repl.execute("llm_query('y')")).value == "'<y>'"
    await assert_usable(plain_repl)


async def test_a_sandbox_worker_killed_between_cells_is_reported_by_the_next_cell() -> None:
    from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend

    backend, pool = StandInBackend(), SandboxPool(max_sandboxes=4)
    repl = ModalREPL(backend=backend, pool=pool, cell_timeout_s=20.0)
    try:
        await repl.start()
        await repl.load("context", CONTEXT)
        assert (await repl.execute("x = 41")).error is None
        pid = repl.info["pid"]
        os.kill(pid, signal.SIGKILL)
        for _ in range(500):
            if dead(pid) and not repl._channel.alive:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        cell = await repl.execute("x + 1")
        assert cell.restarted and "between cells" in (cell.error or "") and cell.lost_variables == ["x"]
        after = await repl.execute("len(context) * 2")
        assert after.error is None and after.value == "6"
    finally:
        await repl.close()
        pool.close()
        for sandbox in backend.created:
            sandbox.terminate()
