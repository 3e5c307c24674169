"""How the next step is produced.

`ChatPolicy` drives a chat model (the paper's form); the DSPy integration supplies a
policy backed by `dspy.Predict`. The loop does not care which.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from rlm_integrations.core.history import Conversation, HistoryLimits
from rlm_integrations.core.question_shape import Probe, Shape
from rlm_integrations.core.worked_examples import example_for
from rlm_integrations.errors import ContextWindowExceededError
from rlm_integrations.lm.protocol import Completion, LanguageModel, Message

__all__ = ["ChatPolicy", "Policy", "QuestionAware"]

_OVERFLOW_RETRIES = 2


@runtime_checkable
class Policy(Protocol):
    """One run's conversation with its root model.

    Lifecycle: `begin` once, then `step` / `observe` pairs; `step(closing=...)` with
    the closing request when a limit is hit. A policy instance serves one run.
    """

    model_name: str

    def begin(self, system: str, first: str) -> None:
        """Start the conversation."""
        ...

    async def step(self, *, closing: str | None = None) -> Completion:
        """Ask for the next reply (with `closing`, the request to answer without code)."""
        ...

    def observe(self, feedback: str) -> None:
        """Add what the last reply's cells did (or a correction) to the conversation."""
        ...

    def pending_messages(self) -> list[dict[str, str]]:
        """Messages added since the previous `step` (for the trajectory)."""
        ...


@runtime_checkable
class QuestionAware(Protocol):
    """A policy that names the question the engine probes, and hears the probe before `begin` (optional).

    Before the first turn the engine counts where the question's words occur in the
    context and picks the question's shape (`rlm_integrations.core.question_shape`). By
    default it probes the run's `query` against its `context`. A face whose real question
    is elsewhere (the DSPy face: the query is the signature's instructions, the question an
    input field's value, the text any input variable) implements this protocol: the engine
    probes what `probe_subject` returns and hands the result to `orient`.
    """

    def probe_subject(self, query: str, context: Any) -> tuple[str, Any]:
        """The question and the text to probe it against (None: nothing to probe), given the run's own."""
        ...

    def orient(self, probe: Probe | None, shape: Shape) -> None:
        """Take the probe (None when there was nothing to probe) and the question's shape, before `begin`."""
        ...


class ChatPolicy:
    """A plain chat conversation: system prompt, then alternating replies and feedback.

    The conversation is bounded (see `rlm_integrations.core.history`): each reply and
    feedback message is kept cut to a size, and older turns are compacted into a digest
    before the prompt nears the model's window. If the provider still reports an overflow,
    the window is taken from its error (or assumed smaller than the prompt sent), the
    history is compacted harder, and the call is retried (twice at most).

    Args:
        model: the root language model.
        example: start with one worked exchange before the real question, chosen by the
            question's shape (`shape`; see `rlm_integrations.core.worked_examples`). Small
            models need it; None (the default) asks the model, through its
            `prefers_worked_example` attribute (True for `LocalModel`).
        history: the history bounds; None takes them from the run's `RLMConfig` (the
            engine calls `configure`), or the defaults.
        params: extra parameters for every call (temperature, max_tokens, ...).
    """

    def __init__(
        self, model: LanguageModel, *, example: bool | None = None, history: HistoryLimits | None = None, **params: Any
    ) -> None:
        self.model = model
        self.example = bool(getattr(model, "prefers_worked_example", False)) if example is None else example
        self.model_name = model.name
        self.params = params
        self._fixed_limits = history is not None
        self.history = self._conversation(history or HistoryLimits())
        self._pending: list[Message] = []
        self.shape: Shape = "lookup"
        """The question's shape (set by the engine before `begin`): which worked example is shown."""

    def _conversation(self, limits: HistoryLimits) -> Conversation:
        return Conversation(
            limits, getattr(self.model, "count_tokens", None), getattr(self.model, "context_window", None)
        )

    def configure(self, config: Any) -> None:
        """Take the history bounds from `config` (an `RLMConfig`), unless bounds were given explicitly."""
        if not self._fixed_limits:
            self.history = self._conversation(HistoryLimits.from_config(config))

    @property
    def messages(self) -> list[Message]:
        """The messages the next call sends (bounded and compacted; a copy)."""
        return self.history.messages()

    def begin(self, system: str, first: str) -> None:
        """Start with the system prompt and the first user message."""
        head: list[Message] = [{"role": "system", "content": system}]
        if self.example:
            head.extend(example_for(self.shape))  # type: ignore[arg-type]
        head.append({"role": "user", "content": first})
        self.history.start(head)
        self._pending = [{"role": m["role"], "content": m["content"]} for m in head]

    def next_request(self) -> tuple[list[Message], dict[str, Any]]:
        """The messages and parameters the next `step()` (without `closing`) will send (for the call cache)."""
        self.history.fit()  # what `step` does first; fitting twice changes nothing
        return self.history.messages(), dict(self.params)

    async def step(self, *, closing: str | None = None) -> Completion:
        """Call the model with the conversation so far and append its reply.

        Raises:
            ContextWindowExceededError: the provider refused the prompt as too long even
                after the history was compacted as far as it goes.
        """
        if closing is not None:
            self._add_user(closing)
        self.history.fit()
        attempt = 0
        while True:
            try:
                completion = await self.model.acomplete(self.history.messages(), **self.params)
                break
            except ContextWindowExceededError as error:
                attempt += 1
                if attempt > _OVERFLOW_RETRIES or not self._after_overflow(error):
                    raise
        self.history.add_reply(_without_imagined_output(completion.text))
        self._pending = []  # the reply is recorded by the call's end event, not again here
        return completion

    def _after_overflow(self, error: ContextWindowExceededError) -> bool:
        """Learn a smaller window from a refused prompt and compact hard; False if nothing could shrink."""
        sent = self.history.tokens()
        window = error.max_tokens or int(sent * 0.9)  # no window in the error: the prompt sent was too big
        self.history.window = min(self.history.window, max(window, 1_000))
        half = self.history.usable_tokens // 2
        return self.history.compact(1, target=half, limit=half, emergency=True)

    def observe(self, feedback: str) -> None:
        """Append feedback as the next user message."""
        self._add_user(feedback)

    def _add_user(self, text: str) -> None:
        # Never two user messages in a row (some servers reject it): merge instead.
        kept = self.history.add_user(text)
        if self._pending and self._pending[-1]["role"] == "user":
            self._pending[-1] = {"role": "user", "content": self._pending[-1]["content"] + "\n\n" + kept}
        else:
            self._pending.append({"role": "user", "content": kept})

    def pending_messages(self) -> list[dict[str, str]]:
        """Messages added since the previous call."""
        return [{"role": m["role"], "content": m["content"]} for m in self._pending]


_OUTPUT_LINE = re.compile(r"\n[ \t]*Output\b", re.IGNORECASE)
_CODE_FENCE = re.compile(r"```[ \t]*(?:repl|python3?|py)\b", re.IGNORECASE)


def _without_imagined_output(text: str) -> str:
    """Drop an "Output: ..." the model wrote itself after its code.

    Small models imitate the feedback format and invent the output of their own code;
    kept in the history, the invention competes with the real output that follows.
    The cut is made only outside a code block and only where no further code block
    follows, so every block that ran stays.
    """
    for match in _OUTPUT_LINE.finditer(text):
        before = text[: match.start()]
        fences = before.count("```")
        if fences == 0 or fences % 2 == 1:
            continue
        if _CODE_FENCE.search(text, match.start()):
            continue
        return before.rstrip()
    return text
