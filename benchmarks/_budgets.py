"""Part 5 of benchmarks/engine.py: the worst overshoot of each budget under a 64-way fan-out.

Each case runs the real `LiteLLMModel` against `FakeOpenAIServer` (in this process, on its
own thread) with a root model that fans out 64 ways every turn, and measures what was
spent from the server's side (requests received, the usage it reported, priced at the
test prices), never from the engine's own accounting. Overshoot is spending past the
limit (0 when the limit held); the worst over the repetitions is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import time
from typing import Any

from _common import Recorder, print_table

FAN_OUT = 64
INPUT_PRICE, OUTPUT_PRICE = 1e-6, 2e-6
PROMPT = "x" * 2_000
CASES: tuple[tuple[str, str, float, str, dict[str, Any]], ...] = (  # (key, field, limit, fan-out code, config)
    ("calls", "max_llm_calls", 100, f"print(rlm_query_batched(['Child?'] * {FAN_OUT}))", {}),
    ("tokens", "max_tokens", 60_000, f"print(llm_query_batched(['{PROMPT}'] * {FAN_OUT}))", {}),
    (
        "cost",
        "max_cost_usd",
        0.03,
        f"print(llm_query_batched(['{PROMPT}'] * {FAN_OUT}))",
        {"reply_reserve_tokens": 256},
    ),
    ("time", "timeout_s", 3.0, f"print(llm_query_batched(['slow'] * {FAN_OUT}))", {}),
)
UNITS = {"calls": "calls", "tokens": "tokens", "cost": "USD", "time": "s"}


def _reply(body: dict[str, Any]) -> Any:
    from rlm_integrations.testing import Fault

    messages = body["messages"]
    last = str(messages[-1]["content"])
    if "Do not write code" in last:
        return Fault.slow(30.0) if _REPLY_CODE["slow_closing"] else "FINAL('closing')"
    if body["model"] == "sub":
        return Fault.slow(1.5) if last == "slow" else "sub reply"
    question = next(
        (str(m["content"]) for m in messages if m["role"] == "user" and str(m["content"]).startswith("Question: ")),
        "",
    )
    if question.startswith("Question: Child?"):
        return "```repl\nprint(llm_query('y'))\n```"
    return _REPLY_CODE["code"]


_REPLY_CODE: dict[str, Any] = {"code": "", "slow_closing": False}


async def _case(field: str, limit: float, code: str, extra: dict[str, Any]) -> dict[str, float]:
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm import LiteLLMModel
    from rlm_integrations.testing import FakeOpenAIServer

    _REPLY_CODE["code"] = f"```repl\n{code}\n```"
    _REPLY_CODE["slow_closing"] = field == "timeout_s"  # the time case: nothing answers, the wall must hold
    async with FakeOpenAIServer(_reply, latency_s=0.02) as server:
        options: dict[str, Any] = {"api_base": server.api_base, "api_key": "unused", "max_retries": 0}
        if field == "max_cost_usd":
            options.update(input_cost_per_token=INPUT_PRICE, output_cost_per_token=OUTPUT_PRICE)
        root = LiteLLMModel("openai/root", **options)
        sub = LiteLLMModel("openai/sub", **options)
        config = RLMConfig(cell_timeout_s=60, sub_concurrency=FAN_OUT, max_depth=1, **{field: limit}, **extra)
        started = time.perf_counter()
        result = await RLM(root, sub, config=config).acompletion("Parent?", context="ctx")
        elapsed = time.perf_counter() - started
        answered = [r for r in server.requests if r.usage is not None]
        prompt = sum(r.usage["prompt_tokens"] for r in answered if r.usage)
        completion = sum(r.usage["completion_tokens"] for r in answered if r.usage)
    spent = {
        "max_llm_calls": float(len(server.requests)),
        "max_tokens": float(prompt + completion),
        "max_cost_usd": prompt * INPUT_PRICE + completion * OUTPUT_PRICE,
        "timeout_s": elapsed,
    }[field]
    return {
        "spent": spent,
        "overshoot": max(0.0, spent - limit),
        "requests": float(len(server.requests)),
        "stopped_by_limit": float(result.limit == field),
    }


async def phase_budgets(rec: Recorder, quick: bool) -> None:
    """Every case, repeated; the worst (largest) overshoot and spend are kept."""
    reps = 1 if quick else 3
    for key, field, limit, code, extra in CASES:
        rec.step(f"budget case {key}")
        runs = [await _case(field, limit, code, extra) for _ in range(reps)]
        rec.set(
            key,
            {
                "limit": limit,
                "worst_spent": max(r["spent"] for r in runs),
                "worst_overshoot": max(r["overshoot"] for r in runs),
                "requests": max(r["requests"] for r in runs),
                "stopped_by_limit": min(r["stopped_by_limit"] for r in runs),
                "runs": reps,
            },
        )


def _amount(key: str, value: float) -> str:
    if key == "cost":
        return f"${value:.4f}"
    if key == "time":
        return f"{value:.2f} s"
    return f"{value:,.0f}"


def budgets_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """Rows of the table and the targets (each overshoot 0; time within 0.5 s of the wall)."""
    columns = ["budget", "limit", "worst spent", "worst overshoot", "requests (worst run)", "target"]
    metrics = results.get("budgets", {}).get("metrics", {})
    errors = results.get("budgets", {}).get("errors", {})
    rows: list[list[str]] = []
    targets: dict[str, Any] = {}
    for key, field, _, _, _ in CASES:
        m = metrics.get(key)
        if m is None:
            why = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "no result"
            rows.append([f"{field} ({key})", "cannot run: " + why, "", "", "", ""])
            continue
        slack = 0.5 if key == "time" else 0.0  # closing the REPL after the wall
        passed = m["worst_overshoot"] <= slack
        targets[f"budget_{key}"] = {
            "target": f"overshoot <= {slack:g}",
            "value": m["worst_overshoot"],
            "passed": passed,
        }
        rows.append(
            [
                f"{field} ({key})",
                _amount(key, m["limit"]),
                _amount(key, m["worst_spent"]),
                _amount(key, m["worst_overshoot"]),
                f"{m['requests']:,.0f}",
                ("PASS" if passed else "FAIL") + (" (≤ 0.5 s past the wall)" if key == "time" else " (0)"),
            ]
        )
    return columns, rows, targets


def print_budgets(results: dict[str, Any], plain: bool) -> dict[str, Any]:
    columns, rows, targets = budgets_table(results)
    print_table(
        f"5. Budget ceilings: the worst overshoot of each limit under a {FAN_OUT}-way fan-out",
        columns,
        rows,
        [
            "our LiteLLMModel against FakeOpenAIServer (20 ms latency; in the time case the sub-calls take 1.5 s and "
            "the closing request never answers). The root fans out every turn: 64 child runs (each with its own "
            "sub-call and closing request) "
            "for max_llm_calls, 64 sub-calls of 2,000 characters for max_tokens and max_cost_usd "
            f"(priced at ${INPUT_PRICE:g} / ${OUTPUT_PRICE:g} per input / output token, reply_reserve_tokens=256).",
            "spent is measured at the server (requests received, the usage it reported), closing requests "
            "included; overshoot is what was spent past the limit. sub_concurrency=64, so nothing but the "
            "budget holds the fan-out back.",
        ],
        plain=plain,
    )
    return targets


def run_here(quick: bool = True) -> dict[str, Any]:  # pragma: no cover - a manual helper
    """Run the phase in this process (a quick look without the child-process machinery)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        rec = Recorder(os.path.join(scratch, "budgets.json"), error_limit=400)
        asyncio.run(phase_budgets(rec, quick))
        return {"budgets": rec.data}


if __name__ == "__main__":  # pragma: no cover
    print_budgets(run_here(), plain=True)
