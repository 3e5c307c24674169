"""User tools: host functions callable from the REPL by name, checked so none hides a built-in."""

from __future__ import annotations

import functools
import keyword
from collections.abc import Callable, Mapping
from typing import Any

from rlm_integrations.errors import ConfigError, ReservedNameError
from rlm_integrations.repl._policy import SandboxPolicy

__all__ = ["REPL_BUILTINS", "check_tools", "reserved_names"]

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


def check_tools(tools: Mapping[str, Callable[..., Any]] | None) -> dict[str, Callable[..., Any]]:
    """Return `tools` as a dict after checking every name and value.

    Raises:
        ReservedNameError: a tool named like a REPL built-in (`llm_query`, `FINAL`,
            `context`, `print`, ...) or a builtin a cell uses (`len`, `str`, ...): it would
            silently replace it inside the REPL.
        ConfigError: a name that is not a public Python identifier, or a value that is not callable.
    """
    checked: dict[str, Callable[..., Any]] = {}
    reserved = reserved_names()
    for name, tool in dict(tools or {}).items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name):
            raise ConfigError(f"tool name {name!r} must be a public Python identifier (letters, digits, underscores)")
        if name in reserved:
            what = "a REPL built-in" if name in REPL_BUILTINS else "a Python builtin the REPL provides"
            raise ReservedNameError(
                f"tool name {name!r} is {what}, and the tool would replace it inside the REPL. "
                f"Register it under another name, e.g. tools={{'my_{name}': ...}}.",
                name=name,
            )
        if not callable(tool):
            raise ConfigError(f"tool {name!r} must be callable, got {type(tool).__name__}")
        checked[name] = tool
    return checked
