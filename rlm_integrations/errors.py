"""The exceptions raised by rlm-integrations.

Everything we raise derives from `RLMError`. The tree separates mistakes the caller can
fix before anything runs from failures of the machinery during a run:

```
RLMError
├── UsageError                    the caller's input or set-up is wrong; raised before any spend
│   ├── ConfigError               an option is out of range or options contradict each other
│   ├── UnsupportedContextError   a context value the REPL cannot hold (also a TypeError)
│   ├── MissingAPIKeyError        a provider needs a key that is neither passed nor in the environment
│   ├── UnknownModelError         a model string LiteLLM cannot route
│   └── MissingExtraError         an optional dependency is not installed (also an ImportError)
├── REPLError                     the REPL itself failed (not an error inside a cell)
│   ├── WorkerStartError          the worker process could not start
│   ├── WorkerCrashedError        the worker died and could not be restarted
│   └── REPLClosedError           the REPL was used after `close()`
├── ModelError                    a language-model call failed after its retries
│   └── ContextWindowExceededError  a prompt larger than the model's window
└── BudgetExhaustedError          a run hit a limit (raised only where a framework wants an exception)
```

An error *inside* a cell (a `NameError`, a refused attribute, a timeout) is never raised
on the host: it comes back in `CellResult.error` for the model to read and fix.
"""

from __future__ import annotations

__all__ = [
    "BudgetExhaustedError",
    "ConfigError",
    "ContextWindowExceededError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ModelError",
    "REPLClosedError",
    "REPLError",
    "RLMError",
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
