"""Sessions: follow-up asks share one live REPL and a digest; checkpoints save and restore them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import cast

import pytest
from pydantic import ValidationError

from rlm_integrations import RLM, RLMSession
from rlm_integrations.core.events import CellFinished
from rlm_integrations.errors import CheckpointError, UsageError
from rlm_integrations.lm import ScriptedLM

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = "\n".join(f"line {i}: value={i * 7}" for i in range(200))
COMPUTE = (
    "```repl\nvalues = [int(l.split('=')[1]) for l in context.splitlines()]\ntotal = sum(values)\nFINAL(total)\n```"
)
EXPECTED_TOTAL = sum(i * 7 for i in range(200))


def first_prompt(lm: ScriptedLM, call: int) -> str:
    """The first user message (the question) of call number `call`."""
    return next(m["content"] for m in lm.calls[call] if m["role"] == "user")


def cell_errors(result) -> list[str | None]:
    return [event.error for event in result.trajectory.iter_events("cell_end")]


def test_a_follow_up_reuses_a_variable_of_the_first_ask():
    lm = ScriptedLM([COMPUTE, "```repl\nFINAL(total * 2 + len(values))\n```"])
    with RLM(lm).session(CONTEXT) as session:
        first = session.ask("What is the sum of the values?")
        second = session.ask("Twice that, plus how many values there are?")
    assert first.answer == EXPECTED_TOTAL
    assert second.ok and second.answer == EXPECTED_TOTAL * 2 + 200
    assert cell_errors(second) == [None]  # no NameError: `total` and `values` were still there
    assert len(session.trajectory.events) == len(first.trajectory.events) + len(second.trajectory.events)


def test_the_second_ask_carries_a_digest_of_the_first():
    lm = ScriptedLM([COMPUTE, "```repl\nFINAL(total)\n```"])
    with RLM(lm).session(CONTEXT) as session:
        session.ask("What is the sum of the values?")
        session.ask("Repeat it.")
    assert "Earlier in this session" not in first_prompt(lm, 0)
    digest = first_prompt(lm, 1)
    assert "Q1: What is the sum of the values?" in digest
    assert f"A1 (completed): {EXPECTED_TOTAL}" in digest
    assert "variables it created: total, values" in digest or "variables it created: values, total" in digest
    assert digest.index("Earlier in this session") < digest.index("Question: Repeat it.")


def test_each_ask_has_its_own_budget_and_overrides():
    loop_reply = "```repl\nprint(len(context))\n```"
    lm = ScriptedLM([COMPUTE, loop_reply, "FINAL(1)", loop_reply, "```repl\nFINAL(total)\n```"])
    with RLM(lm).session(CONTEXT, max_iterations=5) as session:
        first = session.ask("Sum?")
        capped = session.ask("Count?", max_iterations=1)  # one turn, then the closing request
        third = session.ask("Sum again?")
        with pytest.raises(ValidationError, match="max_iterations"):
            session.ask("x", max_iterations=0)
    assert first.usage.calls == 1
    assert capped.status == "max_iterations" and capped.usage.calls == 2
    assert third.ok and third.answer == EXPECTED_TOTAL and third.iterations == 2
    assert third.usage.calls == 2  # its own count, not the session's running total
    with pytest.raises(ValidationError, match="not_a_field"):
        RLM(lm).session(CONTEXT, not_a_field=1)


def test_a_worker_restart_in_a_session_is_reported_and_the_digest_says_what_was_lost():
    lm = ScriptedLM([COMPUTE, "```repl\nwhile True:\n    pass\n```", "FINAL('gone')", "```repl\nFINAL(1)\n```"])
    with RLM(lm).session(CONTEXT, cell_timeout_s=1.0, max_iterations=2) as session:
        session.ask("Sum?")
        second = session.ask("Spin.")
        session.ask("Anything?")
    ends = cast(list[CellFinished], list(second.trajectory.iter_events("cell_end")))
    assert ends[0].restarted and {"total", "values"} <= set(ends[0].lost_variables)
    assert "variables it created that no longer exist: " in first_prompt(lm, 3)


async def test_an_async_session_as_context_manager():
    lm = ScriptedLM([COMPUTE, "```repl\nFINAL(total + 1)\n```"])
    async with RLM(lm).session(CONTEXT) as session:
        await session.aask("Sum?")
        result = await session.aask("Plus one?")
        with pytest.raises(UsageError, match="aask"):
            await asyncio.to_thread(session.ask, "sync now?")
    assert result.answer == EXPECTED_TOTAL + 1
    with pytest.raises(UsageError, match="closed"):
        await session.aask("after close?")


def test_an_empty_question_is_refused():
    with RLM(ScriptedLM([])).session("x") as session, pytest.raises(UsageError, match="non-empty"):
        session.ask("  ")


SAVEABLE = (
    "```repl\ndata = {'rows': [1, 2.5, None, True], 'name': 'x'}\nraw = b'\\x00\\xff'\ntext = context[:20]\n"
    "square = lambda n: n * n\npair = {1, 2}\nm = math\nFINAL('ok')\n```"
)


def test_save_lists_what_cannot_be_saved_and_load_tells_the_model(tmp_path: Path):
    path = tmp_path / "session.rlm"
    with RLM(ScriptedLM([SAVEABLE])).session(CONTEXT) as session:
        session.ask("Make some variables.")
        not_saved = session.save(path)
    assert set(not_saved) == {"square", "pair", "m"}
    assert "function" in not_saved["square"] and "set" in not_saved["pair"] and "module" in not_saved["m"]
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest["not_saved"]) == {"square", "pair", "m"}
    assert set(manifest["variables"]) == {"data", "raw", "text"}

    lm = ScriptedLM(["```repl\nFINAL([data, raw, text])\n```"])
    with RLMSession.load(path, RLM(lm)) as resumed:
        result = resumed.ask("Show them.")
    assert result.answer == [{"rows": [1, 2.5, None, True], "name": "x"}, b"\x00\xff", CONTEXT[:20]]
    told = first_prompt(lm, 0)
    assert "These variables were not restored: " in told
    assert all(name in told for name in ("square (", "pair (", "m ("))
    assert "Q1: Make some variables." in told
    assert len(resumed.trajectory.events) > len(result.trajectory.events)  # the saved events come first


def test_resume_in_another_process(tmp_path: Path):
    path = tmp_path / "session.rlm"
    with RLM(ScriptedLM([COMPUTE])).session(CONTEXT) as session:
        session.ask("Sum?")
        session.save(path)
    script = (
        "import sys\n"
        "from rlm_integrations import RLM, RLMSession\n"
        "from rlm_integrations.lm import ScriptedLM\n"
        "lm = ScriptedLM(['```repl\\nFINAL([total, len(values), context[:6]])\\n```'])\n"
        "with RLMSession.load(sys.argv[1], RLM(lm)) as s:\n"
        "    r = s.ask('What was the sum?')\n"
        "print(repr(r.answer)); print(r.status)\n"
    )
    done = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [repr([EXPECTED_TOTAL, 200, "line 0"]), "completed"]


@pytest.mark.parametrize("context", ["text ✓ " * 100, b"\x00\x01bytes", {"docs": ["a", "b"], "n": (1, 2)}, None])
def test_the_context_round_trips_with_its_hash(tmp_path: Path, context: object):
    path = tmp_path / "c.rlm"
    session = RLM(ScriptedLM([])).session(context)
    session.save(path)  # never asked: no REPL is started
    loaded = RLMSession.load(path, RLM(ScriptedLM([])))
    assert loaded.context == context and type(loaded.context) is type(context)
    assert loaded.config == session.config


def test_a_corrupt_checkpoint_is_a_typed_error(tmp_path: Path):
    path = tmp_path / "c.rlm"
    RLM(ScriptedLM([])).session("the context " * 1000, max_iterations=3).save(path)
    data = path.read_bytes()
    spot = data.index(b"the context the context")
    broken = tmp_path / "broken.rlm"
    broken.write_bytes(data[:spot] + b"THE" + data[spot + 3 :])
    with pytest.raises(CheckpointError, match=r"corrupt|CRC"):
        RLMSession.load(broken, RLM(ScriptedLM([])))
    (tmp_path / "junk.rlm").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable archive"):
        RLMSession.load(tmp_path / "junk.rlm", RLM(ScriptedLM([])))
    with zipfile.ZipFile(tmp_path / "other.rlm", "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format": "rlm-session-checkpoint", "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        RLMSession.load(tmp_path / "other.rlm", RLM(ScriptedLM([])))


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "c.rlm"
    RLM(ScriptedLM([])).session("first version").save(path)
    before = path.read_bytes()
    written: list[str] = []
    original = zipfile.ZipFile.writestr

    def failing(self, name, data, *args, **kwargs):
        written.append(str(getattr(name, "filename", name)))
        if len(written) == 2:
            raise OSError("disk full (simulated)")
        return original(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(OSError, match="simulated"):
        RLM(ScriptedLM([])).session("second version").save(path)
    assert written  # the failure happened mid-write
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.rlm"]
    monkeypatch.undo()
    assert RLMSession.load(path, RLM(ScriptedLM([]))).context == "first version"


def test_saving_into_a_missing_folder_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        RLM(ScriptedLM([])).session("x").save(tmp_path / "nope" / "c.rlm")


def test_cli_chat_reads_questions_until_exit_and_saves(tmp_path: Path):
    from rlm_integrations.demo import build_haystack

    haystack, secret = build_haystack(5_000, seed=3)
    source = tmp_path / "haystack.txt"
    source.write_text(haystack)
    saved = tmp_path / "chat.rlm"
    done = subprocess.run(
        [str(ROOT / ".venv/bin/rlm"), "chat", "-c", str(source), "--model", "scripted-demo", "--save", str(saved)],
        input="What is the secret code?\n\n/exit\nnever asked\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [secret]  # one answer: the blank line is skipped, nothing after /exit runs
    assert "A1 (completed" in done.stderr and "Saved:" in done.stderr
    assert saved.exists()
    resumed = RLMSession.load(saved, RLM(ScriptedLM([])))
    assert [turn.question for turn in resumed.turns] == ["What is the secret code?"]
    assert resumed.context == haystack


def test_public_export():
    assert sys.modules["rlm_integrations"].RLMSession is RLMSession


def test_a_value_too_large_to_read_back_exactly_is_listed_not_saved_as_its_repr(tmp_path: Path):
    make = "```repl\nbig = 'x' * 5_000_000\nsmall = big[:10]\nFINAL(len(big))\n```"
    with RLM(ScriptedLM([make])).session("ctx") as session:
        session.ask("Make a big string.")
        not_saved = session.save(tmp_path / "c.rlm")
    assert list(not_saved) == ["big"] and "too large" in not_saved["big"]
    loaded = RLMSession.load(tmp_path / "c.rlm", RLM(ScriptedLM([])))
    assert loaded._restore == {"small": "x" * 10}


def test_load_keeps_the_saved_config_and_applies_overrides(tmp_path: Path):
    RLM(ScriptedLM([])).session("ctx", max_iterations=7, max_llm_calls=9).save(tmp_path / "c.rlm")
    other = RLM(ScriptedLM([]))
    loaded = RLMSession.load(tmp_path / "c.rlm", other, max_llm_calls=3)
    assert (loaded.config.max_iterations, loaded.config.max_llm_calls) == (7, 3)
    with pytest.raises(ValidationError):
        RLMSession.load(tmp_path / "c.rlm", other, max_llm_calls=0)


async def test_the_blocking_face_works_inside_a_running_event_loop():
    lm = ScriptedLM([COMPUTE, "```repl\nFINAL(total)\n```"])
    with RLM(lm).session(CONTEXT) as session:  # as in a notebook: sync calls while a loop runs
        session.ask("Sum?")
        assert session.ask("Again?").answer == EXPECTED_TOTAL
