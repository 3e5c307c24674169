"""Sessions: follow-up questions over one context, with one live REPL, saved and resumed.

`RLM.session(context)` returns an `RLMSession`. Every `ask` is a full run (its own
budgets, events and `RLMResult`) on the same REPL, so the variables earlier asks created
are still there; the first message of each ask carries a short digest of the earlier
questions, their answers and the variables they created, so the model reuses them.

`save(path)` writes one checkpoint file (see `rlm_integrations.core.checkpoint`);
`RLMSession.load(path, rlm)` starts a new REPL with the context and the saved variables.
"""

from __future__ import annotations

import ast
import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from rlm_integrations.core.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.engine import PRELUDE_MODULES
from rlm_integrations.core.events import Event, Observer
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.run import REPLFactory, Run, check_context, check_query
from rlm_integrations.core.run_state import as_text
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.errors import RunCancelled, UnsupportedContextError, UsageError
from rlm_integrations.repl.protocol import REPL
from rlm_integrations.repl.worker.output import truncate_middle


class SessionOwner(Protocol):
    """What a session uses of its `RLM` (core/rlm.py, not imported here: `RLM.session` builds sessions)."""

    @property
    def config(self) -> RLMConfig:
        """The RLM's config; a session applies its overrides on top."""
        ...

    @property
    def repl_factory(self) -> REPLFactory:
        """Builds the session's REPL."""
        ...

    def prepare(
        self,
        *,
        config: RLMConfig | None = None,
        observers: Sequence[Observer] = (),
        overrides: Mapping[str, Any] | None = None,
    ) -> Run:
        """A run over this RLM's models and tools (see `RLM.prepare`)."""
        ...


__all__ = ["ClosesOnExit", "LoopThread", "RLMSession", "SessionOwner", "SessionTurn", "plain_variables", "user_names"]

T = TypeVar("T")

_NOTE_TURNS = 8  # earlier questions shown in full in the digest; older ones are counted
_NOTE_QUESTION_CHARS = 300
_NOTE_ANSWER_CHARS = 400
_NOT_PLAIN = (
    "only str, bytes, numbers, bools, None, and lists and str-keyed dicts of those are saved; "
    "compute it again after loading"
)
# Run in the worker at save time: for each variable, its type name, whether the REPL can
# load it back exactly (JSON data, or top-level str / bytes), and its length if str/bytes.
_CHECK = (
    "(lambda ok: [(str(type(v)), ok(ok, v, 0) or type(v) is bytes, "
    "len(v) if type(v) in (str, bytes) else -1) for v in ({names},)])"
    "(lambda ok, v, d: d < 60 and (type(v) in (str, int, float, bool, type(None)) "
    "or (type(v) is list and all(ok(ok, i, d + 1) for i in v)) "
    "or (type(v) is dict and all(type(k) is str and ok(ok, w, d + 1) for k, w in v.items()))))"
)


@dataclass
class SessionTurn:
    """One earlier ask, as the digest shows it.

    Attributes:
        question: the question asked.
        answer: the answer as text, cut short.
        status: how the run ended (``"completed"``, ``"max_iterations"``, ...).
        variables: REPL variables that ask created.
    """

    question: str
    answer: str
    status: str
    variables: list[str] = field(default_factory=list)


