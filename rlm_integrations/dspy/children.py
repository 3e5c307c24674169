"""Child runs (`rlm_query`) through the module's own `generate_code` predictor.

A child run answers a sub-question over the piece of data its parent handed it. Its turns
come from the same `generate_code` predictor as the root's, so what an optimizer tunes
(instructions, demos) applies at every depth, and DSPy's trace holds every step of the
tree: a BootstrapFewShot demo may come from a child's step as well as the root's.

What differs for a child, and how it is told:

- its inputs are the sub-question and `context` only (the parent's other inputs are not
  loaded), so its `repl_guide` describes a ``context -> answer`` task;
- `variables_info` opens with a note that this is a sub-task and the question to answer,
  since the instructions (shared with the root) describe the root's task;
- its answer is one value, submitted with ``FINAL(value)`` and returned to the parent's
  code as text; when a limit ends it, a hidden (untuned) predictor writes the answer from
  the child's history.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import dspy
from dspy.signatures.signature import ensure_signature

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.dspy.outputs import submit_hint
from rlm_integrations.dspy.policy import PredictPolicy
from rlm_integrations.dspy.signatures import extract_signature, repl_guide
from rlm_integrations.dspy.steps import render_history
from rlm_integrations.lm.protocol import Completion, LanguageModel

__all__ = ["CHILD_NOTE", "ChildPolicy", "child_extractor", "child_policy_factory"]

_CHILD_SIGNATURE = ensure_signature("context -> answer: str")

CHILD_NOTE = (
    "This run is a sub-task: your parent run called rlm_query(...) and waits for your answer. Answer the question "
    "below (not the overall task the instructions describe), using the `context` variable, and submit the answer "
    "itself with FINAL(value)."
)
"""What a child's `variables_info` opens with."""

_SUBMIT = "Submit in code with FINAL(value): the answer to the sub-question (it reaches the parent as text)."


class ChildPolicy(PredictPolicy):
    """A `PredictPolicy` for a child run: the question comes from the engine's first message.

    `extract` here is the hidden child extractor (one `answer` output), and its answer is
    returned as plain text, which the engine takes as the child's closing answer.
    """

    def begin(self, system: str, first: str) -> None:
        """Start the run: the first message (the question and the context's description) becomes `variables_info`."""
        super().begin(system, first)
        if self.probe_paragraph:  # shown as the `context_probe` input instead
            first = first.replace(f"\n\n{self.probe_paragraph}", "", 1)
        lines = first.rstrip().splitlines()
        if lines and lines[-1].startswith("You have "):  # the chat prompt's "write your first block" line
            lines = lines[:-1]
        self.variables_info = f"{CHILD_NOTE}\n\n" + "\n".join(lines).strip()

    async def _extract(self) -> Completion:
        inputs = {"variables_info": self.variables_info, "repl_history": render_history(self.steps, self.history_chars)}
        lm = self.extract.lm or self.root_lm
        prediction, usage, raw = await self._predict(self.extract, inputs, ("answer",), lm=lm)
        if prediction is None:
            return Completion(text=raw, usage=usage, model=self.model_name)
        return Completion(text=str(prediction.get("answer") or ""), usage=usage, model=self.model_name)


def child_policy_factory(
    *,
    generate: dspy.Predict,
    extract: dspy.Predict,
    root_lm: dspy.BaseLM,
    config: RLMConfig,
    tool_docs: Mapping[str, str],
    sub_prompt_chars: int,
    budget_note: Callable[[], str],
    history_chars: int,
    demo_chars: int,
    parse_retries: int,
    worked_examples: bool = False,
) -> Callable[[LanguageModel], ChildPolicy]:
    """The engine's `policy_factory` for child runs: a fresh `ChildPolicy` per child, sharing `generate`."""
    guide = repl_guide(_CHILD_SIGNATURE, sub_prompt_chars=sub_prompt_chars, tools=tool_docs)
    guide = guide.replace(submit_hint(_CHILD_SIGNATURE.output_fields), _SUBMIT)

    def factory(model: LanguageModel) -> ChildPolicy:
        return ChildPolicy(
            generate=generate,
            extract=extract,
            root_lm=root_lm,
            query="",
            repl_guide=guide,
            variables_info="",
            output_fields=_CHILD_SIGNATURE.output_fields,
            max_iterations=config.max_iterations,
            budget_note=budget_note,
            history_chars=history_chars,
            demo_chars=demo_chars,
            parse_retries=parse_retries,
            worked_examples=worked_examples,
        )

    return factory


@functools.cache
def child_extractor() -> dspy.Predict:
    """The hidden predictor that writes a child's answer when a limit ends it (never tuned; it has no LM of its own)."""
    return dspy.Predict(extract_signature(_CHILD_SIGNATURE))
