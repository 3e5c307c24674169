"""Reading `--context` arguments: files, folders, stdin, and URLs (refused clearly when offline)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rlm_integrations.errors import UsageError

__all__ = ["read_context"]

_MAX_FILE_BYTES = 512 * 1024 * 1024


def read_context(sources: list[str]) -> Any:
    """Load the context: one source gives its text; several (or a folder) give {name: text}.

    Raises:
        UsageError: a missing path, an unreadable URL, or binary data that is not text.
    """
    if not sources:
        return None
    documents: dict[str, str] = {}
    for source in sources:
        documents.update(_read_one(source))
    if len(sources) == 1 and len(documents) == 1 and not Path(sources[0]).is_dir():
        return next(iter(documents.values()))
    return documents


def _read_one(source: str) -> dict[str, str]:
    if source == "-":
        return {"stdin": sys.stdin.read()}
    if source.startswith(("http://", "https://")):
        return {source: _fetch(source)}
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))
        return {str(p.relative_to(path)): _read_text(p) for p in files if _looks_textual(p)}
    if path.is_file():
        return {path.name: _read_text(path)}
    raise UsageError(f"--context {source!r}: no such file or folder")


def _read_text(path: Path) -> str:
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise UsageError(f"{path} is larger than 512 MB; split it or pass a folder of smaller files")
    return path.read_text(encoding="utf-8", errors="replace")


def _looks_textual(path: Path) -> bool:
    with open(path, "rb") as file:
        return b"\0" not in file.read(4096)


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
