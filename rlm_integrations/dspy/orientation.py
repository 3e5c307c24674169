"""The per-question help the root predictor gets: the probe of the question, and for small models a worked example.

The core loop looks at the question before the first turn (`rlm_integrations.core.question_shape`):
which of its words occur in the text and in how many lines, and what shape it has (look
up, list, count, count by reading, group, follow references). For the DSPy face the engine's query is the
signature's instructions, so this module says what the question really is: the values of
the short text inputs (``question=...``), probed against the `context` input (or, without
one, the largest other input). The engine probes that (`PredictPolicy.probe_subject`) and
the policy shows the result in the `context_probe` input of `generate_code`.

For a root LM that prefers worked examples (small local models; see
`prefers_worked_example`) the core's worked example for the question's shape
(`rlm_integrations.core.worked_examples.worked_example`) is turned into `generate_code`
demos, one per turn, from its parts (question, context, probe, code turns, final reply;
no rendered message is read back). They are used only while the predictor has no demos of its own: demos an optimizer
set always win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dspy

from rlm_integrations.core.events import ContextInfo
from rlm_integrations.core.question_shape import Probe, Shape
from rlm_integrations.core.repl_helpers import split_items
from rlm_integrations.core.worked_examples import WorkedExample, worked_example
from rlm_integrations.dspy.inputs import variable_paragraph
from rlm_integrations.dspy.signatures import GUIDE_PLACEHOLDER
from rlm_integrations.dspy.steps import Step, render_history

__all__ = [
    "NOT_PROBED",
    "QUESTION_CHARS",
    "ProbeSubject",
    "prefers_worked_example",
    "probe_note",
    "probe_subject",
    "worked_demos",
]

QUESTION_CHARS = 2_000
"""A text input (other than `context`) up to this long is part of the question; a longer one is data."""

NOT_PROBED = "(nothing was probed: no input holds text to search)"
"""The `context_probe` input when there is no text to count the question's words in."""

_NO_TERMS = "(the question has no content words to look for in the text)"

_REASONING: dict[Shape, str] = {
    "lookup": "The probe says which of the question's words are rare in the text. Print the lines that hold them.",
    "list": "The question asks for every match, so print all the matching lines, not only the first one.",
    "count": "The question's words occur in the text, so matching can count: keep the lines that hold all of them.",
    "count_reading": (
        "The question's words are not in the text, so matching cannot count: read each item with llm_filter."
    ),
    "group": "Look at a few lines first, then group the records by the value that follows the shared attribute.",
    "chain": "Look at the line that holds the start, then follow each new name to the lines that refer to it.",
}
_SUBMIT_REASONING = "The output above answers the question; submit it."


@dataclass(frozen=True)
class ProbeSubject:
    """What the engine probes for one call: the question's text and the input it is counted in."""

    question: str
    """The question's text ("" when no input holds one: the signature's instructions are probed instead)."""
    question_fields: tuple[str, ...]
    """The input fields the question was taken from, in signature order."""
    name: str | None
    """The input variable probed (None: nothing to probe)."""
    value: Any = None
    """That variable's value."""


def probe_subject(values: Mapping[str, Any], fields: Mapping[str, Any]) -> ProbeSubject:
    """Split a call's inputs into the question and the text to probe it against.

    The question is every non-empty text input other than `context` that is at most
    `QUESTION_CHARS` long, in field order. The text probed is `context` when the
    signature has it; otherwise the largest other input (a long text, a list or a dict),
    or, when every input is a short text, the longest of them.
    """
    texts = {
        name: value
        for name in fields
        if name != "context"
        and isinstance(value := values.get(name), str)
        and value.strip()
        and len(value) <= QUESTION_CHARS
    }
    target: str | None = None
    if "context" in fields and values.get("context") is not None:
        target = "context"
    else:
        data = [name for name in fields if name not in texts and isinstance(values.get(name), str | list | dict)]
        if data:
            target = max(data, key=lambda name: _chars(values[name]))
        elif len(texts) > 1:
            target = max(texts, key=lambda name: len(texts[name]))
            texts.pop(target)
    return ProbeSubject(
        question="\n".join(texts.values()),
        question_fields=tuple(texts),
        name=target,
        value=None if target is None else values[target],
    )


def _chars(value: str | list[Any] | dict[str, Any]) -> int:
    return len(value) if isinstance(value, str) else sum(len(item) for item in split_items(value))


def probe_note(probe: Probe | None, name: str, shape: Shape = "lookup") -> str:
    """The `context_probe` input: the core probe's paragraph, naming the variable that was probed."""
    if probe is None:
        return NOT_PROBED
    text = probe.describe_for(shape) or _NO_TERMS
    return text if name == "context" else text.replace("`context`", f"`{name}`")


def prefers_worked_example(lm: Any) -> bool:
    """Whether a `dspy.BaseLM` asks for worked examples, as our `LanguageModel`s do (`LocalModel`: yes).

    Read from the LM's own `prefers_worked_example` attribute, else from its custom engine
    (`dspy.LM(..., engine=...)`) or the model that engine drives (an engine over a
    `LocalModel` has it as `.model`). False when none of them says.
    """
    engine = getattr(lm, "_engine_spec", None)
    for owner in (lm, engine, getattr(engine, "model", None)):
        value = getattr(owner, "prefers_worked_example", None)
        if isinstance(value, bool):
            return value
    return False


def worked_demos(shape: Shape, *, question_field: str, single_output: bool, max_iterations: int) -> list[dspy.Example]:
    """The core's worked example for `shape` as `generate_code` demos, one per turn.

    Built from the example's parts (`rlm_integrations.core.worked_examples.WorkedExample`):
    each demo has every input of `generate_code` (the guide as its placeholder, the
    example's context and question as `variables_info`, its probe paragraph as
    `context_probe`, the turns so far as `repl_history`) and the turn's `reasoning` and
    `code`. The example submits with ``FINAL(value)``, which only a signature with one
    output accepts, so with several outputs the submitting turn is left out.
    """
    example = worked_example(shape)
    variables_info = _example_variables(example, question_field)
    probe = example.probe or _NO_TERMS
    turns = [(turn.code, _REASONING[shape], turn.feedback) for turn in example.turns]
    if single_output:
        turns.append((example.final, _SUBMIT_REASONING, ""))
    steps: list[Step] = []
    demos: list[dspy.Example] = []
    for number, (code, reasoning, output) in enumerate(turns, 1):
        demos.append(
            dspy.Example(
                repl_guide=GUIDE_PLACEHOLDER,
                variables_info=variables_info,
                context_probe=probe,
                repl_history=render_history(steps, 3_000),
                iteration=f"Turn {number} of {max_iterations}.",
                reasoning=reasoning,
                code=code,
            )
        )
        steps.append(Step(number, reasoning, code, output))
    return demos


def _example_variables(example: WorkedExample, question_field: str) -> str:
    """The `variables_info` input of a worked example's demos: its invented `context`, then its question.

    Written by `variable_paragraph`, as `describe_variables` writes real inputs.
    """
    question = example.question
    asked = variable_paragraph(question_field, "str", f", {len(question):,} characters", question)
    return f"{_describe_context(example.context)}\n\n{asked}"


def _describe_context(info: ContextInfo) -> str:
    size = f", {info.items:,} items" if info.items is not None else f", {info.chars:,} characters"
    more = f"\n... ({info.chars - len(info.preview):,} more characters)" if info.preview else ""
    return variable_paragraph("context", info.type, size, f"{info.preview}{more}")
