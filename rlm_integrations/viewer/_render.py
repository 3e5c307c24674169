"""Assemble the viewer page: the template, stylesheet and script (package data) and the data.

The page is one file with nothing to fetch. Its Content-Security-Policy allows exactly the
one inline script and the one inline stylesheet (by hash), and no network at all, so even
a trajectory crafted to break out of the data block could neither run code nor send
anything anywhere. The data itself is JSON in a `<script type="application/json">`
block with `<`, `>` and `&` escaped, and the script only ever writes it as text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["iframe", "page"]

_PLACEHOLDER = re.compile(r"__(CSP|VERSION|TITLE|STYLE|SCRIPT|DATA)__")
_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


@cache
def _asset(name: str) -> str:
    return resources.files("rlm_integrations.viewer").joinpath("assets", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def embed_json(data: Any) -> str:
    """`data` as JSON that is safe inside a `<script>` element: no `<`, `>` or `&` survives."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).translate(_JSON_ESCAPES)


def page(data: dict[str, Any]) -> str:
    """The complete HTML document for the viewer data built by `build_view`."""
    from rlm_integrations import __version__

    script = _asset("viewer.js")
    style = _asset("viewer.css")
    if "</script" in script.lower() or "</style" in style.lower():  # pragma: no cover - guards our own assets
        raise RuntimeError("viewer assets must not close their own element")
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(script)}",
            f"style-src {_sha256(style)}",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    values = {
        "CSP": csp,
        "VERSION": html.escape(__version__),
        "TITLE": html.escape(str(data.get("title") or "RLM trajectory")),
        "STYLE": style,
        "SCRIPT": script,
        "DATA": embed_json(data),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _asset("viewer.html"))


def iframe(document: str, *, height: int = 640) -> str:
    """`document` inside a sandboxed `<iframe srcdoc>`: how a notebook shows it.

    The frame keeps the page's own CSS and keys away from the notebook's, and the sandbox
    (scripts only, an opaque origin) keeps the page away from the notebook.
    """
    return (
        f'<iframe srcdoc="{html.escape(document, quote=True)}" sandbox="allow-scripts" '
        f'style="width: 100%; height: {int(height)}px; border: 1px solid #d0d7de; border-radius: 6px" '
        'title="RLM trajectory"></iframe>'
    )
