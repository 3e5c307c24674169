r"""`Session`: follow-up calls of a DSPy `RLM` program over the same inputs, sharing one live REPL.

A plain call of `rlm_integrations.dspy.RLM` starts a REPL, loads the inputs and throws the
REPL away at the end. A `Session` keeps it: every call runs the program's own
`generate_code` predictor (tuned instructions and demos apply) in the same REPL, so the
variables earlier calls created are still there. The conversation travels the DSPy way,
as a `dspy.History` input field: the session fills it with one message per earlier call
(its inputs, its outputs and ``repl_variables``, the REPL variables that call created),
passes it to each call, and returns the updated one on the prediction as `history`.

```python
program = RLM("context, history: dspy.History, question -> answer")
with Session(program, context=big_text) as session:
    first = session(question="How many orders were late?")
    second = session(question="Which were the first three?")  # reuses first's variables
second.history.messages  # both turns
session.save("orders.rlm")  # later: Session.load("orders.rlm", program)
```
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import dspy
from pydantic_core import to_jsonable_python

from rlm_integrations.core.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from rlm_integrations.core.events import Event
from rlm_integrations.core.session import ClosesOnExit, LoopThread, plain_variables, user_names
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.dspy._support import repl_factory
from rlm_integrations.dspy.module import RLM
from rlm_integrations.errors import CheckpointError, ConfigError, UsageError
from rlm_integrations.repl.protocol import REPL, CellResult, HostCallback

__all__ = ["Session"]

T = TypeVar("T")

VARIABLES_KEY = "repl_variables"
"""The key of each history message that lists the REPL variables its call created."""

_MARKER = "dspy_session"  # the manifest entry that marks a DSPy session's checkpoint


class Session(ClosesOnExit):
    r"""Follow-up calls of one `RLM` program over fixed inputs, with one live REPL and a `dspy.History`.

    Args:
        program: a `rlm_integrations.dspy.RLM` whose signature has a `dspy.History` input
            field (e.g. ``"context, history: dspy.History, question -> answer"``).
        history_field: the name of that field (default: the one input field typed
            `dspy.History`).
        history: the conversation to start from (default: empty).
        **inputs: inputs that stay the same for every call, typically ``context=...``.
            They are loaded into the REPL at every call, like any input.

    Call the session like the program, with the inputs that change (``question=...``);
    the result is the program's `dspy.Prediction` plus `history`, the conversation
    including this call. A call may pass ``history=`` itself (a `dspy.History` or a list
    of message dicts): that conversation is used for the call and the session continues
    from it.

    The session runs the program as it was when the session started (a shallow copy that
    shares its predictors, so demos and instructions are the program's own), with one
    difference: the root run of every call uses the session's REPL. Child runs
    (`rlm_query`) get fresh REPLs as usual. Calls run one at a time, on a private event
    loop thread, so the blocking form (`session(...)`) and the async form
    (`await session.acall(...)`) can both be used, from any thread or event loop; DSPy's
    settings (`dspy.context(lm=...)`, usage tracking) are those of the caller. Close the
    session (`close`, `aclose`, or a `with` / `async with` block) to stop the REPL worker.
    `save(path)` writes a checkpoint (the core session's file format: fixed inputs, history,
    trajectory and the REPL variables that are plain data); `Session.load(path, program)`
    resumes it, in any process.

    Raises:
        ConfigError: `program` is not an `RLM`, its signature has no (or an unknown)
            history field, or a fixed input is not one of its input fields.
    """

    def __init__(
        self,
        program: RLM,
        *,
        history_field: str | None = None,
        history: dspy.History | None = None,
        **inputs: Any,
    ) -> None:
        if not isinstance(program, RLM):
            raise ConfigError(f"Session needs a rlm_integrations.dspy.RLM program, got {type(program).__name__}")
        fields = program.signature.input_fields
        self.history_field = history_field or _history_field(program)
        if self.history_field not in fields:
            raise ConfigError(
                f"{self.history_field!r} is not an input field of {program.signature.signature!r}; "
                f"the inputs are {', '.join(fields)}"
            )
        unknown = sorted(name for name in inputs if name not in fields or name == self.history_field)
        if unknown:
            raise ConfigError(
                f"fixed input(s) {', '.join(unknown)} are not input fields of this program (or are the history); "
                f"the inputs are {', '.join(name for name in fields if name != self.history_field)}"
            )
        self.inputs: dict[str, Any] = dict(inputs)
        self._history = _as_history(history) if history is not None else dspy.History(messages=[])
        self._original_repl = program.repl
        self._program = _bound_copy(program, self._repl_for_run)
        self._shared: REPL | None = None
        self._events: list[Event] = []
        self._restore: dict[str, Any] = {}
        self.not_restored: dict[str, str] = {}
        """Variables a loaded checkpoint could not bring back (name: why)."""
        self._lend = False
        self._closed = False
        self._lock: asyncio.Lock | None = None
        self._thread: LoopThread | None = None

    @property
    def history(self) -> dspy.History:
        """The conversation so far: one message per call (inputs, outputs and `repl_variables`)."""
        return self._history

    @property
    def trajectory(self) -> Trajectory:
        """Every event of every call so far (those of a loaded checkpoint first)."""
        return Trajectory(events=list(self._events))

    @property
    def program(self) -> RLM:
        """The program the session runs (a copy bound to the session's REPL)."""
        return self._program

    # -- calls ----------------------------------------------------------------------------------
    def __call__(self, **inputs: Any) -> dspy.Prediction:
        """Run one call (blocking); see `acall`."""
        return self._loop().run(_in_context(self._ask(inputs)))

    async def acall(self, **inputs: Any) -> dspy.Prediction:
        """Run the program on the session's fixed inputs plus `inputs`, in the session's REPL.

        Returns:
            the program's `dspy.Prediction`, with `history` (a `dspy.History`) added: the
            conversation including this call.

        Raises:
            UsageError: the session is closed, or `inputs` repeats a fixed input.
            ConfigError: ``history=`` is neither a `dspy.History` nor a list of dicts.
            ModelError: the model failed (as the program raises it; so does `REPLError` for the
                REPL); the conversation is then left as it was.
        """
        loop = self._loop()
        future = asyncio.run_coroutine_threadsafe(_in_context(self._ask(inputs)), loop.loop)
        return await asyncio.wrap_future(future)

    async def _ask(self, inputs: dict[str, Any]) -> dspy.Prediction:
        self._check_open()
        repeated = sorted(set(inputs) & set(self.inputs))
        if repeated:
            raise UsageError(f"{', '.join(repeated)} is fixed for this session; start another session to change it")
        given = inputs.pop(self.history_field, None)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            history = _as_history(given) if given is not None else self._history
            shared = await self._ensure_repl()
            before = await user_names(shared)
            self._lend = True
            try:
                prediction = await self._program.acall(**self.inputs, **inputs, **{self.history_field: history})
            finally:
                self._lend = False
            result = prediction.get("rlm_result")
            if result is not None:
                self._events.extend(result.trajectory.events)
            inputs_names = set(self._program.signature.input_fields)
            created = [name for name in await user_names(shared) if name not in before and name not in inputs_names]
            outputs = {name: prediction.get(name) for name in self._program.signature.output_fields}
            message = {**inputs, **outputs, VARIABLES_KEY: created}
            self._history = dspy.History(messages=[*history.messages, message])
            prediction.history = self._history
            return prediction

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> dict[str, str]:
        """Write a checkpoint to `path` (blocking); see `asave`."""
        return self._loop().run(self._save(Path(path)))

    async def asave(self, path: str | Path) -> dict[str, str]:
        """Write the fixed inputs, the history, the trajectory and the plain-data REPL variables to `path`.

        The file is the core session's checkpoint format (`RLMSession.save`), written
        atomically; `Session.load` reads it back.

        Returns:
            the variables that were not saved, name to reason.

        Raises:
            UsageError: a fixed input or a history message is not plain data, or the folder does not exist.
        """
        future = asyncio.run_coroutine_threadsafe(self._save(Path(path)), self._loop().loop)
        return await asyncio.wrap_future(future)

    async def _save(self, path: Path) -> dict[str, str]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._shared is not None:
                variables, unsaved = await plain_variables(self._shared)
            else:
                variables, unsaved = dict(self._restore), {}
            inputs = set(self._program.signature.input_fields)
            variables = {name: value for name, value in variables.items() if name not in inputs}
            unsaved = {name: why for name, why in {**self.not_restored, **unsaved}.items() if name not in inputs}
            try:
                messages = to_jsonable_python(self._history.messages)
            except Exception as error:  # pydantic_core.PydanticSerializationError and friends
                raise UsageError(f"the history holds a value that is not plain data ({error})") from error
            config = self._program.config.model_dump(mode="json")
            checkpoint = Checkpoint(
                config={**config, _MARKER: {"history_field": self.history_field}},
                context=dict(self.inputs),
                turns=messages,
                variables=variables,
                not_saved=unsaved,
                trajectory=self.trajectory,
            )
            await asyncio.to_thread(write_checkpoint, path, checkpoint)
            return unsaved

    @classmethod
    def load(cls, path: str | Path, program: RLM) -> Session:
        """A session rebuilt from a checkpoint written by `save`, around `program`.

        The fixed inputs, the history and the trajectory come back at once; the REPL
        starts on the first call with the saved variables loaded back. Variables that
        were not saved are listed in `not_restored` (and were never in the REPL again).

        Raises:
            CheckpointError: the file is not a DSPy session's checkpoint, or is corrupt.
            ConfigError: `program`'s signature does not take the saved inputs.
        """
        checkpoint = read_checkpoint(Path(path))
        marker = checkpoint.config.get(_MARKER)
        if not isinstance(marker, dict) or not isinstance(checkpoint.context, dict):
            raise CheckpointError(
                f"{path}: not a DSPy session's checkpoint (a core session's loads with RLMSession.load)",
                path=str(path),
            )
        history = dspy.History(messages=list(checkpoint.turns))
        session = cls(program, history_field=marker.get("history_field"), history=history, **checkpoint.context)
        session._events = list(checkpoint.trajectory.events)
        session._restore = dict(checkpoint.variables)
        session.not_restored = dict(checkpoint.not_saved)
        return session

    # -- the REPL -------------------------------------------------------------------------------
    def _repl_for_run(self, config: Any) -> REPL:
        """The program's REPL factory while the session runs it: the session's REPL for the root run."""
        if self._lend and self._shared is not None:
            self._lend = False  # child runs, which ask later, get fresh REPLs
            return _Lent(self._shared)
        return repl_factory(self._original_repl)(config)

    async def _ensure_repl(self) -> REPL:
        if self._shared is None:
            repl = repl_factory(self._original_repl)(self._program.config)
            try:
                await repl.start()
                for name, value in self._restore.items():
                    await repl.load(name, value)
            except BaseException:
                await repl.close()
                raise
            self._restore = {}
            self._shared = repl
        return self._shared

    def _loop(self) -> LoopThread:
        self._check_open()
        if self._thread is None:
            self._thread = LoopThread()
        return self._thread

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this session is closed; start a new one with Session(program, ...)")

    def close(self) -> None:
        """Stop the REPL worker and the session's loop thread (idempotent)."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                thread.run(self._close_repl())
            finally:
                thread.stop()

    async def aclose(self) -> None:
        """Async `close`."""
        await asyncio.to_thread(self.close)

    async def _close_repl(self) -> None:
        repl, self._shared = self._shared, None
        if repl is not None:
            await repl.close()


class _Lent:
    """The session's REPL as one run sees it: starting it again is a no-op, and the run does not close it."""

    def __init__(self, inner: REPL) -> None:
        self.inner = inner

    async def start(self) -> None:
        """Already started by the session (the REPL's `start` is idempotent)."""
        await self.inner.start()

    async def load(self, name: str, value: Any) -> None:
        """Load an input into the session's REPL (replacing the previous call's value)."""
        await self.inner.load(name, value)

    def register(self, name: str, function: HostCallback) -> None:
        """Register this run's host function (replacing the previous run's)."""
        self.inner.register(name, function)

    async def execute(self, code: str) -> CellResult:
        """Run a cell in the session's REPL."""
        return await self.inner.execute(code)

    async def get(self, name: str) -> Any:
        """Read a variable of the session's REPL."""
        return await self.inner.get(name)

    async def close(self) -> None:
        """Leave the REPL running: the session closes it."""

    async def __aenter__(self) -> _Lent:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _history_field(program: RLM) -> str:
    found = [name for name, field in program.signature.input_fields.items() if field.annotation is dspy.History]
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise ConfigError(
            "a Session needs a dspy.History input field to carry the conversation: add one to the signature, "
            'e.g. RLM("context, history: dspy.History, question -> answer")'
        )
    raise ConfigError(f"the signature has several dspy.History inputs ({', '.join(found)}); pass history_field=")


def _as_history(value: Any) -> dspy.History:
    if isinstance(value, dspy.History):
        return value
    if isinstance(value, list) and all(isinstance(message, Mapping) for message in value):
        return dspy.History(messages=[dict(message) for message in value])
    raise ConfigError(f"history must be a dspy.History or a list of message dicts, got {type(value).__name__}")


def _bound_copy(program: RLM, factory: Any) -> RLM:
    """A shallow copy of `program` whose REPL is `factory`; the original is left untouched.

    The module mirrors its settings into the predictor that holds them (for DSPy's
    save/load), so that predictor is copied too (shallowly: demos, signature and LM are
    shared) before the copy's `repl` is set.
    """
    clone = copy.copy(program)
    own: dict[str, Any] = clone.__dict__
    for name, value in list(own.items()):
        if isinstance(value, dspy.Predict) and hasattr(value, "rlm_settings"):
            own[name] = copy.copy(value)
    clone.repl = factory
    if clone.repl is not factory or program.repl is factory:
        raise ConfigError("this RLM program could not be bound to a session's REPL (its settings did not take)")
    return clone


async def _run_in(coroutine: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    return await asyncio.create_task(coroutine, context=context)


def _in_context(coroutine: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """`coroutine`, to run on the session's loop with the caller's context variables (DSPy's settings)."""
    return _run_in(coroutine, contextvars.copy_context())
