"""Scripted stand-ins for the smoke mode and the tests: a root model that runs a task's
reference program, and a reader that answers the per-message sub-question from the
generator's labels (what a perfect reader would say).

They check the plumbing (generator, REPL, sub-calls, scorer), not a model's skill.
"""

from __future__ import annotations

from typing import Any

from longctx_suite._records import SUB_PROMPT
from longctx_suite.tasks import Task


def scripted_models(task: Task) -> tuple[Any, Any]:
    """(root, sub) `ScriptedLM`s that solve `task` with its reference program."""
    from rlm_integrations.lm import ScriptedLM

    reply = f"```repl\n{task.reference_code}```"
    labels: dict[str, str] = task.meta.get("labels", {})

    def root(_messages: list[Any]) -> str:
        return reply

    def reader(messages: list[Any]) -> str:
        prompt = str(messages[-1]["content"])
        if SUB_PROMPT not in prompt:
            return "I can only answer the reference program's sub-question."
        text = prompt.split(SUB_PROMPT, 1)[1].strip()
        label = labels.get(text)
        if label is None:
            return "unknown"
        return "yes" if label == "complaint" else "no"

    return ScriptedLM(root, name="scripted-root"), ScriptedLM(reader, name="scripted-reader")
