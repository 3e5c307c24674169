"""The RestrictedPython policy: the first wall around LM-written code.

RestrictedPython rewrites every cell so that attribute access, item access, writes,
iteration, imports and `print` go through the hooks defined here. This module builds
those hooks and the builtins a cell sees. It is defence in depth, not a sandbox on its
own: the worker process and its OS limits are the second wall (see docs/security.md).

Rules enforced here, each tested by an escape attempt in tests/unit/test_repl_escapes.py:
- attribute access raises (never returns None) for names starting with ``_``, for
  frame, code, traceback and generator internals, and for any value that is a module,
  frame, code object or traceback;
- ``str.format`` / ``format_map`` resolve fields through the same guard;
- writes are allowed on builtin containers and on classes the sandbox defined (and
  their instances), refused on everything else (modules, host classes, functions);
- ``import`` accepts only an allow-list and hands out read-only module proxies through
  which no module is reachable.

Standard library and RestrictedPython only: the worker imports it.
"""

from __future__ import annotations

import builtins
import collections
import functools
import importlib
import operator
import string
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ALLOWED_MODULES", "SandboxPolicy"]

ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "re",
        "json",
        "math",
        "statistics",
        "collections",
        "itertools",
        "heapq",
        "bisect",
        "string",
        "textwrap",
        "difflib",
        "datetime",
        "random",
        "unicodedata",
        "fractions",
        "decimal",
    }
)

# Members of allowed modules that would reopen a hole (string.Formatter walks attributes with the real getattr).
_BLOCKED_MEMBERS: dict[str, frozenset[str]] = {"string": frozenset({"Formatter"})}

# Attribute names refused on any object, whatever its type (belt and braces with the type checks below).
_DENIED_ATTRIBUTES = frozenset(
    {
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "gi_suspended",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_back",
        "f_builtins",
        "f_code",
        "f_globals",
        "f_locals",
        "f_trace",
        "tb_frame",
        "tb_next",
        "mro",
    }
)

_INTERNAL_TYPES = (types.FrameType, types.CodeType, types.TracebackType, types.ModuleType)
_GENERATOR_TYPES = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_GENERATOR_METHODS = frozenset({"send", "throw", "close"})
_WRITABLE_CONTAINERS = (dict, list, set, bytearray, collections.deque)

_INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
    "@=": operator.imatmul,
}

_SAFE_BUILTIN_NAMES = (
    "None True False Ellipsis NotImplemented abs all any ascii bin bool bytearray bytes callable chr "
    "classmethod complex dict divmod enumerate filter float format frozenset hash hex id int isinstance "
    "issubclass iter len list map max min next object oct ord pow property range repr reversed round set "
    "slice sorted staticmethod str sum super tuple zip"
).split()

_EXCEPTION_NAMES = [
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
]


class _MissingType:
    __slots__ = ()


_MISSING = _MissingType()


def _refuse(name: str, reason: str) -> AttributeError:
    # A fresh error with no `.obj`: the refused object must not leak through the exception.
    return AttributeError(f"attribute {name!r} is not available in the REPL: {reason}")


class _SafeFormatter(string.Formatter):
    """`str.format` whose field lookups (``{0.attr}``, ``{0[key]}``) go through the guards."""

    def __init__(self, policy: SandboxPolicy) -> None:
        self._policy = policy

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        first, rest = _formatter_field_name_split(field_name)
        value = self.get_value(first, args, kwargs)
        for is_attribute, key in rest:
            value = self._policy.getattr(value, key) if is_attribute else value[key]
        return value, first


_formatter_field_name_split: Callable[[str], tuple[Any, Iterable[tuple[bool, Any]]]] = getattr(  # noqa: B009
    string, "_string"
).formatter_field_name_split


