"""Guards on host Python code that a restricted cell can call.

The allowed modules are partly written in Python, and that code runs with the real
builtins: ``self.__class__``, ``setattr``, ``str.format`` and friends are not checked
there. Three rules keep such code from doing for a cell what the cell may not do itself:

- **An unbound host method runs only on an instance of the class that defines it.**
  ``UserList.copy(int)`` would return ``int.__class__(int)``, the real `type`; the guard
  refuses the call because `int` is not a `UserList`. The check reads the real MRO of
  the argument's real type, so no ``__instancecheck__`` or registered ABC can answer it.
- **Some host functions are replaced or refused outright**, by identity, however the cell
  reaches them (module, class, instance, ``super()``): ``UserString.format`` goes
  through the guarded formatter, ``ABCMeta.register`` (which changes ``isinstance`` for
  the whole worker) is refused.
- **Results are checked**: a host call that returns a module, a frame, a code object, a
  traceback or a metaclass raises instead.

Functions the cell defined itself, and the sandbox's own helpers, are not wrapped.
Standard library only: the worker imports it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MISSING", "HostCallGuard", "checked_result", "guard_function", "own_attribute", "searched_classes"]

_CACHE_LIMIT = 4096
_FORBIDDEN_RESULTS = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)


class _Missing:
    __slots__ = ()


MISSING: Any = _Missing()
"""What `own_attribute` returns when the object holds no such attribute itself."""


def checked_result(value: Any) -> Any:
    """Return `value` unless it is an interpreter object a cell must never hold."""
    if isinstance(value, _FORBIDDEN_RESULTS):
        raise TypeError(f"a library call returned a {type(value).__name__} object, which the REPL does not hand out")
    if isinstance(value, type) and issubclass(value, type):
        raise TypeError("a library call returned a metaclass (it builds classes), which the REPL does not hand out")
    return value


def _call(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for key in kwargs:
        if key.startswith("_"):  # private parameters (`_w=WHITESPACE.match`, `_repr=float.__repr__`) are not API
            raise TypeError(f"keyword argument {key!r} is private; library functions take only public arguments")
    try:
        result = function(*args, **kwargs)
    except AttributeError as error:
        error.obj = None  # the object host code failed to read from may be one the cell never held
        raise
    return checked_result(result)


def _describe(function: Any) -> str:
    return str(getattr(function, "__qualname__", None) or getattr(function, "__name__", "function"))


def _require_instance(args: tuple[Any, ...], owner: type, where: str) -> None:
    if args:
        # The real MRO of the real type: immune to __class__ properties, __instancecheck__ and ABC registration.
        for klass in type.__dict__["__mro__"].__get__(type(args[0])):
            if klass is owner:
                return
        got = type(args[0]).__name__
    else:
        got = "nothing"
    raise TypeError(
        f"{where}() needs a {owner.__name__} instance as its first argument in the REPL (got {got}); "
        f"call it on an instance instead: obj.{where.rsplit('.', 1)[-1]}(...)"
    )


def guard_function(function: Callable[..., Any], owner: type | None = None, where: str = "") -> Callable[..., Any]:
    """Wrap a host Python function: check its `self` (when `owner` is given) and its result."""
    name = where or _describe(function)
    if owner is None:

        def call(*args: Any, **kwargs: Any) -> Any:
            return _call(function, args, kwargs)

    else:

        def call(*args: Any, **kwargs: Any) -> Any:
            _require_instance(args, owner, name)
            return _call(function, args, kwargs)

    call.__name__ = getattr(function, "__name__", "function")
    call.__qualname__ = name
    call.__doc__ = getattr(function, "__doc__", None)
    return call


def _bind(function: Callable[..., Any], bound_self: Any, where: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _call(function, (bound_self, *args), kwargs)

    call.__qualname__ = where  # what repr() shows
    return call


class HostCallGuard:
    """Decides what a cell gets when an attribute read yields host Python code.

    Args:
        is_trusted: True for functions that need no wrapping (the cell's own, the sandbox's).
        replacements: host function -> function with the same signature (self first) to run instead.
        refused: host function -> why it is not available.
    """

    __slots__ = ("_bound_targets", "_is_trusted", "_refused", "_replacements")

    def __init__(
        self,
        is_trusted: Callable[[types.FunctionType], bool],
        replacements: Mapping[Any, Callable[..., Any]],
        refused: Mapping[Any, str],
    ) -> None:
        self._is_trusted = is_trusted
        self._replacements = dict(replacements)
        self._refused = dict(refused)
        # host function -> (what to run, its name); the set of host functions is finite, so is this cache.
        self._bound_targets: dict[types.FunctionType, tuple[Callable[..., Any], str]] = {}

    def guard(self, obj: Any, name: str, value: Any) -> Any:
        """What the cell gets for ``obj.name`` when the real lookup returned `value`."""
        kind = type(value)
        if kind is types.MethodType:
            function = value.__func__
            if type(function) is not types.FunctionType or self._is_trusted(function):
                return value
            return self._bound(function, value.__self__)
        if kind is types.FunctionType and not self._is_trusted(value):
            return self._unbound(obj, name, value)
        return value

    def _check_refused(self, function: Any) -> None:
        reason = self._refused.get(function)
        if reason is not None:
            raise AttributeError(f"{_describe(function)} is not available in the REPL: {reason}")

    def _bound(self, function: types.FunctionType, bound_self: Any) -> Callable[..., Any]:
        target = self._bound_targets.get(function)
        if target is None:
            self._check_refused(function)
            if len(self._bound_targets) >= _CACHE_LIMIT:
                self._bound_targets.clear()
            target = self._bound_targets[function] = (self._replacements.get(function) or function, _describe(function))
        return _bind(target[0], bound_self, target[1])

    def _unbound(self, obj: Any, name: str, function: types.FunctionType) -> Callable[..., Any]:
        self._check_refused(function)
        owner = _defining_class(obj, name, function)
        replacement = self._replacements.get(function)
        return guard_function(replacement or function, owner, _describe(function))


def searched_classes(obj: Any) -> tuple[type, ...]:
    """The classes whose own dicts ``obj.name`` searches, in order (the real MRO; after ``__thisclass__`` for super)."""
    if isinstance(obj, super):
        start = super.__dict__["__self_class__"].__get__(obj)
        mro: tuple[type, ...] = type.__dict__["__mro__"].__get__(start) if isinstance(start, type) else ()
        this = super.__dict__["__thisclass__"].__get__(obj)
        for index, klass in enumerate(mro):
            if klass is this:
                return mro[index + 1 :]
        return mro
    owner = obj if isinstance(obj, type) else type(obj)
    return tuple(type.__dict__["__mro__"].__get__(owner))


def own_attribute(obj: Any, name: str) -> Any:
    """``obj.__dict__[name]`` read without running any of obj's own code; `MISSING` when there is none."""
    if isinstance(obj, type | super):
        return MISSING
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return MISSING
    return own.get(name, MISSING) if type(own) is dict else MISSING


def _defining_class(obj: Any, name: str, function: types.FunctionType) -> type | None:
    """The class whose own dict holds `function` as a plain method; None for a staticmethod or an instance's own.

    Raises AttributeError when `function` came from a class but is neither (fail closed). Objects that
    pass attribute reads on to another object (a bound method to its function, a generic alias such as
    ``ChainMap[int]`` to its class) hand out that object's unbound methods: they are neither, so refused.
    """
    if not isinstance(obj, type | super):
        if own_attribute(obj, name) is function:
            return None  # a function stored on an instance: no implicit self
        # property.fget, or a class's method reached through a forwarding object: no class to check `self` against.
        raise AttributeError(
            f"{_describe(function)} is not available in the REPL: taken out of a descriptor or reached through another "
            "object (a bound method, a generic alias), it has no class to check its first argument against; "
            "call it on an instance of its class"
        )
    for klass in searched_classes(obj):
        raw = type.__dict__["__dict__"].__get__(klass).get(name, MISSING)
        if raw is function:
            return klass
        if isinstance(raw, staticmethod) and raw.__func__ is function:
            return None
        if raw is not MISSING:
            break
    raise AttributeError(f"{_describe(function)} is not available in the REPL: it cannot be checked as a method")
