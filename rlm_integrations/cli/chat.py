"""`rlm chat -c FILE`: follow-up questions over one context, one per line of stdin, in one session."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.rlm import RLM
from rlm_integrations.core.session import RLMSession
from rlm_integrations.errors import UsageError

__all__ = ["chat", "register"]

_EXIT = "/exit"


def chat(
    context: Annotated[
        list[str] | None,
        typer.Option("--context", "-c", help="A file, a folder, or a URL. Repeatable. (stdin carries the questions.)"),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Root model: a LiteLLM string, 'local', or a .gguf path.")] = None,
    sub_model: Annotated[str | None, typer.Option(help="Model behind llm_query (default: the root model).")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Root-model turns per question.")] = None,
    max_llm_calls: Annotated[int | None, typer.Option(help="Model calls per question.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Spend in USD per question.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Wall-clock seconds per question.")] = None,
    save: Annotated[Path | None, typer.Option(help="Write a session checkpoint here at the end.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue a session from a checkpoint (its context and variables).")
    ] = None,
) -> int:
    """Ask questions over the context, one per line of stdin, until EOF or /exit; each reuses earlier work."""
    from rlm_integrations.cli._context import read_context
    from rlm_integrations.cli._models import choose_model, choose_sub_model
    from rlm_integrations.cli._shared import config_from_options, notice

    if context and "-" in context:
        raise UsageError("rlm chat reads questions from stdin, so the context cannot be '-'; give a file")
    if not context and resume is None:
        raise UsageError("give a context with -c FILE, or a checkpoint with --resume PATH")
    if save is not None and not save.parent.is_dir():
        raise UsageError(f"--save {str(save)!r}: the folder {str(save.parent)!r} does not exist")
    config = config_from_options(
        max_iterations=max_iterations, max_llm_calls=max_llm_calls, max_cost_usd=max_cost, timeout_s=timeout
    )
    console = Console(stderr=True)
    root, description = choose_model(model)
    rlm = RLM(root, choose_sub_model(sub_model, root), config=config)
    console.print(f"[bold]Model:[/] {description}")
    if resume is not None:
        session = RLMSession.load(resume, rlm)
        console.print(f"[bold]Resumed:[/] {resume} ({len(session.turns)} earlier questions)")
    else:
        session = rlm.session(read_context(context or [], notice=notice))
    interactive = sys.stdin.isatty()
    with session:
        for number, question in enumerate(_questions(console, interactive), len(session.turns) + 1):
            result = _ask(console, session, question)
            console.print(f"[bold]A{number}[/] [dim]({_line(result)})[/]")
            print(result.answer, flush=True)
        if save is not None:
            not_saved = session.save(save)
            note = f"; not saved: {', '.join(not_saved)}" if not_saved else ""
            console.print(f"[bold]Saved:[/] {save} ({len(session.turns)} questions{note})")
    return 0


def _questions(console: Console, interactive: bool) -> Any:
    """Questions from stdin, one per line (blank lines skipped), until EOF or /exit."""
    while True:
        if interactive:
            console.print("[bold]?[/] ", end="")
        line = sys.stdin.readline()
        if not line:
            return
        question = line.strip()
        if question == _EXIT:
            return
        if question:
            yield question


def _ask(console: Console, session: RLMSession, question: str) -> RLMResult:
    from rlm_integrations.cli._shared import Progress

    progress = Progress()
    with Live(progress.render(), console=console, refresh_per_second=4, transient=True) as live:
        return session.ask(question, observers=[progress, lambda _event: live.update(progress.render())])


def _line(result: RLMResult) -> str:
    usage = result.usage
    status = result.status + (f" ({result.limit})" if result.limit else "")
    error = f", {result.error}" if result.error else ""
    return f"{status}, {result.iterations} iterations, {usage.calls} LM calls, {usage.total_tokens:,} tokens, " + (
        f"{result.duration:.1f} s{error}"
    )


def register(app: typer.Typer) -> None:
    """Add the `chat` command to the `rlm` app."""
    app.command("chat")(chat)
