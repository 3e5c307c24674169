"""Inputs: each input field becomes a REPL variable, and the model sees a bounded description of it.

The values are loaded into the REPL once per call (through a file, not the prompt). The
root model never sees them whole: only their type, size, the field's description and a
short preview, so a 20 MB input costs the same prompt tokens as a 20-character one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

__all__ = ["describe_variables", "to_repl_value", "variable_paragraph"]

_PLAIN = (str, bytes, int, float, bool, type(None))
_ITEMS_SHOWN = 3


def to_repl_value(value: Any) -> Any:
    """`value` in a form the REPL can hold: plain data as is, models and dataclasses as dicts, others as str."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_repl_value(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(key): to_repl_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_repl_value(item) for item in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def describe_variables(values: Mapping[str, Any], fields: Mapping[str, FieldInfo], preview_chars: int) -> str:
    """One paragraph per input variable: name, type, size, the field's description and a preview."""
    return "\n\n".join(_describe(name, values[name], fields.get(name), preview_chars) for name in values)


def variable_paragraph(name: str, type_name: str, size: str, preview: str = "", desc: str = "") -> str:
    """The paragraph for one input variable (`size` as ``", 1,204 characters"``, or empty)."""
    head = f"Variable `{name}`: {type_name}{size}."
    if desc:
        head += f" Description: {desc}"
    return f"{head}\nPreview:\n{preview}" if preview else head


def _describe(name: str, value: Any, field: FieldInfo | None, preview_chars: int) -> str:
    preview = _preview(value, preview_chars)
    return variable_paragraph(name, type(value).__name__, _size(value), preview, _field_desc(field))


def _field_desc(field: FieldInfo | None) -> str:
    if field is None or not field.json_schema_extra or not isinstance(field.json_schema_extra, dict):
        return ""
    desc = field.json_schema_extra.get("desc")
    if not isinstance(desc, str) or desc.startswith("${"):
        return ""
    return desc


def _size(value: Any) -> str:
    if isinstance(value, str | bytes):
        return f", {len(value):,} characters" if isinstance(value, str) else f", {len(value):,} bytes"
    if isinstance(value, list | dict):
        return f", {len(value):,} items"
    return ""


def _preview(value: Any, limit: int) -> str:
    if limit <= 0:
        return ""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"\n... ({len(value) - limit:,} more characters)"
    if isinstance(value, bytes):
        return repr(value[:limit])
    if isinstance(value, list):
        shown = [_short_repr(item, limit // _ITEMS_SHOWN) for item in value[:_ITEMS_SHOWN]]
        more = f", ... {len(value) - _ITEMS_SHOWN:,} more" if len(value) > _ITEMS_SHOWN else ""
        return "[" + ", ".join(shown) + more + "]"
    if isinstance(value, dict):
        keys = list(value)[:_ITEMS_SHOWN]
        shown = [f"{key!r}: {_short_repr(value[key], limit // _ITEMS_SHOWN)}" for key in keys]
        more = f", ... {len(value) - _ITEMS_SHOWN:,} more" if len(value) > _ITEMS_SHOWN else ""
        return "{" + ", ".join(shown) + more + "}"
    return _short_repr(value, limit)


def _short_repr(value: Any, limit: int) -> str:
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    if isinstance(value, list | dict) and len(value) > 50:
        return f"<{type(value).__name__} of {len(value):,} items>"
    text = repr(value)
    return text if len(text) <= max(limit, 20) else text[: max(limit, 20)] + "..."
