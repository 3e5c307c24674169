"""What a restricted cell gets when it imports an allowed module: an audited, read-only view.

A view exports only the module's public API (its ``__all__``, or its public names when it
has none) and, of that, only what passes this audit:

- constants (numbers, strings, bytes, enum members) and functions and classes written in
  C pass as they are: their code does not run the real ``getattr``/``setattr``/``type``
  on the cell's behalf;
- members written in Python must be listed in `AUDIT` (read, and judged safe given the
  guards in `host_calls`), replaced (`string.Formatter`), or they are dropped: a member
  a new Python version adds stays unavailable until someone reads its code;
- modules, capsules, shared mutable objects (decimal's template contexts) are dropped.

Module functions written in Python are handed out wrapped so their results are checked;
methods are guarded where the cell reads them (`SandboxPolicy.getattr`). The reasons for
each verdict are in docs/security.md ("Wall 1").

Standard library only: the worker imports it.
"""

from __future__ import annotations

import enum
import importlib
import string
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rlm_integrations.repl.worker.host_calls import guard_function

__all__ = ["ALLOWED_MODULES", "AUDIT", "DROPPED", "INTERNAL_IMPORTS", "formatter_class", "module_view"]

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

INTERNAL_IMPORTS: frozenset[str] = frozenset({"time", "_strptime"})
"""Modules C code imports for itself while a cell runs (datetime's strftime and strptime).

CPython's C-level import looks ``__import__`` up in the running cell's builtins and then
takes the module from ``sys.modules``, so the import hook only has to let the import
happen; it returns nothing to the cell (see `SandboxPolicy.import_module`)."""

# Members written in Python, read and kept. Everything Python-level not listed here is dropped.
AUDIT: Mapping[str, frozenset[str]] = {
    "re": frozenset(
        "compile escape findall finditer fullmatch match purge search split sub subn "
        "error PatternError RegexFlag".split()
    ),
    "json": frozenset("dump dumps load loads JSONDecoder JSONDecodeError JSONEncoder".split()),
    "statistics": frozenset(
        "NormalDist correlation covariance fmean geometric_mean harmonic_mean linear_regression mean median "
        "median_grouped median_high median_low mode multimode pstdev pvariance quantiles stdev variance".split()
    ),
    "collections": frozenset("ChainMap Counter UserDict UserList UserString namedtuple".split()),
    "heapq": frozenset("merge nlargest nsmallest".split()),
    "string": frozenset("capwords Template".split()),
    "textwrap": frozenset("TextWrapper wrap fill dedent indent shorten".split()),
    "difflib": frozenset(
        "get_close_matches ndiff restore SequenceMatcher Differ IS_CHARACTER_JUNK IS_LINE_JUNK context_diff "
        "unified_diff diff_bytes HtmlDiff Match".split()
    ),
    "random": frozenset(
        "Random SystemRandom betavariate binomialvariate choice choices expovariate gammavariate gauss getstate "
        "lognormvariate normalvariate paretovariate randbytes randint randrange sample seed setstate shuffle "
        "triangular uniform vonmisesvariate weibullvariate".split()
    ),
    "fractions": frozenset({"Fraction"}),
    "decimal": frozenset({"DecimalTuple"}),
}

DROPPED: Mapping[str, Mapping[str, str]] = {
    "re": {"template": "deprecated, and unused by honest code"},
    "decimal": {
        "setcontext": "replaces the worker thread's decimal context; use decimal.localcontext(prec=...)",
        "DefaultContext": "the template every new Context copies: shared state",
        "BasicContext": "a shared mutable context",
        "ExtendedContext": "a shared mutable context",
    },
    "unicodedata": {},
}
"""Public members refused on purpose, with the reason the cell is told."""

# Objects (not classes or functions) that are immutable and written in C: kept.
_KEPT_OBJECTS: Mapping[str, frozenset[str]] = {"datetime": frozenset({"UTC"}), "unicodedata": frozenset({"ucd_3_2_0"})}

_CONSTANT_TYPES = (type(None), bool, int, float, complex, str, bytes)

_formatter_field_name_split: Callable[[str], tuple[Any, Iterable[tuple[bool, Any]]]] = getattr(  # noqa: B009
    string, "_string"
).formatter_field_name_split


