"""Resumable runs (`core/resume.py`): a run killed mid-way goes on from its last complete step.

The first two tests kill a real process with SIGKILL while its run waits on the fake
OpenAI server, then resume in this process and count what the server is asked again.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import block, turn_of

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.core.resume import (
    ResumableRun,
    ResumeMismatchError,
    RunDirBusyError,
    RunJournalError,
    fingerprint_context,
    read_journal,
    resumable,
)
from rlm_integrations.core.run_journal import LOCK
from rlm_integrations.errors import ModelError, RunCancelled, UsageError
from rlm_integrations.lm import Message, OpenAICompatibleModel, ScriptedLM
from rlm_integrations.testing import FakeOpenAIServer, Fault

QUERY = "What is the total size of the parts, and how many parts are there?"
CONTEXT = "alpha|beta|gamma-delta"
ANSWER = f"{len('alpha') + len('beta') + len('gamma-delta')}:3"
SCRIPT = [
    block("parts = context.split('|')\nprint(len(parts))"),
    block("sizes = [llm_query(p) for p in parts]\nprint(sizes)"),
    block("total = sum(int(s) for s in sizes)\nprint(total)"),
    block("FINAL(f'{total}:{len(parts)}')"),  # only right if `total` and `parts` were rebuilt
]
CELL_TIMEOUT_S = 30.0

CHILD = """
import sys
from rlm_integrations import RLM, RLMConfig
from rlm_integrations.core.resume import ResumableRun
from rlm_integrations.lm import OpenAICompatibleModel

api_base, run_dir, query, context, timeout = sys.argv[1:6]
options = dict(base_url=api_base, api_key="sk-test", timeout_s=60.0, max_retries=0)
rlm = RLM(
    OpenAICompatibleModel("root-alias", **options),
    OpenAICompatibleModel("sub-alias", **options),
    config=RLMConfig(cell_timeout_s=float(timeout)),
)
ResumableRun(rlm, run_dir).completion(query, context)
print("the run finished: it should have been killed", file=sys.stderr)
"""


def lite_rlm(server: FakeOpenAIServer) -> RLM:
    """The same RLM as the child process builds, in this process."""
    options: dict[str, Any] = {"base_url": server.api_base, "api_key": "sk-test", "timeout_s": 60.0, "max_retries": 0}
    return RLM(
        OpenAICompatibleModel("root-alias", **options),
        OpenAICompatibleModel("sub-alias", **options),
        config=RLMConfig(cell_timeout_s=CELL_TIMEOUT_S),
    )


def request_name(body: dict[str, Any]) -> str:
    """``root:N`` for the root model's N-th turn (from 0), ``sub:PROMPT`` for a sub-call."""
    if body["model"] == "sub-alias":
        return f"sub:{body['messages'][-1]['content']}"
    return f"root:{turn_of(body['messages'])}"


class KillSwitch:
    """Scripted replies; the request named `kill_at` is held (never answered) and reported, once."""

    def __init__(self, kill_at: str) -> None:
        self.kill_at = kill_at
        self.reached = threading.Event()
        self.armed = True

    def __call__(self, body: dict[str, Any]) -> str | Fault:
        name = request_name(body)
        if self.armed and name == self.kill_at:
            self.armed = False
            self.reached.set()
            return Fault.slow(120.0)  # the child waits here until it is killed
        if name.startswith("sub:"):
            return str(len(name.removeprefix("sub:")))
        return SCRIPT[int(name.removeprefix("root:"))]


def kill_mid_run(server: FakeOpenAIServer, switch: KillSwitch, run_dir: Path) -> None:
    """Run the child until the server holds the `kill_at` request, then SIGKILL it."""
    command = [sys.executable, "-c", CHILD, server.api_base, str(run_dir), QUERY, CONTEXT, str(CELL_TIMEOUT_S)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not switch.reached.wait(0.2):
            if child.poll() is not None:
                raise AssertionError(f"the child ended before the kill point: {child.communicate()[1][-3000:]}")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        child.communicate()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "asked_again", "steps_done"),
    [
        ("root:3", ["root:3"], 3),  # between steps: only the turn the child was waiting for
        # inside turn 2's cell, during its second sub-call: the cell runs again, its first sub-call replayed
        ("sub:beta", ["sub:beta", "sub:gamma-delta", "root:2", "root:3"], 1),
    ],
    ids=["between-steps", "inside-a-cell"],
)
def test_a_killed_process_resumes_from_its_last_complete_step(
    tmp_path: Path, kill_at: str, asked_again: list[str], steps_done: int
) -> None:
    switch = KillSwitch(kill_at)
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(switch) as server:
        kill_mid_run(server, switch, run_dir)
        before = len(server.requests)
        held = server.requests[-1].body
        assert held is not None and request_name(held) == kill_at

        killed = read_journal(run_dir)
        assert killed is not None and len(killed.attempts) == 1
        assert killed.attempts[0].status is None and killed.attempts[0].finished_at is None  # it never ended
        assert killed.attempts[0].steps == steps_done

        result = ResumableRun(lite_rlm(server), run_dir).completion(QUERY, CONTEXT)
        again = [request.body for request in server.requests[before:] if request.body is not None]

    assert result.status == "completed"
    assert result.answer == ANSWER  # built from `parts` and `total`, computed before the kill
    assert [request_name(body) for body in again] == asked_again  # nothing finished before the kill is asked again
    assert again[0]["messages"] == held["messages"]  # the same prompt: the rebuilt REPL printed the same outputs
    attempt = read_journal(run_dir).attempts[-1]  # type: ignore[union-attr]
    assert (attempt.number, attempt.status, attempt.steps, attempt.diverged_at) == (2, "completed", 4, None)
    assert attempt.live_calls == len(asked_again)
    assert (
        result.usage.cached_calls == attempt.replayed_calls == len(SCRIPT) + 3 - len(asked_again)
    )  # 4 turns, 3 sub-calls


