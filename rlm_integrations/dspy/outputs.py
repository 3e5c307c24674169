"""Typed outputs: what the model submits with `FINAL(...)`, checked against the signature.

Each output field's annotation is enforced with pydantic (lax mode, so ``"42"`` is a fine
`int` but ``"forty-two"`` is not). A value that fails comes back to the model as feedback
naming the field, the expected type and what was submitted, so the next turn can fix it.
"""

from __future__ import annotations

import ast
import functools
import json
import typing
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

from rlm_integrations.repl.protocol import FinalAnswer

__all__ = ["OutputError", "check_outputs", "describe_type", "outputs_from_final", "submit_hint"]

_SHOWN_VALUE_CHARS = 200
_SCHEMA_CHARS = 1_500


class OutputError(ValueError):
    """A submission that does not match the signature's outputs; the message is the model's feedback.

    Attributes:
        problems: one line per field that failed (or a single line for a malformed call).
    """

    def __init__(self, problems: list[str], hint: str) -> None:
        super().__init__("\n".join(f"- {p}" for p in problems) + f"\n{hint}")
        self.problems = problems


def outputs_from_final(output_fields: Mapping[str, FieldInfo], final: FinalAnswer) -> dict[str, Any]:
    """Turn a submission into validated outputs, or raise `OutputError` with feedback.

    `FINAL(name=value, ...)` gives named outputs. `FINAL(value)` is accepted when the
    signature has one output, or when `value` is a dict whose keys are the output names.
    """
    names = list(output_fields)
    hint = submit_hint(output_fields)
    value = final.value
    if final.named and not final.exact:
        raise OutputError(["FINAL received values that are not plain data (only their repr arrived)."], hint)
    if final.named or (len(names) > 1 and isinstance(value, dict) and set(value) == set(names)):
        if not isinstance(value, dict):
            raise OutputError([f"FINAL received {type(value).__name__}, expected named outputs."], hint)
        submitted: dict[str, Any] = dict(value)
    elif len(names) == 1:
        if not final.exact and output_fields[names[0]].annotation is not str:
            raise OutputError([f"`{names[0]}`: FINAL received an object that is not plain data: {_show(value)}"], hint)
        submitted = {names[0]: value}
    else:
        raise OutputError([f"this task has {len(names)} outputs; submit each one by name."], hint)
    return check_outputs(output_fields, submitted, hint=hint)


def check_outputs(
    output_fields: Mapping[str, FieldInfo], submitted: Mapping[str, Any], *, hint: str = ""
) -> dict[str, Any]:
    """Validate `submitted` against `output_fields`; missing optional outputs become None."""
    problems: list[str] = []
    unknown = [name for name in submitted if name not in output_fields]
    if unknown:
        problems.append(
            f"unknown output(s) {', '.join(map(repr, unknown))}; the outputs are {', '.join(output_fields)}."
        )
    result: dict[str, Any] = {}
    for name, field in output_fields.items():
        if name not in submitted:
            if _allows_none(field.annotation):
                result[name] = None
            else:
                problems.append(f"`{name}` is missing ({describe_type(field.annotation)}).")
            continue
        try:
            result[name] = coerce(field.annotation, submitted[name])
        except ValueError as error:
            problems.append(
                f"`{name}`: expected {describe_type(field.annotation)}, got {_show(submitted[name])}: {error}"
            )
    if problems:
        raise OutputError(problems, hint or submit_hint(output_fields))
    return result


def coerce(annotation: Any, value: Any) -> Any:
    """`value` as `annotation`, or ValueError with a short reason."""
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value)
        if isinstance(value, list | dict | tuple):
            return json.dumps(value, ensure_ascii=False, default=str)
        raise ValueError("a str is needed")
    adapter = _adapter(annotation)
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as error:
        if isinstance(value, str):
            for parsed in _parsed_forms(value):
                try:
                    return adapter.validate_python(parsed)
                except pydantic.ValidationError:
                    continue
        raise ValueError(_summary(error)) from None


def describe_type(annotation: Any) -> str:
    """A short, model-readable description of a type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        schema = json.dumps(annotation.model_json_schema(), ensure_ascii=False)
        if len(schema) > _SCHEMA_CHARS:
            schema = schema[:_SCHEMA_CHARS] + "..."
        return f"a dict matching the JSON schema of {annotation.__name__}: {schema}"
    if annotation is None or annotation is type(None):
        return "None"
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    return str(annotation).replace("typing.", "")


def submit_hint(output_fields: Mapping[str, FieldInfo]) -> str:
    """How to submit these outputs, as a line of code."""
    names = list(output_fields)
    if len(names) == 1:
        return f"Submit in code with FINAL({names[0]}=...) (or FINAL(value))."
    return "Submit in code with FINAL(" + ", ".join(f"{name}=..." for name in names) + ")."


@functools.lru_cache(maxsize=256)
def _cached_adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    try:
        return _cached_adapter(annotation)
    except TypeError:  # an unhashable annotation
        return pydantic.TypeAdapter(annotation)


def _parsed_forms(text: str) -> list[Any]:
    forms: list[Any] = []
    stripped = text.strip()
    if stripped != text:
        forms.append(stripped)
    if len(stripped) > 1 and stripped[0] == stripped[-1] and stripped[0] in "\"'":
        forms.append(stripped[1:-1])
    for parse in (json.loads, ast.literal_eval):
        try:
            forms.append(parse(stripped))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return forms


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    return type(None) in typing.get_args(annotation)


def _summary(error: pydantic.ValidationError) -> str:
    lines = []
    for item in error.errors()[:3]:
        where = ".".join(str(part) for part in item.get("loc", ()))
        lines.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    more = f" (and {error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "; ".join(lines) + more


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[:_SHOWN_VALUE_CHARS] + "..."
    return f"{text} ({type(value).__name__})"
