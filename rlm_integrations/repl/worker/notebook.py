"""Notebook semantics for one namespace: compile a cell whole, run it, report what it did.

- One namespace across cells; the repr of a trailing expression is returned.
- A cell that fails to compile runs nothing (both parts are compiled before either runs).
- A runtime error keeps the assignments made before it and comes back as a short
  traceback that names the cell's lines.
- ``FINAL(value)`` / ``FINAL_VAR(name)`` record the answer and stop the cell; the record
  survives code that catches the stop signal.

Runs inside the worker process. Standard library and RestrictedPython only.
"""

from __future__ import annotations

import ast
import builtins
import time
from collections.abc import Callable
from typing import Any

from rlm_integrations.repl.wire.codec import encode_value
from rlm_integrations.repl.wire.schema import RESULT
from rlm_integrations.repl.worker.output import BoundedText, truncate_middle
from rlm_integrations.repl.worker.policy import SandboxPolicy

__all__ = ["CALL_ERROR_KEY", "CallError", "Notebook"]

HostCaller = Callable[[str, tuple[Any, ...], dict[str, Any]], Any]

_MAX_ERROR_MESSAGE = 2_000
_MAX_TRACEBACK_FRAMES = 6


CALL_ERROR_KEY = "rlm_call_error"
"""A failed item of a batched call crosses from the host as ``{CALL_ERROR_KEY: "<Type>: <message>"}``."""
_BATCHED = frozenset({"llm_query_batched", "rlm_query_batched"})


class CallError(str):
    """A failed item of `llm_query_batched` / `rlm_query_batched`: a str (``"Error: ..."``) with `.error`.

    Code tells it from a reply with ``isinstance(item, CallError)``; `.error` is the
    failure (``"<Type>: <message>"``).
    """

    error: str

    def __new__(cls, error: str) -> CallError:
        """A `CallError` carrying the error text."""
        item = super().__new__(cls, f"Error: {error}")
        item.error = error
        return item


def _rebuild_call_errors(result: Any) -> Any:
    if not isinstance(result, list):
        return result
    return [
        CallError(str(item[CALL_ERROR_KEY])) if isinstance(item, dict) and list(item) == [CALL_ERROR_KEY] else item
        for item in result
    ]


class _FinalSignal(BaseException):
    """Stops a cell after FINAL; not an Exception, so `except Exception` lets it through."""


class _CellPrinter:
    """What RestrictedPython's `_print_` factory returns: `print` for one scope, writing to the cell's output."""

    __slots__ = ("_notebook",)

    def __init__(self, notebook: Notebook) -> None:
        self._notebook = notebook

    def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", file: Any = None, flush: Any = False) -> None:
        self._notebook.print(*objects, sep=sep, end=end, file=file, flush=flush)

    def __call__(self) -> str:
        return self._notebook.output_so_far()


class _AugmentedAssignRewriter(ast.NodeTransformer):
    """Rewrite ``d[k] += v`` and ``o.a += v`` to ``d[k] = d[k] + v`` when the target has no side effects.

    RestrictedPython refuses augmented assignment to items and attributes, yet LM code
    counts with ``counts[word] += 1`` all the time. The rewrite goes through the same
    read and write guards as the plain form.
    """

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        target = node.target
        if isinstance(target, ast.Name) or not _is_pure(target):
            return node
        load = _as_load(target)
        value = ast.BinOp(left=load, op=node.op, right=node.value)
        assign = ast.Assign(targets=[target], value=value)
        return ast.copy_location(assign, node)


def _calls_print(node: ast.AST) -> bool:
    # RestrictedPython binds `print` per compiled unit; a trailing expression that prints
    # must stay in the body, where that binding exists. Its value is None anyway.
    return any(isinstance(n, ast.Name) and n.id == "print" for n in ast.walk(node))


def _is_pure(node: ast.AST) -> bool:
    if isinstance(node, ast.Name | ast.Constant):
        return True
    if isinstance(node, ast.Attribute):
        return _is_pure(node.value)
    if isinstance(node, ast.Subscript):
        return _is_pure(node.value) and _is_pure(node.slice)
    if isinstance(node, ast.UnaryOp):
        return _is_pure(node.operand)
    if isinstance(node, ast.Tuple):
        return all(_is_pure(e) for e in node.elts)
    return False


def _as_load(node: ast.expr) -> ast.expr:
    copy = ast.parse(ast.unparse(node), mode="eval").body
    return ast.copy_location(copy, node)


