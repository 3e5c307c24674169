r"""Resumable runs: a run directory that lets a run killed mid-way continue from its last complete step.

`ResumableRun(rlm, run_dir)` runs `rlm` with a journal and an on-disk call cache in
`run_dir`. Call `completion(query, context)` to start; after a crash, a ``kill -9`` or a
power cut, make the same call again (in any process, on any machine that has the
directory): the run is replayed and then goes on live.

What the directory holds:

- ``journal.json``: the question, a sha256 fingerprint of the context, the models, the
  config, and one entry per attempt (root steps finished, calls replayed and made live,
  where a replay diverged). Written atomically (a temporary file renamed over it).
- ``calls/``: the call cache (`core/cache.py`, a `diskcache` database): every model call
  that finished, root turns and sub-calls alike, stored the moment it finished.
- ``lock``: held (``flock``) while an attempt runs, so two processes never drive one run.

How a resume works. The engine is deterministic given the model's replies: each root
turn's prompt is the conversation so far, made of earlier replies and the output of the
cells they wrote. The second attempt runs the same loop from the start with the cache
on: each recorded turn is a cache hit (no call, no budget), its cells run again in a
fresh REPL, so every variable they made is rebuilt, and their sub-calls are hits too.
The first turn whose prompt was never recorded is made live, and from there the run
continues as a new one would. "Last complete step" is therefore finer than a turn: every
model call that finished before the kill is replayed, and a cell cut short is re-run
from its start (its finished sub-calls replayed, the rest made live).

Limits. A cell whose output is not a function of the context and the replies (time,
random numbers, files or the network, a host tool with side effects) can print
something else on replay; the next turn's prompt then differs, misses the cache and is
made live: the run is still correct, it just replays less. This is detected: a root turn
that the journal says was finished but had to be made live sets the attempt's
`diverged_at` (and is logged as a warning). Host tools run again on replay. Budgets and
`timeout_s` apply to each attempt on its own (replayed calls cost nothing), and a feedback
message cut short because a token or cost budget was nearly spent may be cut differently
on replay, which is a divergence too. A DSPy LM that caches its own calls is replayed by
DSPy's cache, whose hits are not marked: the journal counts them as live and cannot see a
divergence.

```python
run = ResumableRun(RLM(ScriptedLM(["```repl\nFINAL(len(context))\n```"])), "runs/length")
result = run.completion("How long is the context?", "abc")   # again after a kill: resumes
assert result.answer == 3
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_integrations import __version__
from rlm_integrations._sync import run_sync
from rlm_integrations.core.cache import _has_own_cache, model_identity
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import (
    Event,
    IterationFinished,
    LMCallFinished,
    LMCallStarted,
    Observer,
    RunStarted,
    SubCallFinished,
)
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.run_journal import (
    CALLS,
    LOCK,
    NOT_COMPARED,
    Attempt,
    ContextFingerprint,
    ResumeMismatchError,
    RunDirBusyError,
    RunJournal,
    RunJournalError,
    fingerprint_context,
    locked,
    now,
    read_journal,
    write_journal,
)
from rlm_integrations.core.tools import TOOL_MODEL
from rlm_integrations.errors import RunCancelled, RunInterrupted, UsageError

if TYPE_CHECKING:
    from rlm_integrations.core.rlm import RLM

__all__ = [
    "Attempt",
    "ContextFingerprint",
    "ResumableRun",
    "ResumeMismatchError",
    "RunDirBusyError",
    "RunJournal",
    "RunJournalError",
    "fingerprint_context",
    "read_journal",
    "resumable",
]

log = logging.getLogger(__name__)


@dataclass
class _Recorder:
    """An observer that keeps the current attempt's entry up to date and writes the journal after each step."""

    run_dir: Path
    journal: RunJournal
    attempt: Attempt
    recorded_steps: int
    marks_replays: bool = True
    """False when the root model caches its own calls (a DSPy LM): its replays are not marked, so no divergence."""
    root_run: str | None = None
    purposes: dict[str, str] = field(default_factory=dict)
    replayed_turns: set[int] = field(default_factory=set)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            if event.parent_id is None and self.root_run is None:
                self.root_run = event.run_id
        elif isinstance(event, LMCallStarted):
            self.purposes[event.call_id] = event.purpose
        elif isinstance(event, LMCallFinished):
            self._model_call(event)
        elif isinstance(event, SubCallFinished):
            # a model sub-call: not a host tool, not a child run (its turns are counted as root calls)
            if event.model != TOOL_MODEL and event.child_run_id is None and event.error is None:
                self._count(cached=event.cached)
        elif isinstance(event, IterationFinished) and event.run_id == self.root_run and not event.interrupted:
            self.attempt.steps = event.iteration
            self.attempt.replayed_steps = len(self.replayed_turns)
            write_journal(self.run_dir, self.journal)

    def _model_call(self, event: LMCallFinished) -> None:
        purpose = self.purposes.pop(event.call_id, "step")
        if event.error is not None or event.interrupted:
            return
        self._count(cached=event.cached)
        if event.run_id != self.root_run or purpose != "step":
            return
        if event.cached:
            self.replayed_turns.add(event.iteration)
        elif self.marks_replays and event.iteration <= self.recorded_steps and self.attempt.diverged_at is None:
            self.attempt.diverged_at = event.iteration
            log.warning(
                "resumed run in %s diverged at step %d: its prompt differs from the recorded one (a cell's output "
                "changed on replay), so the run goes on live from there",
                self.run_dir,
                event.iteration,
            )

    def _count(self, *, cached: bool) -> None:
        if cached:
            self.attempt.replayed_calls += 1
        else:
            self.attempt.live_calls += 1


