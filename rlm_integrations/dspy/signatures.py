"""The signatures of the module's predictors, built from the user's signature.

`generate_code` (the step an optimizer tunes) reads the REPL guide, the variables'
descriptions, the probe of the question (where its words occur in the text), the bounded
REPL history and the turn counter, and writes `reasoning` and `code`. The guide (the
REPL's functions, the outputs and their types, how to submit) is an input, not part of
the instructions, so an optimizer that rewrites the instructions (GEPA, MIPROv2, COPRO)
cannot drop how to submit. `extract` (the fallback when a run ends
without a submission) reads the same evidence and writes the user's output fields
directly, with their types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dspy

from rlm_integrations.core.repl_helpers import HELPER_DOCS
from rlm_integrations.dspy.outputs import describe_type, submit_hint
from rlm_integrations.repl.worker.policy import ALLOWED_MODULES

__all__ = [
    "GUIDE_PLACEHOLDER",
    "RESERVED_NAMES",
    "extract_signature",
    "generate_signature",
    "instructions_for",
    "repl_guide",
]

RESERVED_NAMES = frozenset(
    {
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "print",
    }
)
"""Names the REPL defines: input fields and tools may not use them."""

_GUIDE = """The inputs are not in this prompt: each one is a variable in a Python REPL ({inputs}), and \
`variables_info` describes them (type, size, preview). Each turn you write `reasoning` and one `code` cell. The cell \
runs, and at your next turn `repl_history` shows your earlier cells and what they printed. Variables persist \
between turns.

Outputs to produce:
{outputs}

Available in the REPL:
- the input variables: {inputs}
- `llm_query(prompt)`: ask a helper language model; returns its reply as a str. It cannot see the variables: put \
the text it should read into the prompt (at most about {sub_prompt_chars:,} characters).
- `llm_query_batched(prompts)`: a list of prompts at once; replies in the same order. Much faster than a loop.
- `rlm_query(prompt, context=None)`: give a sub-question and a piece of data to a helper that works like you, with \
its own REPL; returns its answer as a str. `rlm_query_batched(prompts, contexts=None)`: several at once.
{helpers}- `print(...)`: the only way to see values; long output is cut in the middle, so print summaries.
- modules you may import: {modules}.
{tools}- `FINAL(...)`: submit the outputs and stop. {submit} Values must have the types listed above; a value of \
the wrong type comes back to you as an error to fix."""

_STRATEGY = """Work in the Python REPL described in `repl_guide`, one small cell per turn:
1. Look first: print the sizes and short samples of the inputs.
2. One small step per cell; check each result before building on it.
3. Find facts with code (`grep`, `re`, slicing, counting). Use `llm_filter` / `llm_map` on items, or `llm_query` on \
chunks, when the answer needs reading, not matching. An empty search means the words differ, not that the answer \
is none.
4. Compute outputs in code and submit them from variables instead of retyping long values.
5. Submit only after you have seen the evidence printed in an earlier turn."""

_EXTRACT = """The REPL session in `repl_history` ended (out of turns or budget) before the outputs were submitted. \
Using what the session found and the descriptions in `variables_info`, give your best value for each output."""

GUIDE_PLACEHOLDER = "(the REPL guide: as in the request being answered)"
"""What a demo shows in place of the guide, which is the same in every call."""


def instructions_for(signature: type[dspy.Signature]) -> str:
    """The `generate_code` instructions (what optimizers rewrite): the user's task and how to work."""
    task = (signature.instructions or "").strip()
    return f"{task}\n\n{_STRATEGY}" if task else _STRATEGY


def repl_guide(signature: type[dspy.Signature], *, sub_prompt_chars: int, tools: Mapping[str, str]) -> str:
    """The REPL's mechanics (fixed, passed as the `repl_guide` input): variables, functions, outputs, FINAL."""
    inputs = ", ".join(f"`{name}`" for name in signature.input_fields) or "(none)"
    outputs = "\n".join(_output_line(name, field) for name, field in signature.output_fields.items())
    tool_lines = "".join(f"- `{name}(...)`: {doc}\n" for name, doc in tools.items())
    helper_lines = "".join(f"- {doc}\n" for name, doc in HELPER_DOCS.items() if name not in tools)
    return _GUIDE.format(
        helpers=helper_lines.replace("`context`", "the `context` input"),
        inputs=inputs,
        outputs=outputs,
        sub_prompt_chars=sub_prompt_chars,
        modules=", ".join(sorted(ALLOWED_MODULES)),
        tools=tool_lines,
        submit=submit_hint(signature.output_fields),
    )


def generate_signature(instructions: str) -> type[dspy.Signature]:
    """Inputs `repl_guide`, `variables_info`, `context_probe`, `repl_history`, `iteration`; outputs `reasoning`, `code`.

    `context_probe` (where the question's words occur in the text; see
    `rlm_integrations.dspy.orientation`) is an input, so bootstrapped demos carry their own
    question's probe and an optimizer's instructions may refer to it.
    """
    fields: dict[str, Any] = {
        "repl_guide": (str, dspy.InputField(desc="How the REPL works: variables, functions, outputs, FINAL")),
        "variables_info": (str, dspy.InputField(desc="The REPL variables holding the inputs: type, size, preview")),
        "context_probe": (
            str,
            dspy.InputField(
                desc="How many lines of the text hold each of the question's words; which words are absent"
            ),
        ),
        "repl_history": (str, dspy.InputField(desc="Your earlier cells and what they printed, oldest first")),
        "iteration": (str, dspy.InputField(desc="The current turn, the turns left, and the budget left")),
        "reasoning": (str, dspy.OutputField(desc="What you know so far and what the next cell should do")),
        "code": (str, dspy.OutputField(desc="Python code for the next REPL cell (plain code, no markdown fences)")),
    }
    signature: type[dspy.Signature] = dspy.Signature(fields, instructions)
    return signature


def extract_signature(signature: type[dspy.Signature]) -> type[dspy.Signature]:
    """Inputs `variables_info`, `repl_history`; outputs: the user's output fields, with their types."""
    fields: dict[str, Any] = {
        "variables_info": (str, dspy.InputField(desc="The REPL variables holding the inputs: type, size, preview")),
        "repl_history": (str, dspy.InputField(desc="The REPL session: cells and what they printed, oldest first")),
    }
    for name, field in signature.output_fields.items():
        fields[name] = (field.annotation, field)
    task = (signature.instructions or "").strip()
    extract: type[dspy.Signature] = dspy.Signature(fields, f"{task}\n\n{_EXTRACT}" if task else _EXTRACT)
    return extract


def _output_line(name: str, field: Any) -> str:
    line = f"- `{name}` ({describe_type(field.annotation)})"
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    desc = extra.get("desc")
    if isinstance(desc, str) and desc and not desc.startswith("${"):
        line += f": {desc}"
    return line
