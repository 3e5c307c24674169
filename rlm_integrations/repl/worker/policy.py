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
- ``import`` accepts only an allow-list and hands out audited, read-only module views
  (`safe_modules`) through which no module is reachable;
- host Python code reached through an attribute runs only on instances of its own class,
  and its results are checked (`host_calls`);
- the class registry and the guards live in closures: no attribute of anything a cell can
  reach leads to them, and they have no attributes to write.

Standard library and RestrictedPython only: the worker imports it.
"""

from __future__ import annotations

import abc
import builtins
import collections
import importlib
import operator
import string
import types
import weakref
from collections.abc import Callable
from typing import Any

import rlm_integrations.repl.worker.host_calls as _host_calls
import rlm_integrations.repl.worker.safe_modules as _safe_modules
from rlm_integrations.repl.worker.host_calls import HostCallGuard
from rlm_integrations.repl.worker.safe_modules import ALLOWED_MODULES, INTERNAL_IMPORTS, ModuleView

__all__ = ["ALLOWED_MODULES", "SandboxPolicy"]

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
# A container stored on a host class is state shared by the whole worker: a cell reading it gets a copy.
_SHARED_STATE_COPIES: dict[type, Callable[[Any], Any]] = {
    dict: dict.copy,
    list: list.copy,
    set: set.copy,
    bytearray: bytearray.copy,
    collections.deque: lambda d: collections.deque(d, d.maxlen),
}
# Library containers whose items (not attributes) a cell may write: their __setitem__ only touches `.data`.
_ITEM_WRITABLE = (collections.UserDict, collections.UserList)

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


# Host functions no cell may call, however reached (a class, an instance, super()).
_REFUSED_HOST_FUNCTIONS: dict[Any, str] = {
    abc.ABCMeta.register: "registering a virtual subclass changes isinstance() for the whole worker",
}


class _MissingType:
    __slots__ = ()


_MISSING = _MissingType()


def _refuse(name: str, reason: str) -> AttributeError:
    # A fresh error with no `.obj`: the refused object must not leak through the exception.
    return AttributeError(f"attribute {name!r} is not available in the REPL: {reason}")


def _plain_text(value: Any) -> str:
    """`value` as an exact `str` (a subclass's own methods never run), or TypeError."""
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


class SandboxPolicy:
    """Builds the globals of a restricted namespace: builtins, guards and module views."""

    __slots__ = (
        "_formatter",
        "_host_guard",
        "_is_sandbox_class",
        "_namespace",
        "_register_class",
        "_sealed",
        "_views",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise AttributeError("a SandboxPolicy cannot change once it guards a namespace")
        object.__setattr__(self, name, value)

    def __init__(self) -> None:
        self._sealed = False
        # The registry of classes the sandbox made lives in this closure only. Keyed by id() and checked by
        # identity: membership tests on a WeakSet call __eq__/__hash__, which a crafted class could answer.
        registry: dict[int, weakref.ref[type]] = {}

        def register(cls: type) -> None:
            key = id(cls)
            registry[key] = weakref.ref(cls, lambda _reference: registry.pop(key, None))

        def is_sandbox_class(cls: type) -> bool:
            reference = registry.get(id(cls))
            return reference is not None and reference() is cls

        self._register_class = register
        self._is_sandbox_class = is_sandbox_class
        self._views: dict[str, object] = {}
        self._namespace: dict[str, Any] | None = None
        formatter = _safe_modules.formatter_class(self.getattr)
        self._formatter = formatter()
        trusted = (vars(_host_calls), vars(_safe_modules), globals())

        def is_trusted(function: types.FunctionType) -> bool:
            scope = function.__globals__
            return scope is self._namespace or any(scope is g for g in trusted)

        self._host_guard = HostCallGuard(is_trusted, self._replacements(formatter), _REFUSED_HOST_FUNCTIONS)

    def _replacements(self, formatter: type[string.Formatter]) -> dict[Any, Callable[..., Any]]:
        vformat = self._formatter.vformat

        def user_string_format(self: Any, *args: Any, **kwargs: Any) -> str:
            return vformat(_plain_text(self.data), args, kwargs)

        def user_string_format_map(self: Any, mapping: Any) -> str:
            return vformat(_plain_text(self.data), (), mapping)

        return {
            collections.UserString.format: user_string_format,
            collections.UserString.format_map: user_string_format_map,
            string.Formatter.get_field: formatter.get_field,
        }

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
        except AttributeError as error:
            if default is not _MISSING:
                return default
            if isinstance(obj, ModuleView):  # the view says why (not audited, a module, ...)
                raise AttributeError(str(error)) from None
            raise AttributeError(f"{type(obj).__name__!r} object has no attribute {name!r}") from None
        if isinstance(value, _INTERNAL_TYPES):
            raise _refuse(name, f"it is a {type(value).__name__}")
        if name in ("format", "format_map"):
            # Judge the value, not the object asked: str subclasses and super() reach the same methods.
            if value is str.format or value is str.format_map:
                return self._guarded_format(str, name)
            if isinstance(value, types.BuiltinMethodType) and isinstance(getattr(value, "__self__", None), str):
                return self._guarded_format(value.__self__, name)
        kind = type(value)
        if kind is types.MethodType or kind is types.FunctionType:
            return self._host_guard.guard(obj, name, value)
        if kind in _SHARED_STATE_COPIES and self._is_host_class_state(obj, name, value):
            return _SHARED_STATE_COPIES[kind](value)
        return value

    def _is_host_class_state(self, obj: Any, name: str, value: Any) -> bool:
        """True if `value` is a container held by a class the sandbox did not make (shared by everything).

        A container found neither on the classes ``obj.name`` searches nor on the instance itself
        came through a property or an object that forwards reads (``super()``, a bound method, a
        generic alias): unless the cell made `obj`, whose it is cannot be told, so it counts as shared.
        """
        for klass in _host_calls.searched_classes(obj):
            if type.__dict__["__dict__"].__get__(klass).get(name) is value:
                return not self._is_sandbox_class(klass)
        if _host_calls.own_attribute(obj, name) is value:
            return False
        return not self.is_sandbox_made(obj)

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
            return lambda *args, **kwargs: formatter.vformat(obj, args, kwargs)
        return lambda mapping: formatter.vformat(obj, (), mapping)

    # -- writes -----------------------------------------------------------------------------
    def is_sandbox_made(self, obj: Any) -> bool:
        """True for classes defined by sandboxed code and for their instances."""
        made_here = self._is_sandbox_class
        if isinstance(obj, type):
            return made_here(obj)
        return any(made_here(base) for base in type.__dict__["__mro__"].__get__(type(obj)))

    def write_guard(self, obj: Any) -> Any:
        """The `_write_` hook: pass writable objects through, wrap the rest in a refusing proxy."""
        if isinstance(obj, _WRITABLE_CONTAINERS) or self.is_sandbox_made(obj):
            return obj
        if type(obj) in _ITEM_WRITABLE:
            return _ItemsOnly(obj)
        return _ReadOnly(obj)

    def make_class(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> type:
        """The `__metaclass__` hook: build a class and remember that the sandbox made it."""
        if kwargs:
            raise TypeError("class keyword arguments are not available in the REPL")
        if not all(isinstance(base, type) for base in bases):
            raise TypeError("the bases of a class must be classes")
        metaclass: type = type(bases[0]) if bases else type
        cls: type = metaclass(name, bases, namespace)
        if not isinstance(cls, type):
            raise TypeError("class creation did not produce a class")
        self._register_class(cls)
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
        """The `__import__` hook: allow-listed modules only, as audited read-only views.

        C code that imports for itself (datetime's ``strftime`` needs ``time``) reaches this
        hook too, with a list as `fromlist` where an ``import`` statement passes None or a
        tuple; CPython then takes the module from ``sys.modules`` itself. Such imports of
        `INTERNAL_IMPORTS` happen and return nothing.
        """
        if type(name) is not str:
            raise TypeError("module name must be a string")
        if level != 0:
            raise ImportError("relative imports are not available in the REPL")
        if name in INTERNAL_IMPORTS and type(fromlist) is list:
            importlib.import_module(name)
            return None
        if name not in ALLOWED_MODULES:
            allowed = ", ".join(sorted(ALLOWED_MODULES))
            raise ImportError(f"import of {name!r} is not allowed in the REPL; available modules: {allowed}")
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = _safe_modules.module_view(name, type(self._formatter))
        return view

    def reset_cell_state(self) -> None:
        """Give the next cell a fresh decimal context if cells use decimal (its mutations never carry over)."""
        if "decimal" in self._views:
            import decimal

            decimal.setcontext(decimal.Context())

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

        if self._namespace is not None:
            raise RuntimeError("a SandboxPolicy guards exactly one namespace")
        self._namespace = {
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
        self._sealed = True
        return self._namespace


_WRITE_HINTS: dict[tuple[str, str], str] = {
    ("decimal", "Context"): "; for more precision use `with decimal.localcontext(prec=50):`",
}


class _ReadOnly:
    """Stands in for an object the sandbox may read but not write; every write raises."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def _deny(self, *_args: Any) -> None:
        target = object.__getattribute__(self, "_target")
        kind = "module" if isinstance(target, ModuleView) else type(target).__name__
        hint = _WRITE_HINTS.get((type(target).__module__, kind), "")
        raise TypeError(f"cannot modify this {kind} object in the REPL (only your own classes and containers){hint}")

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _deny


class _ItemsOnly(_ReadOnly):
    """Stands in for a library container: item writes go through, attribute writes raise."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        object.__getattribute__(self, "_target")[key] = value

    def __delitem__(self, key: Any) -> None:
        del object.__getattribute__(self, "_target")[key]


def _type_of(obj: Any) -> type:
    """One-argument `type()`; never hands out a metaclass (that would build classes with any dunder)."""
    result = type(obj)
    if issubclass(result, type):
        raise TypeError("type() of a class is not available in the REPL")
    if result is types.GenericAlias:
        # Its constructor wraps any callable, and calling the alias writes __orig_class__ on whatever that returns.
        raise TypeError("type() of a generic alias (list[int]) is not available in the REPL")
    return result


def _public_dir(obj: Any = _MISSING) -> list[str]:
    if obj is _MISSING:
        raise TypeError("dir() needs an argument in the REPL")
    return [name for name in dir(obj) if not name.startswith("_")]


def _inplace(op: str, target: Any, value: Any) -> Any:
    return _INPLACE_OPERATORS[op](target, value)


def _apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)
