"""Sample trajectories for testing, measuring and showing the viewer.

`depth2_result` runs the real engine (sandboxed REPL, scripted models) on a small book:
a root run, two child runs and two grandchild runs, with a sub-call and a cell error.
A real run of thousands of iterations takes a real model; the viewer only reads events,
so `synthetic_events` builds them from the same typed event models the engine emits,
with plausible timings, usage, errors, sub-calls and child runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    ContextInfo,
    Event,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.lm.protocol import Message, TokenUsage

if TYPE_CHECKING:
    from rlm_integrations.core.result import RLMResult

__all__ = ["BOOK", "QUESTION", "depth2_result", "synthetic_events"]


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def synthetic_events(
    iterations: int = 5_000,
    *,
    child_every: int = 500,
    child_iterations: int = 3,
    seed: int = 0,
    start: float = 1_700_000_000.0,
) -> list[Event]:
    """Events of a root run with `iterations` turns (each a model call and a code cell).

    Every 10th cell makes an `llm_query` sub-call, every 97th fails, and every
    `child_every`-th starts a child run (`rlm_query`) of `child_iterations` turns.
    The last turn submits the answer.
    """
    rng = random.Random(seed)
    clock = _Clock(start)
    ids = iter(range(1, 10**9))
    events: list[Event] = []

    def new(prefix: str) -> str:
        return f"{prefix}-{next(ids)}"

    def run(depth: int, parent: str | None, parent_cell: str | None, turns: int, query: str) -> tuple[str, str]:
        run_id = new("run")
        began = clock.now
        events.append(
            RunStarted(
                run_id=run_id,
                at=began,
                parent_id=parent,
                parent_cell_id=parent_cell,
                depth=depth,
                query=query,
                context=ContextInfo(
                    type="str", chars=1_000_000, sha256="0" * 64, preview="Chapter 1. It was a dark..."
                ),
                model="synthetic-root",
                sub_model="synthetic-sub",
            )
        )
        answer = ""
        for turn in range(1, turns + 1):
            answer = _turn(run_id, depth, turn, turns)
        events.append(
            RunFinished(
                run_id=run_id,
                at=clock.tick(0.001),
                status="completed",
                answer=answer,
                duration=clock.now - began,
                iterations=turns,
            )
        )
        return run_id, answer

    def _turn(run_id: str, depth: int, turn: int, turns: int) -> str:
        began = clock.tick(0.0005)
        events.append(IterationStarted(run_id=run_id, at=began, iteration=turn))
        call_id = new("lm")
        last = turn == turns
        code = (
            f"FINAL(found[:3])  # turn {turn}"
            if last
            else f"chunk = context[{turn * 1000}:{turn * 1000 + 1000}]\n"
            f"found = [m.start() for m in re.finditer(r'needle{turn}', chunk)]\n"
            f"print(len(found), 'hits in chunk {turn}')"
        )
        messages = (
            [
                {"role": "system", "content": "You answer a question about a context..."},
                {"role": "user", "content": "Q"},
            ]
            if turn == 1
            else [{"role": "user", "content": f"Output of turn {turn - 1}: 0 hits in chunk {turn - 1}"}]
        )
        events.append(
            LMCallStarted(
                run_id=run_id,
                at=clock.now,
                call_id=call_id,
                iteration=turn,
                model="synthetic-root",
                new_messages=messages,
            )
        )
        latency = rng.uniform(0.2, 1.5)
        reply = f"Turn {turn}: I will scan chunk {turn} for the needle.\n```repl\n{code}\n```"
        usage = TokenUsage(
            prompt_tokens=600 + 40 * turn, completion_tokens=rng.randint(20, 90), cost_usd=0.0004, calls=1
        )
        events.append(
            LMCallFinished(
                run_id=run_id,
                at=clock.tick(latency),
                call_id=call_id,
                iteration=turn,
                model="synthetic-root",
                text=reply,
                usage=usage,
                duration=latency,
            )
        )
        cell_id = new("cell")
        events.append(CellStarted(run_id=run_id, at=clock.tick(0.0002), cell_id=cell_id, iteration=turn, code=code))
        ran = rng.uniform(0.0005, 0.02)
        clock.tick(ran)
        if not last and turn % 10 == 0:
            _sub(run_id, cell_id, turn)
        if not last and depth == 0 and turn % child_every == 0:
            call = new("sub")
            events.append(
                SubCallStarted(
                    run_id=run_id,
                    at=clock.now,
                    call_id=call,
                    cell_id=cell_id,
                    function="rlm_query",
                    model="synthetic-root",
                    prompt=f"Summarise chunk {turn}",
                    prompt_chars=21,
                )
            )
            child, answer = run(depth + 1, run_id, cell_id, child_iterations, f"Summarise chunk {turn}")
            events.append(
                SubCallFinished(
                    run_id=run_id,
                    at=clock.tick(0.0005),
                    call_id=call,
                    cell_id=cell_id,
                    function="rlm_query",
                    model="synthetic-root",
                    response=answer,
                    duration=0.5,
                    child_run_id=child,
                )
            )
        failed = not last and turn % 97 == 0
        events.append(
            CellFinished(
                run_id=run_id,
                at=clock.tick(0.0002),
                cell_id=cell_id,
                iteration=turn,
                stdout="" if failed else f"0 hits in chunk {turn}\n",
                duration=ran,
                final=last,
                error=f"NameError: name 'fonud' is not defined (turn {turn})" if failed else None,
                error_type="NameError" if failed else None,
            )
        )
        events.append(
            IterationFinished(run_id=run_id, at=clock.tick(0.0003), iteration=turn, duration=clock.now - began)
        )
        return f"answer from {run_id}"

    def _sub(run_id: str, cell_id: str, turn: int) -> None:
        call = new("sub")
        prompt = f"Does this passage mention the needle? passage {turn}"
        events.append(
            SubCallStarted(
                run_id=run_id,
                at=clock.now,
                call_id=call,
                cell_id=cell_id,
                function="llm_query",
                model="synthetic-sub",
                prompt=prompt,
                prompt_chars=len(prompt),
            )
        )
        latency = rng.uniform(0.1, 0.6)
        events.append(
            SubCallFinished(
                run_id=run_id,
                at=clock.tick(latency),
                call_id=call,
                cell_id=cell_id,
                function="llm_query",
                model="synthetic-sub",
                response=f"No needle in passage {turn}.",
                duration=latency,
                usage=TokenUsage(prompt_tokens=300, completion_tokens=12, cost_usd=None, calls=1),
            )
        )

    run(0, None, None, iterations, "Where is the needle? (a synthetic run)")
    return events


QUESTION = "Which chapter mentions dragons most often?"
BOOK = (
    "Chapter 1. The dragon slept under the hill; a dragon's hoard glittered.\n\n"
    "Chapter 2. Dragons! A dragon, another dragon, and the dragon queen flew over the town.\n\n"
    "Chapter 3. The villagers rebuilt the mill and never spoke of it again."
)


def _question_and_turn(messages: Sequence[Message]) -> tuple[str, int]:
    """The run's question and its turn: the last message that opens a run starts "Question: "."""
    starts = [i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith("Question: ")]
    first = starts[-1] if starts else 0
    question = messages[first]["content"].split("\n", 1)[0].removeprefix("Question: ")
    return question, sum(1 for m in messages[first:] if m["role"] == "assistant")


