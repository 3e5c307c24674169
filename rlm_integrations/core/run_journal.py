"""The run journal of a resumable run: its file format, the context's fingerprint, the directory lock.

A run directory (see `rlm_integrations.core.resume`) holds ``journal.json`` (this module's
`RunJournal`: the question, a fingerprint of the context, the models, the config and one
`Attempt` per try), ``calls/`` (the disk call cache that replays finished model calls) and
``lock`` (an flock, released by the OS when the process dies).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlm_integrations.errors import RLMError, UsageError

__all__ = [
    "CALLS",
    "JOURNAL",
    "LOCK",
    "NOT_COMPARED",
    "Attempt",
    "ContextFingerprint",
    "ResumeMismatchError",
    "RunDirBusyError",
    "RunJournal",
    "RunJournalError",
    "fingerprint_context",
    "locked",
    "now",
    "read_journal",
    "write_journal",
]

FORMAT = "rlm-run-journal"
VERSION = 1
JOURNAL = "journal.json"
CALLS = "calls"
LOCK = "lock"
_CHUNK_CHARS = 1 << 20
NOT_COMPARED = frozenset({"cache"})
"""Config fields a resume may change (the cache is always the run directory's own)."""


class ResumeMismatchError(UsageError):
    """The run directory records a different run: another question, context, model or config.

    Nothing was run. Resume with exactly what the first attempt used, or start the new run
    in a new directory.

    Attributes:
        run_dir: the run directory.
        field: what differs: ``"query"``, ``"context"``, ``"model"``, ``"sub_model"`` or ``"config"``.
    """

    def __init__(self, message: str, *, run_dir: str, field: str) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.field = field


class RunDirBusyError(UsageError):
    """Another attempt (in this or another process) is running in the same run directory right now.

    Attributes:
        run_dir: the run directory.
    """

    def __init__(self, message: str, *, run_dir: str) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class RunJournalError(RLMError, ValueError):
    """A run journal that cannot be read: not JSON, not a journal, or from an unknown version.

    Attributes:
        path: the journal file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ContextFingerprint(BaseModel):
    """What identifies a context without storing it: its kind, its size and a sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["none", "str", "bytes", "json"]
    """``"str"`` (hashed as UTF-8), ``"bytes"``, ``"json"`` (lists, dicts, ...: their JSON text) or ``"none"``."""
    size: int
    """Characters (str), bytes (bytes) or characters of the JSON text (other data)."""
    sha256: str


class Attempt(BaseModel):
    """One attempt at a run: the first, or a resume."""

    model_config = ConfigDict(extra="forbid")

    number: int
    """1 for the first attempt, 2 for the first resume, and so on."""
    started_at: str
    """When the attempt began (ISO 8601, UTC)."""
    finished_at: str | None = None
    """When it ended; None while it runs, or when it was killed."""
    status: str | None = None
    """The result's status (``"completed"``, ``"max_iterations"``, ...), ``"cancelled"``, or ``"raised"``
    (an exception escaped); None while it runs, or when it was killed."""
    error: str | None = None
    """The result's error, or the exception that escaped."""
    steps: int = 0
    """Root steps (a turn and the cells it wrote) this attempt finished."""
    replayed_steps: int = 0
    """Of those, steps whose turn came from the record."""
    replayed_calls: int = 0
    """Model calls answered from the record: root turns, sub-calls and child runs' turns."""
    live_calls: int = 0
    """Model calls made to a model."""
    diverged_at: int | None = None
    """The first root step the record had finished but that this attempt had to make live (see the module
    docstring: a cell whose output changed on replay); None if the replay held."""


class RunJournal(BaseModel):
    """The contents of ``journal.json`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["rlm-run-journal"] = "rlm-run-journal"
    version: int = VERSION
    library: str = ""
    """The rlm-integrations release that started the run (another release may word its prompts differently, so
    its turns would miss the record: a resume with it logs a warning, and `diverged_at` shows what was lost)."""
    query: str
    context: ContextFingerprint
    model: dict[str, Any]
    """The root model's identity, as the call cache keys it."""
    sub_model: dict[str, Any]
    config: dict[str, Any]
    """The run's `RLMConfig`, less its ``cache`` (always the run directory's ``calls/``, wherever it is now)."""
    attempts: list[Attempt] = Field(default_factory=list)

    @property
    def recorded_steps(self) -> int:
        """The most root steps any attempt finished: the steps a resume can replay."""
        return max((attempt.steps for attempt in self.attempts), default=0)

    @property
    def completed(self) -> bool:
        """Whether an attempt ended with an answer (status ``"completed"``)."""
        return any(attempt.status == "completed" for attempt in self.attempts)


def fingerprint_context(context: Any) -> ContextFingerprint:
    """The fingerprint of `context` (a str is hashed in pieces, without a second full copy).

    Raises:
        TypeError: a context that is not str, bytes, None or JSON-compatible data.
    """
    digest = hashlib.sha256()
    if context is None:
        return ContextFingerprint(kind="none", size=0, sha256=digest.hexdigest())
    if isinstance(context, str):
        for start in range(0, len(context), _CHUNK_CHARS):
            digest.update(context[start : start + _CHUNK_CHARS].encode("utf-8", "surrogatepass"))
        return ContextFingerprint(kind="str", size=len(context), sha256=digest.hexdigest())
    if isinstance(context, bytes | bytearray | memoryview):
        data = bytes(context)
        digest.update(data)
        return ContextFingerprint(kind="bytes", size=len(data), sha256=digest.hexdigest())
    text = json.dumps(context, ensure_ascii=False, separators=(",", ":"), allow_nan=True, default=_json_default)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return ContextFingerprint(kind="json", size=len(text), sha256=digest.hexdigest())


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"__bytes__": bytes(value).hex()}
    raise TypeError(f"a context item of type {type(value).__name__} cannot be fingerprinted; convert it first")


def read_journal(run_dir: str | os.PathLike[str]) -> RunJournal | None:
    """The journal in `run_dir`, or None if there is none.

    Raises:
        RunJournalError: the file is there but is not a readable journal of a known version.
    """
    path = Path(run_dir) / JOURNAL
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise RunJournalError(f"{path} is not JSON ({error}); it is not a run journal", path=str(path)) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise RunJournalError(f"{path} is not a run journal (no format {FORMAT!r})", path=str(path))
    if raw.get("version") != VERSION:
        raise RunJournalError(
            f"{path} is a run journal of version {raw.get('version')!r}; this version reads {VERSION}. "
            "Resume it with the release that wrote it, or start over in a new directory",
            path=str(path),
        )
    try:
        return RunJournal.model_validate(raw)
    except ValidationError as error:
        raise RunJournalError(f"{path} is a damaged run journal: {error}", path=str(path)) from None


def write_journal(run_dir: Path, journal: RunJournal) -> None:
    """Write the journal to a temporary file beside it, flushed to disk, then rename it over the old one.

    The flush (once per root step, a few milliseconds beside a model turn) keeps a power cut
    from leaving an empty journal behind the rename.
    """
    handle, temporary = tempfile.mkstemp(prefix=".journal-", suffix=".tmp", dir=run_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(journal.model_dump_json(indent=2))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, run_dir / JOURNAL)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds (the journal's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock (released by the OS if the process dies)."""
    file: IO[bytes] = open(run_dir / LOCK, "ab")  # held for the whole block
    try:
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirBusyError(
                    f"another attempt is running in {run_dir} right now; wait for it to end (or stop it) first",
                    run_dir=str(run_dir),
                ) from None
        yield
    finally:
        file.close()  # closing the file releases the lock
