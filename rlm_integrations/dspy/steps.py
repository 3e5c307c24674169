"""The root run's turns as the `repl_history` input shows them: `Step`, `render_history`, `strip_fences`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["Step", "render_history", "strip_fences"]

_REASONING_CHARS = 1_000
_ELIDED_CODE_CHARS = 160
_OMITTED_NOTE_CHARS = 50
_FENCED = re.compile(r"^\s*```[^\n]*\n(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass
class Step:
    """One root turn as the history shows it."""

    iteration: int
    reasoning: str
    code: str
    output: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The step as plain data (for `Prediction.trajectory`)."""
        return {"iteration": self.iteration, "reasoning": self.reasoning, "code": self.code, "output": self.output}


def render_history(steps: list[Step], limit: int) -> str:
    """The steps as text, newest kept whole, older ones shortened, then dropped, to fit `limit` characters."""
    if not steps:
        return "(no cells yet: this is the first turn)"
    newest = truncate_middle(_render_step(steps[-1]), max(limit, 200))
    blocks = [newest]
    used = len(newest)
    room = limit - _OMITTED_NOTE_CHARS
    shortened = False
    for index in range(len(steps) - 2, -1, -1):
        block = _render_short(steps[index]) if shortened else _render_step(steps[index])
        if not shortened and used + 2 + len(block) > room:
            shortened = True
            block = _render_short(steps[index])
        if used + 2 + len(block) > room:
            blocks.append(f"({index + 1} earlier turn{'s' if index else ''} omitted to save space)")
            break
        blocks.append(block)
        used += 2 + len(block)
    return "\n\n".join(reversed(blocks))


def strip_fences(code: str) -> str:
    """Code without a markdown fence around it (models often add one)."""
    match = _FENCED.match(code)
    return match.group(1).strip("\n") if match else code.strip("\n")


def _render_step(step: Step) -> str:
    reasoning = truncate_middle(step.reasoning.strip(), _REASONING_CHARS)
    output = step.output or "(no output recorded)"
    return f"=== Turn {step.iteration} ===\nReasoning: {reasoning}\nCode:\n{step.code}\n{output}"


def _render_short(step: Step) -> str:
    code = step.code.strip().replace("\n", "; ")
    if len(code) > _ELIDED_CODE_CHARS:
        code = code[:_ELIDED_CODE_CHARS] + "..."
    return f"=== Turn {step.iteration} === (output elided) code: {code}"
