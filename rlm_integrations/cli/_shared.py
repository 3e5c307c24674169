"""What the `rlm run` and `rlm chat` commands share: the live progress line, the config from options, notices."""

from __future__ import annotations

import sys
import time
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import Event
from rlm_integrations.core.run_tree import RunTree
from rlm_integrations.errors import ConfigError

__all__ = ["Progress", "config_from_options", "describe_validation_error", "notice"]


class Progress:
    """An observer that keeps the live run tree (`core.run_tree`) and renders its counters as one line.

    Calls replayed from the cache are not counted as calls; the cost shows what is known
    when only some prices are.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tree = RunTree()
        self.last = "starting"

    def __call__(self, event: Event) -> None:
        self.tree(event)
        self.last = event.kind.replace("_", " ")

    def render(self) -> Table:
        """The progress line as a one-row table."""
        runs = list(self.tree.runs.values())
        root = self.tree.root
        usage = self.tree.usage
        cells = sum(cell.end is not None for run in runs for turn in run.iterations.values() for cell in turn.cells)
        iteration = max(root.iterations, default=0) if root is not None else 0
        cost = "unknown" if usage.cost_usd is None else f"${usage.cost_usd:.4f}"
        table = Table.grid(padding=(0, 2))
        table.add_row(
            f"[bold]iteration[/] {iteration}",
            f"[bold]depth[/] {max((run.depth for run in runs), default=0)}",
            f"[bold]LM calls[/] {usage.calls}",
            f"[bold]tokens[/] {usage.total_tokens:,}",
            f"[bold]cost[/] {cost}",
            f"[bold]cells[/] {cells}",
            f"[bold]elapsed[/] {time.monotonic() - self.started:.1f}s",
            f"[dim]{self.last}[/]",
        )
        return table


_OPTIONS = {
    "max_iterations": "--max-iterations",
    "max_depth": "--max-depth",
    "max_llm_calls": "--max-llm-calls",
    "max_tokens": "--max-tokens",
    "max_cost_usd": "--max-cost",
    "timeout_s": "--timeout",
    "cell_timeout_s": "--cell-timeout",
    "cache": "--cache",
    "route": "--route",
}
"""The `rlm run` option behind each `RLMConfig` field it sets."""


def config_from_options(**fields: Any) -> RLMConfig:
    """The run's config: `RLMConfig`'s defaults with the options given (None: not given).

    Raises:
        ConfigError: a bad value, naming the option (``--max-cost``, ...) and what it must be.
    """
    try:
        return RLMConfig().with_overrides(**{name: value for name, value in fields.items() if value is not None})
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    """One line for a pydantic error: each bad option (or field), its value and what it must be."""
    parts = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem.get("loc", ())) or "value"
        name = _OPTIONS.get(field, field)
        shown = f" {problem['input']!r}" if "input" in problem and not isinstance(problem["input"], dict) else ""
        message = str(problem.get("msg", "is invalid"))
        parts.append(f"{name}{shown}: {message[:1].lower()}{message[1:]}")
    return "; ".join(parts)


def notice(text: str) -> None:
    """One line on stderr (kept off stdout, which carries the answer)."""
    print(text, file=sys.stderr)
