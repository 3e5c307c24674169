"""Whether to accept a submitted answer, or send it back once with what to check first.

Small models submit answers that nothing has checked: the one name the probe's quote shows
as the whole answer to "which names, directly or through others?", or ``[]`` after code
that matched no line. Each check asks once per run and never on the last turn, so a model
that is sure only has to submit the same answer again. The user's own answer check
(`RunState.check_answer`, e.g. the DSPy face's output types) runs after them.
"""

from __future__ import annotations

import re
from typing import Any

from rlm_integrations.core import prompts
from rlm_integrations.core.parsing import is_typed_answer
from rlm_integrations.core.question_shape import Shape
from rlm_integrations.core.run_state import RunState
from rlm_integrations.core.worked_examples import normal_answer, worked_example
from rlm_integrations.repl.protocol import CellResult, FinalAnswer

__all__ = ["REJECTED", "check_answer", "copies_example", "example_answer", "printed_nothing"]

REJECTED = "FINAL was not accepted:"
"""How feedback starts when the user's answer check refused an answer."""


def check_answer(
    state: RunState, final: FinalAnswer, code: str | None, *, max_iterations: int
) -> tuple[bool, Any, str | None]:
    """Accept `final` (given by the cell `code`, or as text when None), or say what to check first.

    Returns:
        (accepted, the answer, the feedback when not accepted).
    """
    doubt = state.helpers.challenge(final.value)  # an empty answer after an empty search or a silent turn
    if doubt is None and copies_example(state, final.value) and not state.doubted_copy:
        state.doubted_copy = True  # on the last turn too: the closing request is one more chance
        doubt = prompts.copied_example_note(final.value)
    if doubt is None and final.variable is None and is_typed_answer(code):
        doubt = _unchecked_doubt(state, final.value, max_iterations)
    if doubt is not None:
        return False, None, doubt
    if state.check_answer is None:
        return True, final.value, None
    try:
        return True, state.check_answer(final), None
    except ValueError as error:
        return False, None, f"{REJECTED} {error}"


def _unchecked_doubt(state: RunState, answer: Any, max_iterations: int) -> str | None:
    """Question once a typed-in answer to a list, count, group or chain question given before any output was seen.

    The probe quotes a first mention, and small models copy it as the whole answer ("which names
    equal 10852, directly or through others?" answered with the one name the quote shows).
    """
    if state.shape == "lookup" or state.seen_output or state.doubted_unchecked:
        return None
    if state.iteration >= max_iterations:  # no turn left to check in
        return None
    state.doubted_unchecked = True
    return prompts.unchecked_answer_note(answer, state.first_step)


def example_answer(shape: Shape, context: Any) -> str | None:
    """The shown example's answer (`WorkedExample.answer`) to watch for, None when the context itself holds it.

    The examples' values are invented, so a context that does write them (a test, a coincidence)
    makes them a possible real answer: every word of the answer found in the text turns the check off.
    """
    answer = worked_example(shape).answer
    if answer is None:
        return None
    text = context if isinstance(context, str) else str(context)
    words = re.findall(r"\w+", answer)
    if words and all(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) for word in words):
        return None
    return answer


def copies_example(state: RunState, answer: Any) -> bool:
    """Whether `answer` repeats the answer of the worked example the model was shown (its values are invented)."""
    return state.example_answer is not None and normal_answer(answer) == state.example_answer


def printed_nothing(cell: CellResult) -> bool:
    """Whether a cell showed the model nothing: no output, no trailing value, no error."""
    return not cell.stdout.strip() and cell.value is None and cell.error is None