class ClosesOnExit:
    """Mixin: ``with`` closes with `close`, ``async with`` with `aclose` (a session's REPL stops)."""

    def close(self) -> None:
        """Stop what the object holds (subclasses implement it)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Async `close` (subclasses implement it)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class RLMSession(ClosesOnExit):
    r"""Follow-up questions over one context, sharing one live REPL.

    Made by `RLM.session(context, **overrides)` or `RLMSession.load(path, rlm)`. Use it
    either with `ask` (blocking; it runs on a private event loop thread) or with `aask`
    (from one event loop), not both: the REPL belongs to the loop that started it.
    Asks run one at a time. Close it (`close` / `aclose`, or use it as a context manager,
    sync or async) to stop its REPL worker.

    Example:
        ```python
        rlm = RLM(ScriptedLM(["```repl\\nwords = context.split()\\nFINAL(len(words))\\n```",
                              "```repl\\nFINAL(words[-1])\\n```"]))
        with rlm.session("a b c") as session:
            assert session.ask("How many words?").answer == 3
            assert session.ask("And the last one?").answer == "c"
        ```
    """

    def __init__(self, rlm: SessionOwner, context: Any = None, **overrides: Any) -> None:
        check_context(context)
        self.rlm = rlm
        self.context = context
        self.config: RLMConfig = rlm.config.with_overrides(**overrides)
        self.turns: list[SessionTurn] = []
        self.not_restored: dict[str, str] = {}
        """Variables a checkpoint could not bring back (name: why); the next ask tells the model."""
        self._restore: dict[str, Any] = {}
        self._events: list[Event] = []
        self._repl: REPL | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._thread: LoopThread | None = None

    # -- asking --------------------------------------------------------------------------------
    @property
    def trajectory(self) -> Trajectory:
        """Every event of every ask so far (those of a loaded checkpoint first)."""
        return Trajectory(events=list(self._events))

    def ask(self, question: str, *, observers: Sequence[Observer] = (), **overrides: Any) -> RLMResult:
        """Ask `question` (blocking); see `aask`."""
        self._check_open()
        if self._loop is not None and self._thread is None:
            raise UsageError("this session was used with aask(); keep using aask() (its REPL belongs to that loop)")
        if self._thread is None:
            self._thread = LoopThread()
        return self._thread.run(self.aask(question, observers=observers, **overrides))

    async def aask(self, question: str, *, observers: Sequence[Observer] = (), **overrides: Any) -> RLMResult:
        """Ask `question` over the session's context, in its REPL.

        A full run with its own budgets; `overrides` are `RLMConfig` fields for this ask
        only (the REPL's own limits, such as `cell_timeout_s`, stay the session's).

        Raises:
            UsageError: an empty question, a closed session, or a second event loop.
            pydantic.ValidationError: an override out of range or not a field.
            RunCancelled: the ask was cancelled (the session stays usable).
        """
        check_query(question)
        run = self.rlm.prepare(config=self.config, observers=observers, overrides=overrides)
        lock = self._claim_loop()
        async with lock:
            repl = await self._ensure_repl()
            before = await user_names(repl)
            notes = self._notes(before)
            try:
                result = await run.execute(question, self.context, repl=repl, notes=notes)
            except RunCancelled as cancelled:
                self._events.extend(cancelled.result.trajectory.events)
                raise
            self._events.extend(result.trajectory.events)
            self.not_restored = {}  # told once, in this ask's notes
            after = await user_names(repl)
            answer = truncate_middle(as_text(result.answer) if result.answer is not None else "", _NOTE_ANSWER_CHARS)
            created = [name for name in after if name not in before]
            self.turns.append(SessionTurn(question, answer, result.status, created))
            return result

    def _notes(self, names: list[str]) -> str | None:
        """The digest of earlier asks (and of variables a checkpoint lost) for the next first message."""
        parts: list[str] = []
        if self.turns:
            shown = self.turns[-_NOTE_TURNS:]
            skipped = len(self.turns) - len(shown)
            lines = [
                "Earlier in this session (same context). The REPL still holds the variables these questions "
                "created: reuse them instead of recomputing."
            ]
            if skipped:
                lines.append(f"({skipped} earlier questions are not listed.)")
            present = set(names)
            for number, turn in enumerate(shown, skipped + 1):
                lines.append(f"- Q{number}: {truncate_middle(turn.question, _NOTE_QUESTION_CHARS)}")
                lines.append(f"  A{number} ({turn.status}): {turn.answer or '(no answer)'}")
                kept = [name for name in turn.variables if name in present]
                gone = [name for name in turn.variables if name not in present]
                if kept:
                    lines.append(f"  variables it created: {', '.join(kept)}")
                if gone:
                    lines.append(f"  variables it created that no longer exist: {', '.join(gone)}")
            parts.append("\n".join(lines))
        if self.not_restored:
            listed = "; ".join(f"{name} ({why})" for name, why in self.not_restored.items())
            parts.append(
                f"This session was restored from a checkpoint. These variables were not restored: {listed}. "
                "Compute them again if you need them."
            )
        return "\n\n".join(parts) or None

    # -- the REPL ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this session is closed; start a new one with rlm.session(...) or RLMSession.load(...)")

    def _claim_loop(self) -> asyncio.Lock:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._loop is None or self._lock is None:
            self._loop, self._lock = loop, asyncio.Lock()
        elif self._loop is not loop:
            raise UsageError(
                "this session's REPL belongs to another event loop; use one session from one loop "
                "(ask() for blocking code, aask() from async code)"
            )
        return self._lock

    async def _ensure_repl(self) -> REPL:
        if self._repl is not None:
            return self._repl
        repl = self.rlm.repl_factory(self.config)
        try:
            await repl.start()
            await repl.load("context", self.context)
            for name, value in self._restore.items():
                try:
                    await repl.load(name, value)
                except UnsupportedContextError as error:
                    self.not_restored[name] = f"the REPL refused it: {error}"
        except BaseException:
            await repl.close()
            raise
        self._restore = {}
        self._repl = repl
        return repl

    def close(self) -> None:
        """Stop the REPL worker (idempotent). A session used with `aask` needs `aclose`."""
        if self._thread is not None:
            try:
                self._thread.run(self.aclose())
            finally:
                self._thread.stop()
                self._thread = None
        elif self._repl is not None:
            raise UsageError("this session was used with aask(); close it with `await session.aclose()`")
        self._closed = True

    async def aclose(self) -> None:
        """Stop the REPL worker (idempotent)."""
        self._closed = True
        repl, self._repl = self._repl, None
        if repl is not None:
            await repl.close()

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> dict[str, str]:
        """Write a checkpoint to `path` (one file, replaced atomically); see `asave`."""
        if self._thread is not None:
            return self._thread.run(self.asave(path))
        if self._repl is not None:
            raise UsageError("this session was used with aask(); save it with `await session.asave(path)`")
        from rlm_integrations._sync import run_sync

        return run_sync(self.asave(path))

    async def asave(self, path: str | Path) -> dict[str, str]:
        """Write the context, config, digest, trajectory and plain-data variables to `path`.

        The file is written next to `path` and renamed over it only when complete, so a
        crash leaves the previous checkpoint (or none), never a partial one.

        Returns:
            the variables that were not saved, name to reason (also listed in the file).

        Raises:
            UsageError: the context cannot be stored (not plain data), or the folder does not exist.
        """
        if self._repl is not None:
            async with self._claim_loop():
                variables, unsaved = await plain_variables(self._repl)
        else:
            variables, unsaved = dict(self._restore), {}
        unsaved = {**self.not_restored, **unsaved}
        checkpoint = Checkpoint(
            config=self.config.model_dump(mode="json"),
            context=self.context,
            turns=[asdict(turn) for turn in self.turns],
            variables=variables,
            not_saved=unsaved,
            trajectory=self.trajectory,
        )
        await asyncio.to_thread(write_checkpoint, Path(path), checkpoint)
        return unsaved

    @classmethod
    def load(cls, path: str | Path, rlm: SessionOwner, **overrides: Any) -> RLMSession:
        """Rebuild a session from a checkpoint written by `save`.

        The session keeps its saved config (`overrides` apply on top), its digest and its
        trajectory; its REPL starts on the first ask with the context and the saved
        variables loaded back. Variables that were not saved are told to the model in the
        next ask.

        Raises:
            CheckpointError: the file is not a checkpoint, is corrupt (a checksum or the
                context's sha256 does not match), or comes from an unknown format version.
            OSError: the file cannot be read.
        """
        checkpoint = read_checkpoint(Path(path))
        session = cls(rlm, checkpoint.context)
        session.config = RLMConfig.model_validate(checkpoint.config).with_overrides(**overrides)
        session.turns = [SessionTurn(**turn) for turn in checkpoint.turns]
        session._events = list(checkpoint.trajectory.events)
        session._restore = dict(checkpoint.variables)
        session.not_restored = dict(checkpoint.not_saved)
        return session


async def user_names(repl: REPL) -> list[str]:
    """The variables the model's code made in `repl` (the context and the engine's prelude imports left out).

    Empty for a REPL that cannot list its variables.
    """
    listing = getattr(repl, "variables", None)
    if listing is None:
        return []
    names: list[str] = await listing()
    return [name for name in names if name != "context" and name not in PRELUDE_MODULES]


async def plain_variables(repl: REPL) -> tuple[dict[str, Any], dict[str, str]]:
    """The variables of `repl` that can be saved and loaded back exactly, and why each other one cannot.

    Returns:
        the saved values by name, and the reason for each variable left out.
    """
    names = [name for name in await user_names(repl) if name.isidentifier()]
    if not names:
        return {}, {}
    cell = await repl.execute(_CHECK.format(names=", ".join(names)))
    if cell.error is not None or cell.value is None:
        return {}, dict.fromkeys(names, f"its type could not be checked ({cell.error or 'no value'})")
    try:
        kinds = ast.literal_eval(cell.value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        kinds = None
    if not isinstance(kinds, list) or len(kinds) != len(names):
        return {}, dict.fromkeys(names, "its type could not be checked")
    saved: dict[str, Any] = {}
    unsaved: dict[str, str] = {}
    for name, kind in zip(names, kinds, strict=True):
        type_text, plain, length = kind
        type_name = str(type_text).removeprefix("<class '").removesuffix("'>").rsplit(".", 1)[-1]
        if not plain:
            unsaved[name] = f"a {type_name}: {_NOT_PLAIN}"
            continue
        try:
            value = await repl.get(name)
        except KeyError:
            continue
        exact = type(value).__name__ == type_name and (length < 0 or len(value) == length)
        if exact:
            saved[name] = value
        else:
            unsaved[name] = f"a {type_name} too large to read back exactly"
    return saved, unsaved


class LoopThread:
    """A private event loop on a daemon thread: the blocking face of a session runs all its work there.

    A session's REPL belongs to one event loop; blocking callers (`ask`, a framework's
    sync call) hand their coroutines to this loop with `run`, so every ask of the
    session runs on it. `stop` ends the loop and its thread.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rlm-session", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result (Ctrl-C cancels it, then re-raises)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            try:
                future.result(timeout=10)
            except BaseException:  # the cancellation's own outcome; the interrupt is what matters
                pass
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread (the loop is closed once the thread has ended).

        Async generators still open on the loop are shut down first, as `asyncio.run` does:
        the per-loop HTTP clients of the model adapters (`lm._per_loop.PerLoop`) close there.
        """
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            shutdown = asyncio.run_coroutine_threadsafe(self.loop.shutdown_asyncgens(), self.loop)
            try:
                shutdown.result(timeout=10)
            except Exception:  # a closer that fails or hangs must not keep the session from stopping
                shutdown.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


_LoopThread = LoopThread  # earlier names, kept for importers that used them
_user_names = user_names
_plain_variables = plain_variables
