"""Reading the root model's reply: code blocks, and FINAL(...) / FINAL_VAR(name) written as text."""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass

__all__ = ["ParsedReply", "is_typed_answer", "names_variable", "parse_reply"]

# Every fence is matched (whatever its language), so a ```bash or ```text block keeps the
# fences paired; only the code languages below are run.
_FENCE = re.compile(r"```[ \t]*([^\s`]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGUAGES = frozenset({"", "repl", "python", "python3", "py"})
# A textual FINAL counts only at the start of a line (markdown emphasis allowed), as in the
# paper's form: a mention in a sentence ("then I will call FINAL(answer)") is not an answer.
_LINE_START = r"^[ \t>*_`]*"
_FINAL_VAR = re.compile(
    _LINE_START + r"FINAL_VAR\(\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?\s*\)", re.MULTILINE | re.IGNORECASE
)
_FINAL = re.compile(_LINE_START + r"FINAL\(", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class ParsedReply:
    """What a reply asks for.

    Attributes:
        code_blocks: code to run, in order (```repl, ```python or a bare fence).
        final_text: the answer written as ``FINAL(...)`` outside code, if any (a literal
            is evaluated: ``FINAL("Paris")`` gives ``Paris``).
        final_variable: the name written as ``FINAL_VAR(name)`` outside code, if any.
    """

    code_blocks: list[str]
    final_text: object | None = None
    final_variable: str | None = None

    @property
    def has_final(self) -> bool:
        """True if the text itself submits an answer."""
        return self.final_text is not None or self.final_variable is not None


def parse_reply(text: str) -> ParsedReply:
    """Split a reply into code blocks and a textual FINAL, if any."""
    blocks: list[str] = []
    prose_parts: list[str] = []
    position = 0
    for match in _FENCE.finditer(text):
        prose_parts.append(text[position : match.start()])
        position = match.end()
        code = match.group(2).replace("\r\n", "\n").strip("\n")
        if match.group(1).lower() in _CODE_LANGUAGES and code.strip():
            blocks.append(code)
    prose_parts.append(text[position:])
    prose = "\n".join(prose_parts)
    variable_match = _FINAL_VAR.search(prose)
    if variable_match:
        return ParsedReply(blocks, None, variable_match.group(1))
    final = _final_argument(prose)
    return ParsedReply(blocks, final, None)


def _final_argument(prose: str) -> object | None:
    match = _FINAL.search(prose)
    if match is None:
        return None
    start = match.end()
    depth = 1
    quote: str | None = None
    index = start
    while index < len(prose):
        char = prose[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                break
        index += 1
    raw = prose[start:index].strip()
    if not raw:
        return None
    return _literal_argument(raw)


def _literal_argument(raw: str) -> object:
    """Read `raw` as the argument list of a call: ``"x",`` is "x" (not a tuple); anything else stays text."""
    try:
        call = ast.parse(f"f({raw})", mode="eval").body
        if isinstance(call, ast.Call) and len(call.args) == 1 and not call.keywords:
            return ast.literal_eval(call.args[0])
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def is_typed_answer(code: str | None) -> bool:
    """Whether an answer was typed in rather than computed.

    True for an answer given as text (`code` None) and for a cell that is only ``FINAL(<literal>)``
    (or ``FINAL(name=<literal>, ...)``, as the DSPy face submits several outputs).
    """
    if code is None:
        return True
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    if len(body) != 1 or not isinstance(body[0], ast.Expr) or not isinstance(body[0].value, ast.Call):
        return False
    call = body[0].value
    if not isinstance(call.func, ast.Name) or call.func.id != "FINAL":
        return False
    if any(keyword.arg is None for keyword in call.keywords):  # FINAL(**outputs) is computed
        return False
    try:
        for argument in [*call.args, *(keyword.value for keyword in call.keywords)]:
            ast.literal_eval(argument)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def names_variable(text: object) -> bool:
    """Whether a textual ``FINAL(...)``'s argument is a bare name (``FINAL(groups)``): the model may mean a variable."""
    return isinstance(text, str) and text.isidentifier() and not keyword.iskeyword(text)
