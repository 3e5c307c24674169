"""A long-context benchmark suite generated offline from seeds (RULER- and OOLONG-style families).

See `benchmarks/README.md` ("longctx.py") for the families, sizes, splits and scoring.
"""

from longctx_suite.tasks import FAMILIES, SIZES, SPLIT_BASE, Task, make_task, parse_size, seed_for

__all__ = ["FAMILIES", "SIZES", "SPLIT_BASE", "Task", "make_task", "parse_size", "seed_for"]