class SandboxPolicy:
    """Builds the globals of a restricted namespace: builtins, guards and module proxies."""

    def __init__(self) -> None:
        # Keyed by id() and checked by identity: membership tests on a WeakSet call __eq__/__hash__,
        # which a crafted class could answer for a host class.
        self._sandbox_classes: dict[int, weakref.ref[type]] = {}
        self._proxies: dict[str, object] = {}
        self._formatter = _SafeFormatter(self)

    # -- attribute access -------------------------------------------------------------------
    def getattr(self, obj: Any, name: Any, default: Any = _MISSING) -> Any:
        """Guarded `getattr`: raises `AttributeError` for anything the policy refuses."""
        if type(name) is not str:
            raise TypeError("attribute name must be a string")
        if name.startswith("_"):
            raise _refuse(name, 'names starting with "_" are private')
        if name in _DENIED_ATTRIBUTES:
            raise _refuse(name, "interpreter internals are off limits")
        if isinstance(obj, _INTERNAL_TYPES):
            raise _refuse(name, f"{type(obj).__name__} objects are off limits")
        if isinstance(obj, _GENERATOR_TYPES) and name not in _GENERATOR_METHODS:
            raise _refuse(name, "generator internals are off limits")
        try:
            value = getattr(obj, name)
        except AttributeError:
            if default is not _MISSING:
                return default
            raise AttributeError(f"{type(obj).__name__!r} object has no attribute {name!r}") from None
        if isinstance(value, _INTERNAL_TYPES):
            raise _refuse(name, f"it is a {type(value).__name__}")
        if name in ("format", "format_map"):
            # Judge the value, not the object asked: str subclasses and super() reach the same methods.
            if value is str.format or value is str.format_map:
                return self._guarded_format(str, name)
            if isinstance(value, types.BuiltinMethodType) and isinstance(getattr(value, "__self__", None), str):
                return self._guarded_format(value.__self__, name)
        return value

    def hasattr(self, obj: Any, name: Any) -> bool:
        """Guarded `hasattr`: False for anything the policy refuses."""
        try:
            self.getattr(obj, name)
        except AttributeError:
            return False
        return True

    def _guarded_format(self, obj: Any, name: str) -> Callable[..., str]:
        formatter = self._formatter
        if obj is str:  # unbound: str.format(template, *args), also reached through str subclasses
            if name == "format":
                return lambda template, *args, **kwargs: formatter.vformat(str(template), args, kwargs)
            return lambda template, mapping: formatter.vformat(str(template), (), mapping)
        if name == "format":
            return functools.partial(formatter.format, obj)
        return lambda mapping: formatter.vformat(obj, (), mapping)

    # -- writes -----------------------------------------------------------------------------
    def is_sandbox_made(self, obj: Any) -> bool:
        """True for classes defined by sandboxed code and for their instances."""
        if isinstance(obj, type):
            return self._made_here(obj)
        return any(self._made_here(base) for base in type(obj).__mro__)

    def _made_here(self, cls: type) -> bool:
        reference = self._sandbox_classes.get(id(cls))
        return reference is not None and reference() is cls

    def write_guard(self, obj: Any) -> Any:
        """The `_write_` hook: pass writable objects through, wrap the rest in a refusing proxy."""
        if isinstance(obj, _WRITABLE_CONTAINERS) or self.is_sandbox_made(obj):
            return obj
        return _ReadOnly(obj)

    def make_class(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> type:
        """The `__metaclass__` hook: build a class and remember that the sandbox made it."""
        if kwargs:
            raise TypeError("class keyword arguments are not available in the REPL")
        metaclass: type = type(bases[0]) if bases else type
        cls: type = metaclass(name, bases, namespace)
        registry = self._sandbox_classes
        key = id(cls)

        def forget(_reference: weakref.ref[type]) -> None:
            registry.pop(key, None)

        registry[key] = weakref.ref(cls, forget)
        return cls

    # -- imports ----------------------------------------------------------------------------
    def import_module(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> object:
        """The `__import__` hook: allow-listed modules only, as read-only proxies."""
        if level != 0:
            raise ImportError("relative imports are not available in the REPL")
        if name not in ALLOWED_MODULES:
            allowed = ", ".join(sorted(ALLOWED_MODULES))
            raise ImportError(f"import of {name!r} is not allowed in the REPL; available modules: {allowed}")
        proxy = self._proxies.get(name)
        if proxy is None:
            proxy = self._proxies[name] = _module_proxy(importlib.import_module(name))
        return proxy

    # -- the namespace ----------------------------------------------------------------------
    def builtins(self) -> dict[str, Any]:
        """The `__builtins__` mapping a restricted cell sees."""
        table: dict[str, Any] = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
        table.update({name: getattr(builtins, name) for name in _EXCEPTION_NAMES})
        table.update(
            {
                "__build_class__": builtins.__build_class__,
                "__import__": self.import_module,
                "getattr": self.getattr,
                "hasattr": self.hasattr,
                "type": _type_of,
                "dir": _public_dir,
            }
        )
        return table

    def restricted_globals(self, print_factory: Callable[[Any], Any]) -> dict[str, Any]:
        """Guards and builtins for a restricted namespace (user names are added on top)."""
        from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

        return {
            "__builtins__": self.builtins(),
            "__name__": "repl",
            "__metaclass__": self.make_class,
            "_getattr_": self.getattr,
            "_getitem_": operator.getitem,
            "_getiter_": iter,
            "_write_": self.write_guard,
            "_inplacevar_": _inplace,
            "_apply_": _apply,
            "_print_": print_factory,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        }


class _ReadOnly:
    """Stands in for an object the sandbox may read but not write; every write raises."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def _deny(self, *_args: Any) -> None:
        target = object.__getattribute__(self, "_target")
        kind = "module" if isinstance(target, _ModuleProxyBase) else type(target).__name__
        raise TypeError(f"cannot modify this {kind} object in the REPL (only your own classes and containers)")

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _deny


class _ModuleProxyBase:
    __slots__ = ()


def _module_proxy(module: types.ModuleType) -> object:
    """A read-only view of `module`: no `_` names, no submodules, no writes."""
    module_name = module.__name__
    blocked = _BLOCKED_MEMBERS.get(module_name, frozenset())

    class ReadOnlyModule(_ModuleProxyBase):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            if name.startswith("_") or name in blocked:
                raise AttributeError(f"module {module_name!r} has no public attribute {name!r} in the REPL")
            try:
                value = getattr(module, name)
            except AttributeError:
                raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
            if isinstance(value, _INTERNAL_TYPES):
                raise AttributeError(f"{module_name}.{name} is a module; only allow-listed modules can be imported")
            return value

        def __setattr__(self, name: str, value: Any) -> None:
            raise TypeError(f"module {module_name!r} is read-only in the REPL")

        def __delattr__(self, name: str) -> None:
            raise TypeError(f"module {module_name!r} is read-only in the REPL")

        def __repr__(self) -> str:
            return f"<module {module_name!r} (read-only)>"

        def __dir__(self) -> list[str]:
            return [n for n in dir(module) if not n.startswith("_") and n not in blocked]

    ReadOnlyModule.__name__ = ReadOnlyModule.__qualname__ = "module"
    return ReadOnlyModule()


def _type_of(obj: Any) -> type:
    """One-argument `type()`; never hands out a metaclass (that would build classes with any dunder)."""
    result = type(obj)
    if issubclass(result, type):
        raise TypeError("type() of a class is not available in the REPL")
    return result


def _public_dir(obj: Any = _MISSING) -> list[str]:
    if obj is _MISSING:
        raise TypeError("dir() needs an argument in the REPL")
    return [name for name in dir(obj) if not name.startswith("_")]


def _inplace(op: str, target: Any, value: Any) -> Any:
    return _INPLACE_OPERATORS[op](target, value)


def _apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)