class Notebook:
    """A persistent namespace and the machinery to run cells in it.

    Args:
        restricted: compile cells with RestrictedPython (True) or run plain Python (False,
            for sandboxes where the container is the boundary).
        max_output_chars: bound on each cell's printed output and value repr.
        call_host: how a callback stub reaches the host (the worker's protocol).
    """

    def __init__(self, *, restricted: bool, max_output_chars: int, call_host: HostCaller) -> None:
        self.restricted = restricted
        self.max_output_chars = max_output_chars
        self._call_host = call_host
        self._output = BoundedText(max_output_chars)
        self._final: dict[str, Any] | None = None
        self._cell_number = 0
        self.callback_seconds = 0.0
        if restricted:
            self._policy: SandboxPolicy | None = SandboxPolicy()
            self.namespace: dict[str, Any] = self._policy.restricted_globals(lambda *_: _CellPrinter(self))
        else:
            self._policy = None
            plain = dict(vars(builtins))
            plain["print"] = self.print
            self.namespace = {"__builtins__": plain, "__name__": "repl"}
        self.namespace.update({"FINAL": self._submit, "FINAL_VAR": self._submit_variable, "SHOW_VARS": self._show_vars})
        self.namespace["CallError"] = CallError
        self._reserved = set(self.namespace)

    # -- what cells can call ----------------------------------------------------------------
    def print(self, *objects: Any, sep: Any = " ", end: Any = "\n", file: Any = None, flush: Any = False) -> None:
        """`print` for cells: writes to the cell's bounded output."""
        if file is not None:
            raise TypeError("print(file=...) is not available in the REPL; print to the cell's output")
        if sep is None:
            sep = " "
        if end is None:
            end = "\n"
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print's sep and end must be strings")
        sep, end = str.__str__(sep), str.__str__(end)  # exact str: a subclass's join() never runs
        self._output.write(sep.join(str(item) for item in objects) + end)

    def output_so_far(self) -> str:
        """The current cell's output (what RestrictedPython calls ``printed``)."""
        return self._output.getvalue()

    def _submit(self, *args: Any, **named: Any) -> None:
        if (args and named) or len(args) > 1 or not (args or named):
            raise TypeError("FINAL takes one value, FINAL(value), or named outputs, FINAL(answer=..., ...)")
        value = args[0] if args else dict(named)
        self._final = {**encode_value(value), "variable": None, "named": not args}
        raise _FinalSignal

    def _submit_variable(self, name: Any) -> None:
        if not isinstance(name, str):
            self._final = {**encode_value(name), "variable": None, "named": False}
            raise _FinalSignal
        # An exact copy: a str subclass's own __hash__/__eq__ must not steer the lookups below.
        name = str.__str__(name)
        if name not in self.namespace or name in self._reserved:
            defined = ", ".join(self.variables()) or "none"
            raise NameError(
                f"FINAL_VAR({name!r}): no variable named {name!r} (defined: {defined}). "
                "Assign it first, or submit a value with FINAL(value)."
            )
        self._final = {**encode_value(self.namespace[name]), "variable": name, "named": False}
        raise _FinalSignal

    def _show_vars(self) -> None:
        for name in self.variables():
            value = self.namespace[name]
            size = f", len {len(value):,}" if isinstance(value, str | bytes | list | tuple | dict | set) else ""
            self.print(f"{name}: {type(value).__name__}{size}")

    # -- host side of the namespace ---------------------------------------------------------
    def define_callback(self, name: str) -> None:
        """Bind a stub named `name` that forwards its call to the host."""
        call_host = self._call_host

        def stub(*args: Any, **kwargs: Any) -> Any:
            result = call_host(name, args, kwargs)
            return _rebuild_call_errors(result) if name in _BATCHED else result

        stub.__name__ = stub.__qualname__ = name
        self.namespace[name] = stub
        self._reserved.add(name)

    def variables(self) -> list[str]:
        """Names the cells (or `load`) defined, in definition order."""
        return [n for n in self.namespace if n not in self._reserved and not n.startswith("_")]

    # -- running a cell ---------------------------------------------------------------------
    def run(self, source: str) -> dict[str, Any]:
        """Compile and run one cell; return the result payload for the host."""
        self._cell_number += 1
        filename = f"<cell {self._cell_number}>"
        self._output = BoundedText(self.max_output_chars)
        self._final = None
        self.callback_seconds = 0.0
        if self._policy is not None:
            self._policy.reset_cell_state()
        lines = source.splitlines()
        compiled = self._compile(source, filename)
        if isinstance(compiled, dict):
            return compiled
        body, trailing = compiled
        value_repr: str | None = None
        error: str | None = None
        error_type: str | None = None
        started = time.perf_counter()
        try:
            exec(body, self.namespace)
            if trailing is not None:
                value = eval(trailing, self.namespace)
                if value is not None:
                    value_repr = truncate_middle(repr(value), self.max_output_chars)
        except _FinalSignal:
            pass
        except BaseException as caught:  # user code may raise anything, SystemExit included
            error_type = type(caught).__name__
            error = _describe_runtime_error(caught, filename, lines)
        duration = time.perf_counter() - started - self.callback_seconds
        return self._payload(value=value_repr, error=error, error_type=error_type, duration=max(duration, 0.0))

    def _payload(self, **fields: Any) -> dict[str, Any]:
        return {
            "op": RESULT,
            "stdout": self._output.getvalue(),
            "output_chars": self._output.total,
            "final": self._final,
            "variables": self.variables(),
            **fields,
        }

    def _compile(self, source: str, filename: str) -> tuple[Any, Any] | dict[str, Any]:
        try:
            return self._compile_parts(source, filename)
        except RecursionError:
            # (A MemoryError here means the namespace itself is full: it reaches the worker,
            # which exits so the host restarts it.)
            message = "RecursionError: the cell is too deeply nested to compile. Nothing in this cell ran."
            return self._payload(value=None, error=message, error_type="RecursionError", duration=0.0)

    def _compile_parts(self, source: str, filename: str) -> tuple[Any, Any] | dict[str, Any]:
        try:
            tree = ast.parse(source, filename=filename)
        except SyntaxError as error:
            return self._payload(
                value=None, error=_describe_syntax_error(error), error_type="SyntaxError", duration=0.0
            )
        if self.restricted:
            tree = ast.fix_missing_locations(_AugmentedAssignRewriter().visit(tree))
        trailing_node: ast.Expression | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not _calls_print(tree.body[-1]):
            last = tree.body.pop()
            assert isinstance(last, ast.Expr)
            trailing_node = ast.Expression(body=last.value)
            ast.copy_location(trailing_node, last)
        if not self.restricted:
            try:
                body = compile(tree, filename, "exec")
                trailing = compile(trailing_node, filename, "eval") if trailing_node else None
            except (SyntaxError, ValueError) as error:
                return self._payload(value=None, error=str(error), error_type="SyntaxError", duration=0.0)
            return body, trailing
        from RestrictedPython.compile import compile_restricted_eval, compile_restricted_exec

        problems: list[str] = []
        body_result = compile_restricted_exec(tree, filename=filename)
        problems.extend(body_result.errors)
        trailing = None
        if trailing_node is not None:
            trailing_result = compile_restricted_eval(trailing_node, filename=filename)
            problems.extend(trailing_result.errors)
            trailing = trailing_result.code
        if problems:
            message = "Refused before running (nothing in this cell ran):\n" + "\n".join(problems)
            return self._payload(value=None, error=message, error_type="PolicyError", duration=0.0)
        return body_result.code, trailing


def _describe_syntax_error(error: SyntaxError) -> str:
    where = f" (line {error.lineno})" if error.lineno else ""
    text = f"\n    {error.text.strip()}" if error.text else ""
    return f"SyntaxError: {error.msg}{where}{text}\nNothing in this cell ran."


def _describe_runtime_error(error: BaseException, filename: str, lines: list[str]) -> str:
    frames: list[str] = []
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            lineno = tb.tb_lineno
            source = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
            where = "" if code.co_name == "<module>" else f", in {code.co_name}"
            frames.append(f"  line {lineno}{where}: {source}")
        tb = tb.tb_next
    if len(frames) > _MAX_TRACEBACK_FRAMES:
        frames = [*frames[:2], "  ...", *frames[-(_MAX_TRACEBACK_FRAMES - 2) :]]
    try:
        message = str(error)
    except Exception:
        message = "<unprintable message>"
    message = truncate_middle(message, _MAX_ERROR_MESSAGE)
    header = "Traceback (most recent call last):\n" if frames else ""
    body = "\n".join(frames) + "\n" if frames else ""
    summary = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return f"{header}{body}{summary}"
