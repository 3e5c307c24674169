"""The call cache: deterministic replay of model calls, in memory or on disk.

A call is keyed by the model's identity (its class and name, plus a `cache_identity`
attribute when the model has one), the full messages and the call parameters, hashed
from a canonical JSON dump (sorted keys, no Python `hash`), so a key is the same in
every process. A hit replays the recorded completion whatever the temperature: replay
is the point (benchmark reruns, optimizer experiments), not a guess that a call was
deterministic.

How the engine uses it (`Engine(cache=...)`):

* the tree's models are wrapped once in `CachedModel`, so every call the tree makes
  (root turns, `llm_query`, `llm_query_batched`, child runs' turns, closing requests)
  goes through one shared `CallCache`;
* before a sub-call or a root turn reserves any budget, the engine looks the call up
  (`CallCache.lookup`); a hit takes no call slot and no reservation and is counted only
  as a cached call (`Usage.cached_calls`), with zero tokens and cost;
* a call that was not known up front (a closing request, whose reserve is held from
  the start of the run) but turns out to be a hit gives its reservation back instead of
  settling it;
* identical calls in flight at once are coalesced: one reaches the model, the others
  wait for it and replay its completion (a waiter gives back what it reserved). A
  failed call is never stored; its waiters then make the call themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rlm_integrations.lm.protocol import Completion, LanguageModel, Message, TokenUsage

__all__ = [
    "CachedModel",
    "CallCache",
    "CallNote",
    "DiskStore",
    "MemoryStore",
    "cache_for",
    "call_key",
    "check_cache_spec",
    "watch_call",
]

KEY_VERSION = 1
"""Bumped when the key's recipe changes, so old disk entries simply miss."""
MEMORY_ENTRIES = 4_096
"""Entries the in-memory cache keeps (least recently used are dropped first)."""


def check_cache_spec(value: Any) -> str | None:
    """Validate `RLMConfig.cache`: None, ``"memory"``, or a directory path (str or `os.PathLike`).

    Raises:
        ValueError: any other value, or a path that exists and is not a directory.
    """
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'cache must be None, "memory" or a directory path (str or os.PathLike), got {value!r}')
    if value == "memory":
        return value
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValueError(f"cache path {value!r} exists and is not a directory; pass a directory (or a new path)")
    return value


def _canonical(value: Any) -> Any:
    """Something JSON can dump the same way in every process (unknown objects: their type and repr)."""
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return {"__type__": f"{type(value).__module__}.{type(value).__qualname__}", "repr": repr(value)}


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies `model` in a key: its class, its name and its optional `cache_identity`."""
    kind = type(model)
    return {
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "name": str(getattr(model, "name", "")),
        "identity": _canonical(getattr(model, "cache_identity", None)),
    }


def call_key(model: Any, messages: Sequence[Message], params: dict[str, Any]) -> str:
    """A stable key (sha256 hex) for one call of `model` with `messages` and `params`."""
    payload = {
        "version": KEY_VERSION,
        "model": model_identity(model),
        "messages": _canonical([dict(message) for message in messages]),
        "params": _canonical(params),
    }
    dumped = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()


class Store(Protocol):
    """Where completions are kept, as JSON text under their key."""

    def get(self, key: str) -> str | None:
        """The stored text, or None."""
        ...

    def set(self, key: str, value: str) -> None:
        """Store `value` under `key`."""
        ...


class MemoryStore:
    """A bounded least-recently-used store in this process."""

    def __init__(self, max_entries: int = MEMORY_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        """The stored text (and mark it recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: str) -> None:
        """Store `value`, dropping the least recently used entry past the bound."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class DiskStore:
    """A `diskcache.Cache` in `directory` (SQLite plus files; safe across processes)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        import diskcache  # type: ignore[import-untyped]

        self.directory = Path(directory)
        self._cache = diskcache.Cache(str(self.directory))

    def get(self, key: str) -> str | None:
        """The stored text, or None."""
        value = self._cache.get(key)
        return value if isinstance(value, str) else None

    def set(self, key: str, value: str) -> None:
        """Store `value` (plain text: nothing is pickled)."""
        self._cache.set(key, value)

    def close(self) -> None:
        """Close the underlying database."""
        self._cache.close()


@dataclass
class CallNote:
    """What the cache did for the model call made in this task (read by the engine after the call)."""

    pinned: tuple[str, Completion] | None = None
    cached: bool = False