def _root_reply(messages: Sequence[Message]) -> str:
    question, turn = _question_and_turn(messages)
    if question == QUESTION:
        return [
            "First I look at the size and split the book into chapters.\n"
            "```repl\nchapters = context.split('\\n\\n')\nprint(len(context), len(chapters))\n```",
            "I ask a helper RLM to count in each chapter, one child run per chapter.\n"
            "```repl\ncounts = [rlm_query('How many times is a dragon mentioned?', c) for c in chapters[:2]]\n"
            "print(counts)\n```",
            "Chapter 2 has the most.\n```repl\nFINAL('Chapter 2')\n```",
        ][min(turn, 2)]
    if question == "How many times is a dragon mentioned?":
        return [
            "I count with a regex and ask for a second opinion.\n"
            "```repl\nimport re\nn = len(re.findall(r'(?i)dragon', context))\n"
            "check = rlm_query('Check this count: ' + str(n), context)\n"
            "note = llm_query('Is the word dragon in: ' + context[:60])\nprint(n, check, note)\n```",
            "```repl\nFINAL(n)\n```",
        ][min(turn, 1)]
    return [
        "```repl\nprint(count_dragons(context))\n```",  # a mistake: the helper has no such function
        "```repl\nFINAL('the count looks right')\n```",
    ][min(turn, 1)]


def depth2_result(*, cost_per_call: float | None = 0.00042, latency_s: float = 0.03) -> RLMResult:
    """Run the depth-2 example: a root run, two child runs, each with a grandchild run."""
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm.scripted import ScriptedLM

    root = ScriptedLM(_root_reply, name="scripted-root", cost_per_call=cost_per_call, latency_s=latency_s)
    sub = ScriptedLM(
        lambda messages: "Yes, it mentions a dragon.",
        name="scripted-sub",
        cost_per_call=0.00003,
        latency_s=latency_s / 2,
    )
    rlm = RLM(root, sub, config=RLMConfig.model_validate({"max_depth": 2, "cell_timeout_s": 20}))
    return rlm.completion(QUESTION, context=BOOK)