class ResumableRun:
    """One run of `rlm` kept in `run_dir`, so that it can be resumed after the process dies.

    Args:
        rlm: the `RLM` to run (its models, REPL, tools and config). Its `config.cache` is
            replaced by the run directory's own cache for these runs.
        run_dir: a new or empty directory, or the directory of an earlier attempt.

    `completion(query, context)` starts the run, or resumes it when the directory holds
    an earlier attempt of the same question over the same context; `resume(context)`
    resumes it with the question and config the journal recorded. See the module
    docstring for how replay works and its limits.
    """

    def __init__(self, rlm: RLM, run_dir: str | os.PathLike[str]) -> None:
        self.rlm = rlm
        self.run_dir = Path(run_dir)

    @property
    def journal(self) -> RunJournal | None:
        """The journal as it is on disk now, or None before the first attempt.

        Raises:
            RunJournalError: the journal is damaged.
        """
        return read_journal(self.run_dir)

    def completion(
        self, query: str, context: Any = None, *, observers: Sequence[Observer] = (), **overrides: Any
    ) -> RLMResult:
        """Blocking form of `acompletion` (also works inside a running event loop).

        Raises:
            RunInterrupted: Ctrl-C, as `RLM.completion` (the attempt is recorded as ``"cancelled"``).
        """
        return _blocking(lambda: self.acompletion(query, context, observers=observers, **overrides))

    async def acompletion(
        self, query: str, context: Any = None, *, observers: Sequence[Observer] = (), **overrides: Any
    ) -> RLMResult:
        """Start the run, or resume it from its last complete step.

        Args:
            query: the question.
            context: the context; on resume it must be the one the journal fingerprinted.
            observers: extra observers for this attempt.
            **overrides: `RLMConfig` fields for this run (on resume, the same as the first time).

        Raises:
            ResumeMismatchError: the directory records a run of another question, context,
                model or config (nothing is run).
            RunDirBusyError: another attempt is running in the directory.
            RunJournalError: the journal is damaged.
            UsageError: `run_dir` is a non-empty directory that holds no journal, or a file.
            pydantic.ValidationError: an override that is out of range or not a field.
            RunCancelled: as `RLM.acompletion` (the attempt is recorded as ``"cancelled"``).
        """
        config = self.rlm.config.with_overrides(**overrides)
        return await self._attempt(query, context, config, observers)

    def resume(self, context: Any = None, *, observers: Sequence[Observer] = ()) -> RLMResult:
        """Blocking form of `aresume`."""
        return _blocking(lambda: self.aresume(context, observers=observers))

    async def aresume(self, context: Any = None, *, observers: Sequence[Observer] = ()) -> RLMResult:
        """Resume the recorded run: its question and config come from the journal; `context` must match.

        Raises:
            UsageError: the directory holds no journal (there is nothing to resume).
            ResumeMismatchError: `context` is not the recorded context, or the models differ.
            RunDirBusyError, RunJournalError: as `acompletion`.
        """
        journal = read_journal(self.run_dir)
        if journal is None:
            raise UsageError(f"{self.run_dir} holds no run journal, so there is nothing to resume; start the run first")
        config = RLMConfig.model_validate(journal.config)
        return await self._attempt(journal.query, context, config, observers)

    async def _attempt(self, query: str, context: Any, config: RLMConfig, observers: Sequence[Observer]) -> RLMResult:
        if not isinstance(query, str) or not query.strip():
            raise UsageError("query must be a non-empty string: the question the RLM should answer")
        config = config.with_overrides(cache=str(self.run_dir / CALLS))
        with contextlib.ExitStack() as stack:  # fingerprinting a large context runs off the event loop
            recorder = await asyncio.to_thread(stack.enter_context, self._open(query, context, config))
            try:
                result = await self.rlm.acompletion(query, context, observers=[recorder, *observers], **_fields(config))
            except RunCancelled as cancelled:
                self._end(recorder, cancelled.result.status, cancelled.result.error)
                raise
            except BaseException as error:
                self._end(recorder, "raised", f"{type(error).__name__}: {error}")
                raise
            self._end(recorder, result.status, result.error)
            return result

    @contextlib.contextmanager
    def _open(self, query: str, context: Any, config: RLMConfig) -> Iterator[_Recorder]:
        """Lock the directory, check or create the journal, and open this attempt's entry."""
        run_dir = self.run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise UsageError(f"run_dir {run_dir} is a file; pass a directory (new, empty, or an earlier run's)")
        run_dir.mkdir(parents=True, exist_ok=True)
        with locked(run_dir):
            journal = read_journal(run_dir)
            fingerprint = fingerprint_context(context)
            if journal is None:
                others = sorted(entry.name for entry in run_dir.iterdir() if entry.name != LOCK)
                if others:
                    raise UsageError(
                        f"run_dir {run_dir} is not empty ({', '.join(others[:3])}...) and holds no run journal; "
                        "pass a new or empty directory, or the directory of an earlier attempt"
                    )
                journal = RunJournal(
                    library=__version__,
                    query=query,
                    context=fingerprint,
                    model=model_identity(self.rlm.model),
                    sub_model=model_identity(self.rlm.sub_model),
                    config=config.model_dump(mode="json") | {"cache": None},
                )
            else:
                self._check(journal, query, fingerprint, config)
                if journal.library != __version__:
                    log.warning(
                        "the run in %s was started by rlm-integrations %s and is resumed by %s: changed prompts would "
                        "make the recorded turns miss (see the attempt's diverged_at)",
                        run_dir,
                        journal.library,
                        __version__,
                    )
            attempt = Attempt(number=len(journal.attempts) + 1, started_at=now())
            recorded = journal.recorded_steps
            journal.attempts.append(attempt)
            write_journal(run_dir, journal)
            yield _Recorder(run_dir, journal, attempt, recorded, marks_replays=not _has_own_cache(self.rlm.model))

    def _check(self, journal: RunJournal, query: str, fingerprint: ContextFingerprint, config: RLMConfig) -> None:
        where = str(self.run_dir)
        fix = "resume with exactly what the first attempt used, or start this run in a new directory"
        if journal.query != query:
            raise ResumeMismatchError(
                f"{where} records a run of another question ({_short(journal.query)}, not {_short(query)}); {fix}",
                run_dir=where,
                field="query",
            )
        if journal.context != fingerprint:
            raise ResumeMismatchError(
                f"{where} records a run over another context (recorded: {journal.context.kind} of "
                f"{journal.context.size:,}, sha256 {journal.context.sha256[:12]}; given: {fingerprint.kind} of "
                f"{fingerprint.size:,}, sha256 {fingerprint.sha256[:12]}); {fix}",
                run_dir=where,
                field="context",
            )
        for name, model in (("model", self.rlm.model), ("sub_model", self.rlm.sub_model)):
            recorded = getattr(journal, name)
            if recorded != model_identity(model):
                raise ResumeMismatchError(
                    f"{where} records a run with {name} {recorded.get('name')!r} ({recorded.get('class')}), "
                    f"not {getattr(model, 'name', '')!r}; {fix}",
                    run_dir=where,
                    field=name,
                )
        given = config.model_dump(mode="json")
        changed = sorted(
            key
            for key in set(given) | set(journal.config)
            if key not in NOT_COMPARED and given.get(key) != journal.config.get(key)
        )
        if changed:
            raise ResumeMismatchError(
                f"{where} records a run with another config ({', '.join(changed)} differ); {fix} "
                "(ResumableRun.resume(context) reuses the recorded config)",
                run_dir=where,
                field="config",
            )

    def _end(self, recorder: _Recorder, status: str, error: str | None) -> None:
        recorder.attempt.status = status
        recorder.attempt.error = error
        recorder.attempt.finished_at = now()
        recorder.attempt.replayed_steps = len(recorder.replayed_turns)
        write_journal(self.run_dir, recorder.journal)


def resumable(rlm: RLM, run_dir: str | os.PathLike[str]) -> ResumableRun:
    """`ResumableRun(rlm, run_dir)`: `rlm`'s run kept in `run_dir`, resumable after a crash."""
    return ResumableRun(rlm, run_dir)


def _blocking(start: Callable[[], Coroutine[Any, Any, RLMResult]]) -> RLMResult:
    """Run an attempt from sync code; Ctrl-C becomes `RunInterrupted` with the partial result, as in `RLM`."""
    kept: list[RLMResult] = []

    async def keeping() -> RLMResult:
        try:
            return await start()
        except RunCancelled as cancelled:
            kept.append(cancelled.result)
            raise

    try:
        return run_sync(keeping())
    except KeyboardInterrupt as interrupt:
        if kept and not isinstance(interrupt, RunInterrupted):
            raise RunInterrupted(kept[0]) from None
        raise


def _fields(config: RLMConfig) -> dict[str, Any]:
    """`config` as overrides, so the run uses exactly it whatever the `RLM`'s own config is."""
    return {name: getattr(config, name) for name in RLMConfig.model_fields}


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
