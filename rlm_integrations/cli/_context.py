"""Reading `--context` arguments: files, folders, stdin, and URLs (refused clearly when offline)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm_integrations.errors import UsageError

__all__ = ["read_context"]

_MAX_FILE_BYTES = 512 * 1024 * 1024
_SNIFF_BYTES = 4096

Notice = Callable[[str], None]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def read_context(sources: list[str], *, notice: Notice = _stderr) -> Any:
    """Load the context: one file gives its text; a folder or several sources give {name: text}.

    Keys are paths: relative to the folder when one folder is given, otherwise each file's
    path as given (a folder's files under the folder's path), so two files with the same
    name from different folders stay apart. The same file given twice is read once. Binary
    files inside a folder are skipped, each with a notice.

    Raises:
        UsageError: a missing path, an unreadable URL, or a binary file named directly.
    """
    if not sources:
        return None
    if len(sources) == 1 and sources[0] not in ("-",) and not sources[0].startswith(("http://", "https://")):
        path = Path(sources[0]).expanduser()
        if path.is_dir():
            return _read_folder(path, None, notice)
        if path.is_file():
            return _read_file(path)
    documents: dict[str, str] = {}
    seen: set[Path] = set()
    for source in sources:
        for key, text in _read_one(source, seen, notice).items():
            if key in documents:  # different sources that name the same key: never drop one silently
                raise UsageError(f"--context: two sources both give {key!r}; pass them under different paths")
            documents[key] = text
    return documents


def _read_one(source: str, seen: set[Path], notice: Notice) -> dict[str, str]:
    if source == "-":
        return {"stdin": sys.stdin.read()}
    if source.startswith(("http://", "https://")):
        return {source: _fetch(source)}
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, os.path.normpath(source), notice, seen)
    if path.is_file():
        real = path.resolve()
        if real in seen:
            return {}
        seen.add(real)
        return {os.path.normpath(source): _read_file(path)}
    raise UsageError(f"--context {source!r}: no such file or folder")


def _read_folder(folder: Path, prefix: str | None, notice: Notice, seen: set[Path] | None = None) -> dict[str, str]:
    documents: dict[str, str] = {}
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        relative = path.relative_to(folder).as_posix()
        key = relative if prefix is None else f"{Path(prefix).as_posix()}/{relative}"
        if seen is not None:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
        if not _looks_textual(path):
            notice(f"skipped binary file: {path}")
            continue
        documents[key] = _read_text(path)
    return documents


def _read_file(path: Path) -> str:
    if not _looks_textual(path):
        raise UsageError(f"--context {str(path)!r} is a binary file; pass text (convert it first, e.g. to .txt)")
    return _read_text(path)


def _read_text(path: Path) -> str:
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise UsageError(f"{path} is larger than 512 MB; split it or pass a folder of smaller files")
    return path.read_text(encoding="utf-8", errors="replace")


def _looks_textual(path: Path) -> bool:
    """No NUL byte in the first 4 KiB (the test git uses): text in any 8-bit encoding passes."""
    with open(path, "rb") as file:
        return b"\0" not in file.read(_SNIFF_BYTES)


def _fetch(url: str) -> str:
    import httpx

    try:
        response = httpx.get(url, timeout=15.0, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise UsageError(
            f"could not fetch {url}: {error}. If this machine is offline, "
            "download the file elsewhere and pass its path."
        ) from error
    return response.text
