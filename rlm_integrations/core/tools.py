"""User tools: host functions callable from the REPL by name, checked so none hides a built-in.

A tool is a plain callable (sync or async), a LangChain tool or a DSPy tool. The framework
tools are recognised by duck typing, so the core imports neither framework:

- a LangChain `BaseTool`: an object with a str `.name`, `.args` (its argument schema) and
  `.invoke` / `.ainvoke`; it is called with ``ainvoke({arg: value, ...})``;
- a `dspy.Tool`: an object with a str `.name`, `.args`, `.func` and `.acall`; it is called
  with ``acall(arg=value, ...)`` (a sync `func` in a worker thread), so DSPy validates the
  arguments and its callbacks see the call.

Positional arguments from the REPL (``search("rlm")``) are matched to the tool's argument
names in order. Every tool is a host callback: it runs in the host process, never in the
sandbox, and the engine records each call as a sub-call (``function`` = the tool's name,
``model`` = ``"tool"``), so tool calls appear in the run tree.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import keyword
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from rlm_integrations.errors import ConfigError, ReservedNameError
from rlm_integrations.repl.host.transfer import invoke
from rlm_integrations.repl.worker.output import truncate_middle
from rlm_integrations.repl.worker.policy import SandboxPolicy

__all__ = [
    "REPL_BUILTINS",
    "TOOL_MODEL",
    "ToolsArg",
    "as_host_function",
    "check_tools",
    "recorded_tool",
    "reserved_names",
    "tool_doc",
]

ToolsArg = Mapping[str, Any] | Sequence[Any]
"""What `tools=` takes: a dict of name to tool, or a list of tools named by themselves."""

TOOL_MODEL = "tool"
"""The `model` of a tool call's sub-call events (the `function` is the tool's name)."""

_PREVIEW_CHARS = 2_000

REPL_BUILTINS: frozenset[str] = frozenset(
    {
        "context",
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "CallError",
        "print",
        "printed",
    }
)
"""Names the engine and the REPL define in every run's namespace."""


@functools.cache
def reserved_names() -> frozenset[str]:
    """Every name a tool may not take: the REPL's own names and the builtins a cell sees.

    A module name (`math`, `json`, ...) is allowed on purpose: the tool then replaces the
    module the engine would otherwise pre-import, and the system prompt lists the tool.
    """
    return REPL_BUILTINS | frozenset(name for name in SandboxPolicy().builtins() if not name.startswith("_"))


def check_tools(tools: ToolsArg | None) -> dict[str, Callable[..., Any]]:
    """Return `tools` as a dict of name to host function after checking every name and value.

    Args:
        tools: a dict of name to tool, or a list of tools (each named by its `.name`, or
            a function by its `__name__`). A tool is a callable, a LangChain tool or a
            `dspy.Tool` (see the module docstring); framework tools become plain async
            functions here, with the tool's description as their docstring.

    Raises:
        ReservedNameError: a tool named like a REPL built-in (`llm_query`, `FINAL`,
            `context`, `print`, ...) or a builtin a cell uses (`len`, `str`, ...): it would
            silently replace it inside the REPL.
        ConfigError: a name that is not a public Python identifier, two tools with one
            name, or a value that is neither callable nor a framework tool.
    """
    checked: dict[str, Callable[..., Any]] = {}
    reserved = reserved_names()
    for name, tool in _named(tools):
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
            raise ConfigError(f"tool name {name!r} must be a public Python identifier (letters, digits, underscores)")
        if name in reserved:
            what = "a REPL built-in" if name in REPL_BUILTINS else "a Python builtin the REPL provides"
            raise ReservedNameError(
                f"tool name {name!r} is {what}, and the tool would replace it inside the REPL. "
                f"Register it under another name, e.g. tools={{'my_{name}': ...}}.",
                name=name,
            )
        if name in checked:
            raise ConfigError(f"two tools are named {name!r}; pass a dict to name them, e.g. tools={{'other': ...}}")
        checked[name] = as_host_function(tool, name)
    return checked


