"""Sub-call throughput on the CPU: hundreds of short classification sub-calls, as a reading task makes them.

The root model is scripted (so only the sub-calls are timed); the sub-model is the embedded
0.5B model (or ``--model qwen2.5-coder-1.5b``). Items are the messages of the long-context
suite's reading family, so the accuracy column is real. Rows, all through a real RLM run:

- ``llm_filter``: our helper; beyond 32 items, numbered items share a
  sub-call and the reply names the matches (about 32 calls for any number of items).
- ``per-item instruction-first capped``: one prompt per item, instruction first (the
  model's prefix cache reuses it from one prompt to the next), replies capped at 8 tokens:
  what `llm_filter` does for up to 32 items.
- ``per-item item-first capped``: the same with the item first (no shared prefix).
- ``per-item uncapped``: ``llm_query_batched`` with no reply cap.
- ``bare model loop (no RLM)``: the same instruction-first prompts sent straight to the model's
  ``complete`` one after another (no engine, no REPL): the floor the RLM rows are measured against.

Goal (issue #13): 300 short classification sub-calls in under 2 minutes on 2 cores with the
0.5B model (the per-item rows are 300 sub-calls; the llm_filter row classifies the same 300 items).

    python benchmarks/subcalls.py --items 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine_info, print_table, write_json  # noqa: E402
from longctx_suite import make_task  # noqa: E402

QUESTION = "Is the writer unhappy with the product or the service?"

_PER_ITEM = (
    "replies = llm_query_batched([{prompt} for item in items])\n"
    "FINAL([str(r).strip().lower().startswith('yes') for r in replies])"
)
_INSTRUCTION_FIRST = "{q!r} + ' Answer yes or no.\\n\\nText: ' + item"
_ITEM_FIRST = "'Text: ' + item + '\\n\\n' + {q!r} + ' Answer yes or no.'"

_FILTER = "hits = llm_filter(items, {q!r})\nFINAL([item in hits for item in items])"

ROWS: dict[str, tuple[str, int | None]] = {
    "llm_filter": (
        "hits = llm_filter(items, {q!r})\nFINAL([item in hits for item in items])",
        None,
    ),
    "per-item instruction-first capped": (_PER_ITEM.replace("{prompt}", _INSTRUCTION_FIRST), 8),
    "per-item item-first capped": (_PER_ITEM.replace("{prompt}", _ITEM_FIRST), 8),
    "per-item uncapped": (_PER_ITEM.replace("{prompt}", _INSTRUCTION_FIRST), None),
}
"""Row name -> (the cell the scripted root runs, `sub_max_tokens` for the row)."""
BARE = "bare model loop (no RLM)"


def reading_items(count: int) -> tuple[list[str], list[bool]]:
    """`count` messages of the reading family (train split) and whether each is a complaint."""
    items: list[str] = []
    truth: list[bool] = []
    index = 0
    while len(items) < count:
        task = make_task("count_reading", "32K", "train", index)
        labels = task.meta["labels"]
        for line in task.context.splitlines():
            body = line.split(": ", 1)[1] if ": " in line else line
            if body in labels and len(items) < count:
                items.append(line)
                truth.append(labels[body] == "complaint")
        index += 1
    return items, truth


def run_bare(items: list[str], truth: list[bool], sub_model: Any) -> dict[str, Any]:
    """The per-item prompts straight to `sub_model.complete`, in order: no engine, no REPL, no concurrency."""
    started = time.monotonic()
    answers: list[bool] = []
    tokens = 0
    for item in items:
        reply = sub_model.complete(
            [{"role": "user", "content": f"{QUESTION} Answer yes or no.\n\nText: {item}"}], max_tokens=8
        )
        answers.append(reply.text.strip().lower().startswith("yes"))
        tokens += reply.usage.prompt_tokens + reply.usage.completion_tokens
    wall = time.monotonic() - started
    return _row(BARE, "completed", truth, answers, calls=len(items), tokens=tokens, wall=wall)


async def run_row(
    name: str, items: list[str], truth: list[bool], sub_model: Any, max_tokens: int | None
) -> dict[str, Any]:
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm import ScriptedLM

    code = "items = context\n" + ROWS[name][0].format(q=QUESTION)
    root = ScriptedLM([f"```repl\n{code}\n```"], name="scripted-root")
    config = RLMConfig(max_llm_calls=len(items) + 10, max_iterations=2, cell_timeout_s=3_600, timeout_s=3_600)
    config = config.with_overrides(sub_max_tokens=max_tokens) if max_tokens else config
    rlm = RLM(root, sub_model, config=config)
    started = time.monotonic()
    result = await rlm.acompletion("Which messages are complaints?", items)
    wall = time.monotonic() - started
    answers = [bool(got) for got in result.answer] if isinstance(result.answer, list) else []
    sub = result.usage.by_model.get(sub_model.name)
    calls, tokens = (sub.calls, sub.total_tokens) if sub else (0, 0)
    return _row(name, result.status, truth, answers, calls=calls, tokens=tokens, wall=wall)


def _row(
    name: str, status: str, truth: list[bool], answers: list[bool], *, calls: int, tokens: int, wall: float
) -> dict[str, Any]:
    """One printed and saved row: time per item, accuracy against `truth` (None with no answers), the load."""
    correct = sum(1 for got, want in zip(answers, truth, strict=False) if got == want)
    return {
        "row": name,
        "status": status,
        "items": len(truth),
        "calls": calls,
        "tokens": tokens,
        "wall_s": round(wall, 1),
        "per_call_ms": round(1000 * wall / max(1, len(truth)), 1),
        "accuracy": round(correct / len(truth), 3) if answers else None,
        "said_yes": sum(answers),
        "truly_yes": sum(truth),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--rows", default=",".join([*ROWS, BARE]), help=f"comma list of: {', '.join([*ROWS, BARE])}")
    parser.add_argument("--json", type=Path, default=Path("subcalls-results.json"))
    args = parser.parse_args()

    from rlm_integrations.lm import LocalModel

    sub_model = LocalModel(model=args.model)
    items, truth = reading_items(args.items)
    results = []
    for name in args.rows.split(","):
        row = (
            run_bare(items, truth, sub_model)
            if name == BARE
            else asyncio.run(run_row(name, items, truth, sub_model, ROWS[name][1]))
        )
        print(row, flush=True)
        results.append(row)
        write_json(args.json, {"machine": machine_info(["llama-cpp-python"]), "model": args.model, "rows": results})
    print_table(
        f"{len(items)} classification sub-calls, sub-model {args.model}",
        ["row", "items", "calls", "wall s", "ms/call", "tokens", "accuracy", "said yes / truly yes", "load (1 min)"],
        [
            [
                str(r["row"]),
                str(r["items"]),
                str(r["calls"]),
                str(r["wall_s"]),
                str(r["per_call_ms"]),
                str(r["tokens"]),
                str(r["accuracy"]),
                f"{r['said_yes']} / {r['truly_yes']}",
                str(r["load_1m"]),
            ]
            for r in results
        ],
    )


if __name__ == "__main__":
    main()