def test_a_changed_context_or_question_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(KillSwitch("never")) as server:
        rlm = lite_rlm(server)
        first = ResumableRun(rlm, run_dir).completion(QUERY, CONTEXT)
        asked = len(server.requests)
        with pytest.raises(ResumeMismatchError, match="another context") as changed:
            ResumableRun(rlm, run_dir).completion(QUERY, CONTEXT + "|epsilon")
        with pytest.raises(ResumeMismatchError, match="another question"):
            ResumableRun(rlm, run_dir).completion(QUERY + " Exactly?", CONTEXT)
        assert len(server.requests) == asked  # refused before any call
    assert first.answer == ANSWER
    assert changed.value.field == "context" and changed.value.run_dir == str(run_dir)
    assert len(read_journal(run_dir).attempts) == 1  # type: ignore[union-attr]


# -- in-process tests, with scripted models --------------------------------------------------------


def sizes(messages: list[Message]) -> str:
    return str(len(messages[-1]["content"]))


def failing_at(turn: int, script: list[str]) -> ScriptedLM:
    """A root model that answers `script` and fails (a provider outage) at `turn` (from 0)."""
    return ScriptedLM([*script[:turn], ModelError("provider down", model="root")], name="root")


def refusing(name: str) -> ScriptedLM:
    def reply(messages: list[Message]) -> str:
        raise AssertionError(f"{name} was called: {messages[-1]['content'][:80]}")

    return ScriptedLM(reply, name=name)


def make(root: ScriptedLM, sub: ScriptedLM | None = None, **fields: Any) -> RLM:
    fields.setdefault("cell_timeout_s", CELL_TIMEOUT_S)
    return RLM(root, sub or ScriptedLM(sizes, name="sub"), config=RLMConfig(**fields))


def test_a_failed_run_resumes_without_asking_again(tmp_path: Path) -> None:
    run = resumable(make(failing_at(3, SCRIPT)), tmp_path / "run")
    failed = run.completion(QUERY, CONTEXT)
    assert failed.status == "error"

    root = ScriptedLM(SCRIPT[3:], name="root")
    result = ResumableRun(make(root, refusing("sub")), tmp_path / "run").completion(QUERY, CONTEXT)
    assert (result.status, result.answer) == ("completed", ANSWER)
    assert len(root.calls) == 1
    assert result.usage.calls == 1 and result.usage.cached_calls == 6  # 3 turns and 3 sub-calls replayed
    journal = run.journal
    assert journal is not None and [a.status for a in journal.attempts] == ["error", "completed"]
    assert journal.recorded_steps == 4 and journal.completed
    assert journal.attempts[1].replayed_steps == 3


async def test_a_cancelled_attempt_is_recorded_and_resumes(tmp_path: Path) -> None:
    reached = asyncio.Event()

    async def reply(messages: list[Message]) -> str:
        turn = turn_of(messages)
        if turn == 2:
            reached.set()
            await asyncio.sleep(3600)  # cancelled while waiting for the model
        return SCRIPT[turn]

    run = ResumableRun(make(ScriptedLM(reply, name="root")), tmp_path)
    task = asyncio.create_task(run.acompletion(QUERY, CONTEXT))
    await asyncio.wait_for(reached.wait(), 60)
    task.cancel()
    with pytest.raises(RunCancelled):
        await task
    journal = run.journal
    assert journal is not None and journal.attempts[0].status == "cancelled" and journal.attempts[0].steps == 2

    root = ScriptedLM(SCRIPT[2:], name="root")
    result = await ResumableRun(make(root, refusing("sub")), tmp_path).acompletion(QUERY, CONTEXT)
    assert result.answer == ANSWER and len(root.calls) == 2


