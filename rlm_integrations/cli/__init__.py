"""The `rlm` command line. `main(argv)` returns an exit code; `run()` is the console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main", "run"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rlm` with `argv` (default: the process arguments) and return its exit code."""
    from rlm_integrations.cli.app import entry

    return entry(list(argv) if argv is not None else sys.argv[1:])


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
