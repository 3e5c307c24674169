"""The session checkpoint file: one zip archive, written atomically, read with every check.

Members:

- ``manifest.json``: format and version, the config, the digest of earlier asks, which
  variables were saved and which were not (and why), and a sha256 for every other member.
- ``context.txt`` (str, UTF-8), ``context.bin`` (bytes) or ``context.json`` (other data,
  tagged JSON): the context, stored once, uncompressed.
- ``variables/NAME.json``: one saved REPL variable each, as tagged JSON (`repl.wire.codec`).
- ``trajectory.jsonl``: the session's events, one per line (the `Trajectory` format).

Nothing is ever unpickled: every member is text parsed by `json` or the event schema.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlm_integrations.core.events import EventAdapter
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.errors import CheckpointError, UsageError
from rlm_integrations.repl.wire.codec import decode_value, encode_value

__all__ = ["FORMAT", "VERSION", "Checkpoint", "read_checkpoint", "write_checkpoint"]

FORMAT = "rlm-session-checkpoint"
VERSION = 1
_NO_LIMIT = 1 << 62


@dataclass
class Checkpoint:
    """What a checkpoint holds (see the module docstring)."""

    config: dict[str, Any]
    context: Any
    turns: list[dict[str, Any]] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    not_saved: dict[str, str] = field(default_factory=dict)
    trajectory: Trajectory = field(default_factory=Trajectory)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tagged(value: Any, what: str) -> bytes:
    encoded = encode_value(value, _NO_LIMIT)
    if not encoded.get("exact"):
        raise UsageError(f"{what} is not plain data (str, bytes, numbers, lists, dicts, ...), so it cannot be saved")
    return str(encoded["json"]).encode("utf-8")


def _context_member(context: Any) -> tuple[str, str, bytes]:
    if context is None:
        return "none", "", b""
    if isinstance(context, str):
        return "str", "context.txt", context.encode("utf-8", "surrogatepass")
    if isinstance(context, bytes):
        return "bytes", "context.bin", context
    return "json", "context.json", _tagged(context, "the context")


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path`: to a temporary file in the same folder, then renamed over it.

    Raises:
        UsageError: the folder does not exist, or the context is not plain data.
        OSError: the file cannot be written (nothing is left behind).
    """
    if not path.parent.is_dir():
        raise UsageError(f"cannot save a checkpoint to {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    kind, context_name, context_data = _context_member(checkpoint.context)
    members: list[tuple[str, bytes, int]] = []
    if context_name:
        members.append((context_name, context_data, zipfile.ZIP_STORED))
    saved: dict[str, str] = {}
    for name, value in checkpoint.variables.items():
        data = _tagged(value, f"variable {name!r}")
        member = f"variables/{name}.json"
        members.append((member, data, zipfile.ZIP_DEFLATED))
        saved[name] = _sha256(data)
    events = checkpoint.trajectory.to_jsonl().encode("utf-8")
    members.append(("trajectory.jsonl", events, zipfile.ZIP_DEFLATED))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "config": checkpoint.config,
        "context": {"kind": kind, "member": context_name, "bytes": len(context_data), "sha256": _sha256(context_data)},
        "turns": checkpoint.turns,
        "variables": saved,
        "not_saved": checkpoint.not_saved,
        "trajectory": {"events": len(checkpoint.trajectory.events), "sha256": _sha256(events)},
    }
    members.append(("manifest.json", json.dumps(manifest, indent=1).encode("utf-8"), zipfile.ZIP_DEFLATED))
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            with zipfile.ZipFile(file, "w") as archive:
                for name, data, compression in members:
                    archive.writestr(name, data, compress_type=compression)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and check a checkpoint written by `write_checkpoint`.

    Raises:
        CheckpointError: not a checkpoint, corrupt, or an unknown version (the message says which).
        OSError: the file cannot be read.
    """

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}; it cannot be loaded (save the session again)", path=str(path))

    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(_member(archive, "manifest.json", fail))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise fail("not a session checkpoint (no rlm-session-checkpoint manifest)")
            if manifest.get("version") != VERSION:
                raise fail(f"format version {manifest.get('version')!r}, but this library reads version {VERSION}")
            context = _read_context(archive, manifest["context"], fail)
            variables: dict[str, Any] = {}
            for name, digest in dict(manifest["variables"]).items():
                data = _checked(archive, f"variables/{name}.json", digest, fail)
                variables[name] = decode_value({"json": data.decode("utf-8"), "exact": True}, _NO_LIMIT)[0]
            lines = _checked(archive, "trajectory.jsonl", manifest["trajectory"]["sha256"], fail).splitlines()
            events = [EventAdapter.validate_json(line) for line in lines if line.strip()]
            return Checkpoint(
                config=dict(manifest["config"]),
                context=context,
                turns=[dict(turn) for turn in manifest["turns"]],
                variables=variables,
                not_saved={str(k): str(v) for k, v in dict(manifest["not_saved"]).items()},
                trajectory=Trajectory(events=events),
            )
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise fail(f"not a readable archive ({error})") from None
    except (KeyError, TypeError, ValueError, ValidationError) as error:  # json, decode and schema errors
        raise fail(f"a malformed member ({type(error).__name__}: {str(error)[:200]})") from None


def _member(archive: zipfile.ZipFile, name: str, fail: Any) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise fail(f"the member {name!r} is missing") from None


def _checked(archive: zipfile.ZipFile, name: str, digest: Any, fail: Any) -> bytes:
    data = _member(archive, name, fail)
    if _sha256(data) != digest:
        raise fail(f"the member {name!r} does not match its sha256 (the file is corrupt)")
    return data


def _read_context(archive: zipfile.ZipFile, entry: dict[str, Any], fail: Any) -> Any:
    kind = entry["kind"]
    if kind == "none":
        return None
    data = _checked(archive, str(entry["member"]), entry["sha256"], fail)
    if kind == "str":
        return data.decode("utf-8", "surrogatepass")
    if kind == "bytes":
        return data
    if kind == "json":
        return decode_value({"json": data.decode("utf-8"), "exact": True}, _NO_LIMIT)[0]
    raise fail(f"an unknown context kind {kind!r}")