def formatter_class(guarded_getattr: Callable[[Any, str], Any]) -> type[string.Formatter]:
    """A `string.Formatter` whose field lookups (``{0.attr}``, ``{0[key]}``) go through `guarded_getattr`.

    The guard is held in a closure, not an attribute, so no instance or subclass can swap it.
    """

    class Formatter(string.Formatter):
        """`string.Formatter` for the REPL: ``{0.name}`` fields obey the same rules as ``obj.name``."""

        def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
            first, rest = _formatter_field_name_split(field_name)
            value = self.get_value(first, args, kwargs)
            for is_attribute, key in rest:
                value = guarded_getattr(value, key) if is_attribute else value[key]
            return value, first

    Formatter.__module__ = "string"
    return Formatter


def _written_in_python(value: Any) -> bool:
    if isinstance(value, types.FunctionType | types.MethodType):
        return isinstance(getattr(value, "__func__", value), types.FunctionType)
    if isinstance(value, type):
        for klass in type.__dict__["__mro__"].__get__(value)[:-1]:
            for member in type.__dict__["__dict__"].__get__(klass).values():
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                if isinstance(member, property):
                    member = member.fget
                if isinstance(member, types.FunctionType):
                    return True
    return False


def _is_constant(value: Any) -> bool:
    if isinstance(value, _CONSTANT_TYPES) or isinstance(value, enum.Enum):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_is_constant(item) for item in value)
    return False


def _export(module_name: str, name: str, value: Any, formatter: type) -> tuple[bool, Any, str]:
    """``(kept, value to hand out, reason when dropped)`` for one public member."""
    dropped = DROPPED.get(module_name, {}).get(name)
    if dropped is not None:
        return False, None, dropped
    if isinstance(value, types.ModuleType):
        return False, None, "it is a module; only allow-listed modules can be imported"
    if module_name == "string" and name == "Formatter":
        return True, formatter, ""
    if _is_constant(value):
        return True, value, ""
    if _written_in_python(value):
        if name not in AUDIT.get(module_name, frozenset()):
            return False, None, "it is Python code that has not been audited for the REPL"
        if isinstance(value, types.FunctionType | types.MethodType):
            return True, guard_function(value, None, f"{module_name}.{name}"), ""
        return True, value, ""
    if isinstance(value, types.BuiltinFunctionType | type):
        return True, value, ""
    if name in _KEPT_OBJECTS.get(module_name, frozenset()):
        return True, value, ""
    return False, None, f"{type(value).__name__} objects are not handed out"


def module_view(module_name: str, formatter: type) -> object:
    """A read-only view of an allowed module: its audited public API and nothing else."""
    module = importlib.import_module(module_name)
    public = getattr(module, "__all__", None)
    names = list(public) if public is not None else [n for n in dir(module) if not n.startswith("_")]
    exports: dict[str, Any] = {}
    refusals: dict[str, str] = {}
    for name in names:
        if name.startswith("_") or not hasattr(module, name):
            continue
        kept, value, reason = _export(module_name, name, getattr(module, name), formatter)
        if kept:
            exports[name] = value
        else:
            refusals[name] = reason
    return _make_view(module_name, exports, refusals)


class ModuleView:
    """Base of every module view (for isinstance checks by the policy)."""

    __slots__ = ()


def _make_view(module_name: str, exports: dict[str, Any], refusals: dict[str, str]) -> object:
    listing = sorted(exports)

    class View(ModuleView):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            try:
                return exports[name]
            except (KeyError, TypeError):
                pass
            if name == "__class__":  # isinstance() asks, from host code only (a cell may not name it)
                return View
            reason = refusals.get(name) if type(name) is str else None
            if reason is not None:
                raise AttributeError(f"{module_name}.{name} is not available in the REPL: {reason}")
            raise AttributeError(f"module {module_name!r} has no public attribute {name!r} in the REPL")

        def __setattr__(self, name: str, value: Any) -> None:
            raise TypeError(f"module {module_name!r} is read-only in the REPL")

        def __delattr__(self, name: str) -> None:
            raise TypeError(f"module {module_name!r} is read-only in the REPL")

        def __repr__(self) -> str:
            return f"<module {module_name!r} (read-only)>"

        def __dir__(self) -> list[str]:
            return list(listing)

    View.__name__ = View.__qualname__ = "module"
    return View()
