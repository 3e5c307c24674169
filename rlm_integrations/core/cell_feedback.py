"""What the model is told about a cell it ran: its output, its value and its error, each cut to a limit."""

from __future__ import annotations

from rlm_integrations.repl.protocol import CellResult
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["cell_feedback"]


def cell_feedback(cell: CellResult, number: int, count: int, limit: int) -> str:
    """The feedback for block `number` of `count` in a reply: stdout, value and error, each at most `limit` chars."""
    title = "Output" if count == 1 else f"Output of block {number}"
    parts: list[str] = []
    if cell.stdout:
        size = f"{cell.output_chars:,} characters" + (", cut" if len(cell.stdout) < cell.output_chars else "")
        shown = truncate_middle(cell.stdout.rstrip("\n"), limit)
        if len(shown) < len(cell.stdout.rstrip("\n")):
            size = f"{cell.output_chars:,} characters, cut to {limit:,}"
        parts.append(f"{title} ({size}):\n{shown}")
    if cell.value is not None:
        parts.append(f"Value: {truncate_middle(cell.value, limit)}")
    if cell.error is not None:
        parts.append(f"Error:\n{truncate_middle(cell.error, limit)}")
    if not parts:
        parts.append(f"{title}: (nothing printed; use print() to see values)")
    return "\n".join(parts)
