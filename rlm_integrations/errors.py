"""The exceptions raised by rlm-integrations.

Everything we raise derives from `RLMError`. The tree separates mistakes the caller can
fix before anything runs from failures of the machinery during a run:

```
RLMError
├── UsageError                    the caller's input or set-up is wrong; raised before any spend
│   ├── ConfigError               an option is out of range or options contradict each other
│   │   ├── ReservedNameError     a tool named like a REPL built-in (llm_query, FINAL, context, ...)
│   │   └── BudgetConfigError     `max_cost_usd` set but a model has no price (pass `RLMConfig.prices`)
│   ├── ContextTooLargeError      a context over RLMConfig.max_context_bytes (refused before any copy)
│   ├── UnsupportedContextError   a context value the REPL cannot hold (also a TypeError)
│   ├── MissingAPIKeyError        a provider needs a key that is neither passed nor in the environment
│   ├── UnknownModelError         a model string LiteLLM cannot route
│   └── MissingExtraError         an optional dependency is not installed (also an ImportError)
├── REPLError                     the REPL itself failed (not an error inside a cell)
│   ├── WorkerStartError          the worker process could not start
│   │   └── IsolationError        a layer of the OS wall is missing and require_isolation=True
│   ├── WorkerCrashedError        the worker died and could not be restarted
│   └── REPLClosedError           the REPL was used after `close()`
├── ModelError                    a language-model call failed after its retries
│   └── ContextWindowExceededError  a prompt larger than the model's window
├── BudgetExhaustedError          a run hit a limit (raised only where a framework wants an exception)
├── RunFailedError                a run ended in "error" or "cancelled" (raised where a framework wants an exception)
└── TrajectoryError               a trajectory file with a corrupt line before its last (also a ValueError)
```

`TruncatedTrajectoryWarning` (a `UserWarning`) reports a torn last line that was skipped.

A cancelled run is not an `RLMError`: `RunCancelled` (an `asyncio.CancelledError`, from
`RLM.acompletion`) and `RunInterrupted` (a `KeyboardInterrupt`, from `RLM.completion`) keep
their base class's meaning and carry the partial result as `.result` (status ``"cancelled"``).

An error *inside* a cell (a `NameError`, a refused attribute, a timeout) is never raised
on the host: it comes back in `CellResult.error` for the model to read and fix.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = [
    "BudgetConfigError",
    "BudgetExhaustedError",
    "CheckpointError",
    "ConfigError",
    "ContextTooLargeError",
    "ContextWindowExceededError",
    "IsolationError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ModelError",
    "REPLClosedError",
    "REPLError",
    "RLMError",
    "ReservedNameError",
    "RunCancelled",
    "RunFailedError",
    "RunInterrupted",
    "TrajectoryError",
    "TruncatedTrajectoryWarning",
    "UnknownModelError",
    "UnsupportedContextError",
    "UsageError",
    "WorkerCrashedError",
    "WorkerStartError",
]


class RLMError(Exception):
    """Root of every exception raised by rlm-integrations."""


class UsageError(RLMError, ValueError):
    """The caller's input or set-up is wrong. Raised before any model call is made."""


class ConfigError(UsageError):
    """An option is out of range, or two options contradict each other."""


class UnsupportedContextError(UsageError, TypeError):
    """A context value that cannot be loaded into the REPL.

    Attributes:
        value_type: the name of the offending type.
    """

    def __init__(self, message: str, *, value_type: str) -> None:
        super().__init__(message)
        self.value_type = value_type


class MissingAPIKeyError(UsageError):
    """A provider needs an API key that was neither passed nor found in the environment.

    Attributes:
        model: the model string that needs the key.
        env_vars: the environment variables that would supply it.
    """

    def __init__(self, message: str, *, model: str, env_vars: list[str]) -> None:
        super().__init__(message)
        self.model = model
        self.env_vars = env_vars


class UnknownModelError(UsageError):
    """A model string that LiteLLM does not know how to route.

    Attributes:
        model: the model string as given.
    """

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class MissingExtraError(RLMError, ImportError):
    """An optional dependency is missing; the message names the extra to install.

    Attributes:
        extra: the name of the extra, e.g. ``"dspy"``.
    """

    def __init__(self, extra: str, feature: str) -> None:
        super().__init__(f'{feature} needs the [{extra}] extra: pip install "rlm-integrations[{extra}]"')
        self.extra = extra


class REPLError(RLMError):
    """The REPL itself failed, as opposed to an error raised by code inside a cell."""


class WorkerStartError(REPLError):
    """The worker process could not be started (or did not report ready in time)."""