def test_a_finished_run_replays_whole_and_free(tmp_path: Path) -> None:
    first = ResumableRun(make(ScriptedLM(SCRIPT, name="root")), tmp_path).completion(QUERY, CONTEXT)
    again = ResumableRun(make(refusing("root"), refusing("sub")), tmp_path).completion(QUERY, CONTEXT)
    assert first.answer == again.answer == ANSWER
    assert again.usage.calls == 0 and again.usage.cached_calls == first.usage.calls == 7


def test_a_cell_that_changes_on_replay_is_reported_as_divergence(tmp_path: Path) -> None:
    script = [
        block("import random\nnoise = random.random()\nprint(noise)"),  # prints something else on replay
        block("print('step 2')"),
        block("print('step 3')"),
        block("FINAL('done')"),
    ]
    ResumableRun(make(failing_at(3, script)), tmp_path).completion(QUERY, CONTEXT)
    root = ScriptedLM(script[1:], name="root")
    result = ResumableRun(make(root), tmp_path).completion(QUERY, CONTEXT)
    assert result.answer == "done"
    assert len(root.calls) == 3  # turn 1 replayed; turn 2's prompt holds the new noise, so it and all after are live
    attempt = read_journal(tmp_path).attempts[-1]  # type: ignore[union-attr]
    assert attempt.diverged_at == 2 and attempt.replayed_steps == 1


def test_the_recorded_config_is_required_or_reused(tmp_path: Path) -> None:
    ResumableRun(make(failing_at(1, SCRIPT)), tmp_path).completion(QUERY, CONTEXT, max_iterations=7)
    with pytest.raises(ResumeMismatchError, match="max_iterations") as mismatch:
        ResumableRun(make(ScriptedLM(SCRIPT[1:], name="root")), tmp_path).completion(QUERY, CONTEXT)
    assert mismatch.value.field == "config"
    root = ScriptedLM(SCRIPT[1:], name="root")
    result = ResumableRun(make(root), tmp_path).resume(CONTEXT)  # question and config from the journal
    assert result.answer == ANSWER
    assert len(root.calls) == 3  # turn 1 replayed: its prompt (which names the 7 turns) matched the record


def test_another_model_is_refused(tmp_path: Path) -> None:
    ResumableRun(make(failing_at(1, SCRIPT)), tmp_path).completion(QUERY, CONTEXT)
    with pytest.raises(ResumeMismatchError, match="model 'root'") as mismatch:
        ResumableRun(make(ScriptedLM(SCRIPT, name="bigger-root")), tmp_path).completion(QUERY, CONTEXT)
    assert mismatch.value.field == "model"


def test_a_busy_directory_is_refused(tmp_path: Path) -> None:
    tmp_path.joinpath(LOCK).touch()
    with open(tmp_path / LOCK, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process's attempt holds it
        with pytest.raises(RunDirBusyError):
            ResumableRun(make(refusing("root")), tmp_path).completion(QUERY, CONTEXT)
    result = ResumableRun(make(ScriptedLM(SCRIPT, name="root")), tmp_path).completion(QUERY, CONTEXT)
    assert result.answer == ANSWER  # free once the holder lets go


def test_a_foreign_directory_and_a_damaged_journal_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        ResumableRun(make(refusing("root")), tmp_path).completion(QUERY, CONTEXT)
    (tmp_path / "journal.json").write_text('{"format": "rlm-run-journal", "version": 99}')
    with pytest.raises(RunJournalError, match="version 99"):
        ResumableRun(make(refusing("root")), tmp_path).completion(QUERY, CONTEXT)
    (tmp_path / "journal.json").write_text("{not json")
    with pytest.raises(RunJournalError, match="not JSON"):
        read_journal(tmp_path)
    with pytest.raises(UsageError, match="nothing to resume"):
        ResumableRun(make(refusing("root")), tmp_path / "empty").resume(CONTEXT)


def test_a_journal_survives_json_round_trip_and_names_each_attempt(tmp_path: Path) -> None:
    ResumableRun(make(failing_at(2, SCRIPT)), tmp_path).completion(QUERY, CONTEXT)
    raw = json.loads((tmp_path / "journal.json").read_text())
    assert raw["query"] == QUERY and raw["config"]["cache"] is None
    assert raw["context"] == fingerprint_context(CONTEXT).model_dump()
    assert raw["attempts"][0]["steps"] == 2 and raw["attempts"][0]["live_calls"] == 5


def test_fingerprints_tell_contexts_apart() -> None:
    prints = [
        fingerprint_context(value)
        for value in (None, "", "abc", b"abc", ["abc"], {"a": 1, "b": 2}, {"b": 2, "a": 1}, "x" * (3 << 20))
    ]
    assert len({(p.kind, p.sha256) for p in prints}) == len(prints)
    assert fingerprint_context("x" * (3 << 20)) == prints[-1]  # hashed in pieces, the same each time
    assert fingerprint_context([b"\x00"]).kind == "json"
    with pytest.raises(TypeError, match="cannot be fingerprinted"):
        fingerprint_context([object()])