_note: ContextVar[CallNote | None] = ContextVar("rlm_cache_note", default=None)


@contextmanager
def watch_call(pinned: tuple[str, Completion] | None = None) -> Iterator[CallNote]:
    """Watch the model call made inside the block; `pinned` is a hit found up front, replayed as is."""
    note = CallNote(pinned=pinned)
    token = _note.set(note)
    try:
        yield note
    finally:
        _note.reset(token)


def replayed(completion: Completion) -> Completion:
    """A hit as the caller sees it: the recorded text, and nothing spent."""
    return Completion(text=completion.text, usage=TokenUsage(cost_usd=0.0), model=completion.model)


class CallCache:
    """Completions by call key, shared by a whole recursion tree (and by every run of one `RLM`).

    Args:
        store: where entries live (`MemoryStore` or `DiskStore`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._inflight: dict[str, asyncio.Event] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Completion | None:
        """The completion stored under `key`, or None (an unreadable entry counts as a miss)."""
        text = self.store.get(key)
        if text is None:
            return None
        try:
            return Completion.model_validate_json(text)
        except ValueError:
            return None

    def put(self, key: str, completion: Completion) -> None:
        """Store a successful completion."""
        self.store.set(key, completion.model_dump_json())

    async def lookup(self, key: str) -> Completion | None:
        """The stored completion, after any identical call in flight has finished; None on a miss."""
        while (pending := self._inflight.get(key)) is not None:
            await pending.wait()
        return self.get(key)

    async def complete(self, model: LanguageModel, messages: Sequence[Message], params: dict[str, Any]) -> Completion:
        """Replay the call from the cache, or make it once (coalescing identical calls) and store it."""
        key = call_key(model, messages, params)
        note = _note.get()
        if note is not None and note.pinned is not None and note.pinned[0] == key:
            return self._hit(note, note.pinned[1])
        while True:
            hit = await self.lookup(key)
            if hit is not None:
                return self._hit(note, hit)
            if key not in self._inflight:
                break
        done = self._inflight[key] = asyncio.Event()
        self.misses += 1
        try:
            completion = await model.acomplete(messages, **params)
            self.put(key, completion)
            return completion
        finally:
            del self._inflight[key]
            done.set()

    def _hit(self, note: CallNote | None, completion: Completion) -> Completion:
        self.hits += 1
        if note is not None:
            note.cached = True
        return replayed(completion)

    def wrap(self, model: LanguageModel) -> LanguageModel:
        """`model` with its calls going through this cache (unchanged if it caches its own calls)."""
        if isinstance(model, CachedModel) or _has_own_cache(model):
            return model
        return CachedModel(model, self)


def _has_own_cache(model: Any) -> bool:
    """A DSPy LM adapter whose `dspy.LM` caches its calls: DSPy's cache serves them, ours is skipped."""
    lm = getattr(model, "lm", None)
    if lm is None or not type(lm).__module__.startswith("dspy"):
        return False
    return bool(getattr(lm, "cache", False))


class CachedModel:
    """A `LanguageModel` whose calls go through a `CallCache`; everything else is the wrapped model's."""

    def __init__(self, model: LanguageModel, cache: CallCache) -> None:
        self.model = model
        self.cache = cache
        self.name = model.name
        self.context_window = model.context_window

    def key(self, messages: Sequence[Message], params: dict[str, Any]) -> str:
        """The cache key of a call with `messages` and `params`."""
        return call_key(self.model, messages, params)

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """The wrapped model's completion, replayed from the cache when the same call was made before."""
        return await self.cache.complete(self.model, messages, params)

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Blocking form of `acomplete`."""
        from rlm_integrations._sync import run_sync

        return run_sync(self.acomplete(messages, **params))

    def count_tokens(self, text: str) -> int:
        """The wrapped model's token count."""
        return self.model.count_tokens(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


_CACHES: weakref.WeakKeyDictionary[Any, dict[str, CallCache]] = weakref.WeakKeyDictionary()


def cache_for(owner: Any, spec: str | None) -> CallCache | None:
    """The cache `owner` (an `RLM`) uses for `spec` (`RLMConfig.cache`): one per owner and spec, kept across runs."""
    if spec is None:
        return None
    caches = _CACHES.setdefault(owner, {})
    if spec not in caches:
        caches[spec] = CallCache(MemoryStore() if spec == "memory" else DiskStore(spec))
    return caches[spec]
