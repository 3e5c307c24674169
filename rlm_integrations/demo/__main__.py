"""`python -m rlm_integrations.demo`: the same as `rlm demo`.

Kept apart from the demo's data (`rlm_integrations.demo`), which the CLI imports, so the
CLI and the demo do not import each other.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rlm_integrations.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rlm demo`` with these arguments (default: the command line's)."""
    return cli_main(["demo", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
