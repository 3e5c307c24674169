"""The words the root model reads: system prompt, first message, feedback, corrections.

The system prompt is package data (`templates/system.md`) so it can be read and diffed as text.
"""

from __future__ import annotations

import functools
from importlib import resources

from rlm_integrations.core.events import ContextInfo
from rlm_integrations.core.repl_helpers import HELPER_DOCS
from rlm_integrations.repl.worker.policy import ALLOWED_MODULES

__all__ = [
    "closing_request",
    "direct_message",
    "direct_request",
    "direct_system",
    "first_message",
    "missing_code_message",
    "next_turn_message",
    "question_reminder",
    "repeated_code_note",
    "system_prompt",
    "unchecked_answer_note",
]


@functools.cache
def _template() -> str:
    return resources.files("rlm_integrations.core").joinpath("templates/system.md").read_text(encoding="utf-8")


def system_prompt(*, sub_prompt_chars: int, tools: dict[str, str] | None = None) -> str:
    """The system prompt, with the sub-model's prompt size and any user tools filled in."""
    tool_lines = ""
    if tools:
        tool_lines = "".join(f"- `{name}(...)`: {doc}\n" for name, doc in tools.items())
    helper_lines = "".join(f"- {doc}\n" for name, doc in HELPER_DOCS.items() if name not in (tools or {}))
    return _template().format(
        sub_prompt_chars=f"{sub_prompt_chars:,}",
        modules=", ".join(sorted(ALLOWED_MODULES)),
        tools=tool_lines,
        helpers=helper_lines,
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


def first_message(
    query: str, info: ContextInfo | None, max_iterations: int, *, probe: str = "", opening: str = ""
) -> str:
    """The first user message: the question, the context's shape and, if given, where the question's words occur.

    `opening` is a first step the loop already ran for the question (`opening_step`); the
    message then asks for an answer or the next block rather than the first.
    """
    found = f"\n\n{probe}" if probe else ""
    if opening:
        return (
            f"Question: {query}\n\n{describe_context(info)}{found}\n\n{opening}\n\n"
            f"You have {max_iterations} turns. If the output answers the question, reply with FINAL(answer). "
            "Otherwise write the next ```repl block."
        )
    return (
        f"Question: {query}\n\n{describe_context(info)}{found}\n\n"
        f"You have {max_iterations} turns. Write your first ```repl block."
    )


def opening_step(code: str, feedback: str) -> str:
    """A first step the loop ran for the question's shape before the model's first turn, with what it printed."""
    return f"A first step for this question, already run:\n```repl\n{code}\n```\n{feedback}"


def next_turn_message(feedback: str, turns_left: int) -> str:
    """The user message after a turn: what the cells printed, and a nudge."""
    ending = (
        "This is your last turn: call FINAL(answer) now."
        if turns_left <= 1
        else (
            f"{turns_left} turns left. If the output answers the question, reply with FINAL(answer). "
            "Otherwise write the next ```repl block."
        )
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
        f"Stop here: {reason}. Do not write code. Using what the outputs above showed, "
        "reply with one line: FINAL( then the answer to the question, then )."
    )


def repeated_code_note() -> str:
    """Said when the model runs code it already ran (small models loop on one block)."""
    return (
        "Note: you already ran this exact code; its output is above. If that output answers the question, "
        "call FINAL(answer) now. Otherwise write different code."
    )


def unchecked_answer_note(answer: object, first_step: str | None = None) -> str:
    """Said once when a question that needs every match (list, count, group, chain) is answered before any code ran.

    `first_step`, when given, is a cell for the question's shape to start from (`question_shape.first_step`).
    """
    start = (
        f" For this question, start with:\n```repl\n{first_step}\n```\n"
        if first_step
        else " Run code that checks the whole context (the functions in the system prompt), then answer."
    )
    return (
        f"Your answer {answer!r} comes before any code ran. The first message shows only where the question's "
        f"words first occur, not every line that answers it.{start} If you are sure, call FINAL again with the "
        "same answer."
    )


def copied_example_note(answer: object) -> str:
    """Said once when an answer repeats the worked example's, whose values are invented."""
    return (
        f"Your answer {answer!r} is the worked example's answer, invented for that example; it says nothing about "
        "this context. Answer from what your code printed for this question. If you are sure, call FINAL again "
        "with the same answer."
    )


def copied_example_error(answer: object) -> str:
    """The run's error when the closing answer only repeats the worked example's."""
    return f"no answer: the closing reply {answer!r} only repeated the worked example's invented answer"


def question_reminder(query: str) -> str:
    """The question again, at the end of each turn's feedback."""
    return f"Question: {query}"


def direct_system() -> str:
    """The system prompt of the direct route: read the text, answer in one line."""
    return (
        "You answer a question about a text, which is given in full. Read it carefully. "
        "Reply with one line: FINAL( then the answer, then )."
    )


def direct_message(query: str, text: str) -> str:
    """The direct route's user message: the whole text, then the question."""
    return f"Text:\n{text}\n\nQuestion: {query}"


def direct_request() -> str:
    """The direct route's request, after the text and question."""
    return "Answer from the text above. Reply with one line: FINAL( then the answer to the question, then )."
