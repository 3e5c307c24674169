"""The words the root model reads: system prompt, first message, feedback, corrections.

The system prompt is package data (`templates/system.md`) so it can be read and diffed as text.
"""

from __future__ import annotations

import functools
from importlib import resources

from rlm_integrations.core.events import ContextInfo
from rlm_integrations.repl._policy import ALLOWED_MODULES

__all__ = [
    "closing_request",
    "first_message",
    "missing_code_message",
    "next_turn_message",
    "system_prompt",
]


@functools.cache
def _template() -> str:
    return resources.files("rlm_integrations.core").joinpath("templates/system.md").read_text(encoding="utf-8")


def system_prompt(*, sub_prompt_chars: int, tools: dict[str, str] | None = None) -> str:
    """The system prompt, with the sub-model's prompt size and any user tools filled in."""
    tool_lines = ""
    if tools:
        tool_lines = "".join(f"- `{name}(...)`: {doc}\n" for name, doc in tools.items())
    return _template().format(
        sub_prompt_chars=f"{sub_prompt_chars:,}",
        modules=", ".join(sorted(ALLOWED_MODULES)),
        tools=tool_lines,
    )


def describe_context(info: ContextInfo | None) -> str:
    """One paragraph about the context: type, size and opening."""
    if info is None:
        return "There is no context for this question; `context` is None."
    items = f" with {info.items:,} items" if info.items is not None else ""
    text = f"`context` is a {info.type}{items}, {info.chars:,} characters in total."
    if info.preview:
        text += f" It begins:\n{info.preview}"
    return text


def first_message(query: str, info: ContextInfo | None, max_iterations: int) -> str:
    """The first user message: the question and what the context looks like."""
    return (
        f"Question: {query}\n\n{describe_context(info)}\n\n"
        f"You have {max_iterations} turns. Write your first ```repl block."
    )


def next_turn_message(feedback: str, turns_left: int) -> str:
    """The user message after a turn: what the cells printed, and a nudge."""
    ending = (
        "This is your last turn: call FINAL(answer) now."
        if turns_left <= 1
        else (f"{turns_left} turns left. Write the next ```repl block, or call FINAL(answer) if you are sure.")
    )
    return f"{feedback}\n\n{ending}"


def missing_code_message() -> str:
    """The correction for a reply with neither a code block nor FINAL."""
    return (
        "Your reply had no ```repl code block and no FINAL(...). "
        "Write one ```repl block of Python, or call FINAL(answer) in one."
    )


def closing_request(reason: str) -> str:
    """The last request when a limit is hit: answer now, no code."""
    return (
        f"Stop here: {reason}. Do not write code. Reply with FINAL(your best answer) now, "
        "based on what you have found so far."
    )
