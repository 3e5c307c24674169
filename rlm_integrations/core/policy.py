"""How the next step is produced.

`ChatPolicy` drives a chat model (the paper's form); the DSPy integration supplies a
policy backed by `dspy.Predict`. The loop does not care which.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from rlm_integrations.core import prompts
from rlm_integrations.lm.protocol import Completion, LanguageModel, Message

__all__ = ["ChatPolicy", "Policy"]


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


class ChatPolicy:
    """A plain chat conversation: system prompt, then alternating replies and feedback.

    Args:
        model: the root language model.
        example: start with one worked exchange (search, read the output, answer) before
            the real question. Small models need it; None (the default) asks the model,
            through its `prefers_worked_example` attribute (True for `LocalModel`).
        params: extra parameters for every call (temperature, max_tokens, ...).
    """

    def __init__(self, model: LanguageModel, *, example: bool | None = None, **params: Any) -> None:
        self.model = model
        self.example = bool(getattr(model, "prefers_worked_example", False)) if example is None else example
        self.model_name = model.name
        self.params = params
        self.messages: list[Message] = []
        self._reported = 0

    def begin(self, system: str, first: str) -> None:
        """Start with the system prompt and the first user message."""
        self.messages = [{"role": "system", "content": system}]
        if self.example:
            self.messages.extend(prompts.example_dialogue())  # type: ignore[arg-type]
        self.messages.append({"role": "user", "content": first})
        self._reported = 0

    async def step(self, *, closing: str | None = None) -> Completion:
        """Call the model with the conversation so far and append its reply."""
        if closing is not None:
            self._add_user(closing)
        completion = await self.model.acomplete(list(self.messages), **self.params)
        self.messages.append({"role": "assistant", "content": _without_imagined_output(completion.text)})
        self._reported = len(self.messages)  # the reply is recorded by the call's end event, not again here
        return completion

    def observe(self, feedback: str) -> None:
        """Append feedback as the next user message."""
        self._add_user(feedback)

    def _add_user(self, text: str) -> None:
        # Never two user messages in a row (some servers reject it): merge instead.
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1] = {"role": "user", "content": self.messages[-1]["content"] + "\n\n" + text}
        else:
            self.messages.append({"role": "user", "content": text})

    def pending_messages(self) -> list[dict[str, str]]:
        """Messages added since the previous call."""
        return [{"role": m["role"], "content": m["content"]} for m in self.messages[self._reported :]]


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