class IsolationError(WorkerStartError):
    """The worker started, but a layer of its OS isolation is missing and the REPL requires all of them.

    Raised by `LocalREPL(require_isolation=True)` at start; the worker is stopped first.
    The message names each missing layer, why it is missing and how to fix it (for
    example ``apt-get install bubblewrap``, or allowing unprivileged user namespaces).

    Attributes:
        missing: one line per missing layer, as in `Isolation.missing`.
    """

    def __init__(self, message: str, *, missing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.missing = missing


class WorkerCrashedError(REPLError):
    """The worker process died and a restart did not bring it back."""


class REPLClosedError(REPLError):
    """The REPL was used after `close()`; create a new one."""


class ModelError(RLMError):
    """A language-model call failed after its retries were spent.

    Attributes:
        model: the model that failed.
    """

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


class ContextWindowExceededError(ModelError):
    """A prompt is larger than the model's context window; nothing was sent.

    Attributes:
        prompt_tokens: the prompt's size in tokens (estimated where no tokenizer exists).
        max_tokens: the model's window.
    """

    def __init__(self, message: str, *, model: str, prompt_tokens: int, max_tokens: int) -> None:
        super().__init__(message, model=model)
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens


class BudgetExhaustedError(RLMError):
    """A run stopped because a budget ran out.

    The core never raises this from `RLM.completion`: there the run returns a result whose
    `status` names the limit. Integrations raise it where the framework expects an
    exception (for instance so that LangChain's `with_retry` does not retry it).

    Attributes:
        status: the result status, e.g. ``"budget_exhausted"``.
        limit: the limit that was hit, e.g. ``"max_llm_calls"``.
    """

    def __init__(self, message: str, *, status: str, limit: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.limit = limit


class RunFailedError(RLMError):
    """A run ended with status ``"error"`` or ``"cancelled"``; `.result` holds what it produced.

    The core never raises this from `RLM.completion` (there the result's `status` says it).
    Integrations raise it where the framework expects a failure to be an exception, so that
    retries, fallbacks and tracers see it (LangChain's `RLMRunnable` and `RLMChatModel` do by
    default). A limit that ends a run early is not a failure and never raises this.

    Attributes:
        result: the partial result (an `RLMResult`, or the integration's output model such as
            `RLMOutput`): usage, iterations and the trajectory up to the failure.
        status: the result status, ``"error"`` or ``"cancelled"``.
        error: what went wrong, as the result reports it.
    """

    def __init__(self, message: str, *, result: Any, status: str, error: str | None) -> None:
        super().__init__(message)
        self.result = result
        self.status = status
        self.error = error


class ContextTooLargeError(UsageError):
    """A context larger than `RLMConfig.max_context_bytes`; refused before any copy is made.

    Attributes:
        size: the context's measured size (characters for str, bytes for bytes, summed over
            the items of lists and dicts; counting stops just past the limit).
        limit: the configured maximum.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class ReservedNameError(ConfigError):
    """A tool named like a REPL built-in (`llm_query`, `FINAL`, `context`, `print`, a module...).

    Attributes:
        name: the tool's name.
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class TrajectoryError(RLMError, ValueError):
    """A trajectory file that cannot be read: a line before the last is not a complete event.

    A torn *last* line (a crash mid-write) is not an error: `Trajectory.load` keeps what
    precedes it and warns with `TruncatedTrajectoryWarning`.

    Attributes:
        path: the file.
        line: the 1-based line number of the bad line.
    """

    def __init__(self, message: str, *, path: str, line: int) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class TruncatedTrajectoryWarning(UserWarning):
    """A trajectory file's last line was cut short (a crash mid-write); the events before it were kept."""


class BudgetConfigError(ConfigError):
    """`max_cost_usd` is set but a model of the run has no price, so the limit could not hold.

    Refused before any call. Give the price in `RLMConfig.prices` (model name to
    `ModelPrice(input_usd_per_token=..., output_usd_per_token=...)`), or price the model
    itself (`LiteLLMModel(..., input_cost_per_token=..., output_cost_per_token=...)`).

    Attributes:
        models: the names of the unpriced models.
    """

    def __init__(self, message: str, *, models: list[str]) -> None:
        super().__init__(message)
        self.models = models


class RunCancelled(asyncio.CancelledError):
    """`RLM.acompletion` was cancelled; `.result` is the partial `RLMResult` (status ``"cancelled"``).

    A subclass of `asyncio.CancelledError`, so cancellation still propagates as usual.

    Attributes:
        result: what the run had when it was cancelled: usage, iterations, and a
            trajectory whose interrupted steps are closed.
    """

    def __init__(self, result: Any) -> None:
        super().__init__("the run was cancelled")
        self.result = result


class RunInterrupted(KeyboardInterrupt):
    """`RLM.completion` was interrupted (Ctrl-C); `.result` is the partial `RLMResult` (status ``"cancelled"``).

    A subclass of `KeyboardInterrupt`, so `except KeyboardInterrupt` still catches it.

    Attributes:
        result: what the run had when it was interrupted.
    """

    def __init__(self, result: Any) -> None:
        super().__init__("the run was interrupted")
        self.result = result


class CheckpointError(RLMError, ValueError):
    """A session checkpoint that cannot be read back: not a checkpoint, corrupt, or from an unknown format.

    Nothing is restored from a checkpoint that fails its checks (the stored context's
    sha256, the archive's own checksums, the manifest).

    Attributes:
        path: the checkpoint file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