def as_host_function(tool: Any, name: str = "") -> Callable[..., Any]:
    """`tool` as a function the REPL can call: a callable as is, a framework tool wrapped (see the module doc).

    Raises:
        ConfigError: `tool` is neither callable nor a LangChain or DSPy tool.
    """
    if _is_langchain_tool(tool):
        return _wrap(tool, _langchain_call(tool), name or tool.name, str(getattr(tool, "description", "") or ""))
    if _is_dspy_tool(tool):
        return _wrap(tool, _dspy_call(tool), name or tool.name, str(getattr(tool, "desc", "") or ""))
    if not callable(tool):
        raise ConfigError(
            f"tool {name or tool!r} must be a callable, a LangChain tool or a dspy.Tool, got {type(tool).__name__}"
        )
    function: Callable[..., Any] = tool
    return function


def tool_doc(tool: Callable[..., Any]) -> str:
    """The first line of a tool's docstring (what the model is told it does)."""
    doc = (getattr(tool, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "a tool provided by the host."


class _SubCall(Protocol):
    def finish(self, *, response: str = ..., error: str | None = ...) -> None: ...


def recorded_tool(
    name: str, tool: Callable[..., Any], start: Callable[[str], _SubCall]
) -> Callable[..., Awaitable[Any]]:
    """`tool` wrapped so each call is recorded: `start(arguments preview)` opens the record, `finish` closes it.

    The engine passes a `start` that emits a sub-call start event and returns the record
    whose `finish` emits the end event (with the result's preview, or the error).
    """

    async def call(*args: Any, **kwargs: Any) -> Any:
        record = start(_preview_arguments(name, args, kwargs))
        try:
            result = await invoke(tool, list(args), dict(kwargs))
        except Exception as error:
            record.finish(error=f"{type(error).__name__}: {error}")
            raise
        record.finish(response=_preview_value(result))
        return result

    call.__name__ = name
    call.__doc__ = getattr(tool, "__doc__", None)
    return call


# -- framework tools ------------------------------------------------------------------------------
def _named(tools: ToolsArg | None) -> list[tuple[Any, Any]]:
    if tools is None:
        return []
    if isinstance(tools, Mapping):
        return list(tools.items())
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise ConfigError(f"tools must be a list of tools or a dict of name to tool, got {type(tools).__name__}")
    named: list[tuple[Any, Any]] = []
    for tool in tools:
        name = getattr(tool, "name", None) if _is_langchain_tool(tool) or _is_dspy_tool(tool) else None
        named.append((name or getattr(tool, "__name__", None) or repr(tool), tool))
    return named


def _is_langchain_tool(tool: Any) -> bool:
    return (
        isinstance(getattr(tool, "name", None), str)
        and callable(getattr(tool, "ainvoke", None))
        and callable(getattr(tool, "invoke", None))
        and hasattr(tool, "args")
    )


def _is_dspy_tool(tool: Any) -> bool:
    return (
        isinstance(getattr(tool, "name", None), str)
        and callable(getattr(tool, "func", None))
        and callable(getattr(tool, "acall", None))
        and hasattr(tool, "args")
    )


def _arguments(tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional arguments matched to the tool's argument names, in order, plus the keyword ones."""
    names = list(getattr(tool, "args", None) or {})
    if len(args) > len(names):
        raise TypeError(f"{tool.name}() takes {len(names)} argument(s) ({', '.join(names) or 'none'}), got {len(args)}")
    merged = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key in merged:
            raise TypeError(f"{tool.name}() got multiple values for argument {key!r}")
        merged[key] = value
    return merged


def _langchain_call(tool: Any) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return _plain(await tool.ainvoke(_arguments(tool, args, kwargs)))

    return call


def _dspy_call(tool: Any) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        arguments = _arguments(tool, args, kwargs)
        if inspect.iscoroutinefunction(tool.func):
            return _plain(await tool.acall(**arguments))
        return _plain(await asyncio.to_thread(tool, **arguments))  # a sync tool must not block the event loop

    return call


def _wrap(tool: Any, call: Callable[..., Awaitable[Any]], name: str, description: str) -> Callable[..., Any]:
    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = description.strip() or None
    call.__wrapped_tool__ = tool  # type: ignore[attr-defined]
    return call


def _plain(value: Any) -> Any:
    """A framework result as plain data: a message's content, a pydantic model's fields."""
    if hasattr(value, "content") and hasattr(value, "type") and not isinstance(value, dict):
        return value.content  # a LangChain ToolMessage
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _preview_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return truncate_middle(f"{name}({', '.join(shown)})", _PREVIEW_CHARS)


def _preview_value(value: Any) -> str:
    if isinstance(value, str):
        return truncate_middle(value, _PREVIEW_CHARS)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return truncate_middle(text, _PREVIEW_CHARS)
