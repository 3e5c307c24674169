"""Task records, the family registry, sizes and the train / held-out seed splits.

A task is fully determined by (family, size, split, index): its seed is the split's base
plus the index, and every random choice comes from a generator seeded with all four, so
the same task is rebuilt byte for byte anywhere. Train seeds start at 1,000 and held-out
seeds at 500,000 (indices below 100,000 never overlap), and the two splits also use
disjoint word pools and differently worded templates (see `_text` and `_messages`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from longctx_suite import _needles, _records
from longctx_suite._draft import Draft
from longctx_suite._text import SPLITS
from longctx_suite.scoring import score

__all__ = ["FAMILIES", "SIZES", "SPLIT_BASE", "Task", "make_task", "parse_size", "seed_for"]

FAMILIES: dict[str, Callable[[random.Random, str, int], Draft]] = {
    "single_needle": _needles.single_needle,
    "multikey_needle": _needles.multikey_needle,
    "multi_value": _needles.multi_value,
    "variable_tracking": _needles.variable_tracking,
    "count_records": _records.count_records,
    "count_reading": _records.count_reading,
    "pairs": _records.pairs,
}
"""Family name -> generator ``(rng, split, chars) -> Draft``."""

SIZES = {"8K": 8_000, "32K": 32_000, "128K": 128_000, "512K": 512_000, "1M": 1_000_000, "2M": 2_000_000}
"""Named sizes in characters: 8K fits the 32K-token window easily, 128K and up do not."""

SPLIT_BASE = {"train": 1_000, "heldout": 500_000}
_MAX_INDEX = 100_000


def seed_for(split: str, index: int) -> int:
    """The seed of task `index` of a split (train and held-out seeds never overlap)."""
    if split not in SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}: use {' or '.join(SPLITS)}")
    if not 0 <= index < _MAX_INDEX:
        raise ValueError(f"task index must be in [0, {_MAX_INDEX}), got {index}")
    return SPLIT_BASE[split] + index


def parse_size(label: str) -> int:
    """Characters for a size label: a name from `SIZES` or a number with an optional K/M suffix."""
    text = label.strip().upper()
    if text in SIZES:
        return SIZES[text]
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    digits = text[:-1] if factor > 1 else text
    try:
        value = int(float(digits) * factor)
    except ValueError:
        raise ValueError(f"bad size {label!r}: use one of {', '.join(SIZES)} or a number like 64K") from None
    if value < 2_000:
        raise ValueError(f"size {label!r} is too small: at least 2K characters")
    return value


@dataclass(frozen=True)
class Task:
    """One question over one generated context, with its gold answer and scorer."""

    family: str
    size: str
    chars: int
    split: str
    index: int
    seed: int
    context: str = field(repr=False)
    question: str
    gold: Any
    scorer: str
    pattern: str | None
    reference_code: str = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def task_id(self) -> str:
        """A stable name: ``family/size/split/index``."""
        return f"{self.family}/{self.size}/{self.split}/{self.index}"

    def score(self, answer: Any) -> float:
        """The answer's score in [0, 1] (see `longctx_suite.scoring`)."""
        return score(self.scorer, answer, self.gold, self.pattern)

    def summary(self) -> dict[str, Any]:
        """Everything but the context, the code and the bulky metadata, for JSON results."""
        return {
            "task_id": self.task_id,
            "family": self.family,
            "size": self.size,
            "chars": self.chars,
            "split": self.split,
            "index": self.index,
            "seed": self.seed,
            "question": self.question,
            "gold": self.gold,
            "scorer": self.scorer,
        }


def make_task(family: str, size: str, split: str, index: int) -> Task:
    """Build task `index` of a family, size and split (deterministic).

    Raises:
        ValueError: an unknown family, split or size, or an index out of range.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: use one of {', '.join(FAMILIES)}")
    seed = seed_for(split, index)
    chars = parse_size(size)
    rng = random.Random(f"longctx/{family}/{split}/{seed}/{chars}")
    draft = FAMILIES[family](rng, split, chars)
    if len(draft.context) != chars:
        raise AssertionError(f"{family} made {len(draft.context)} characters, not {chars}")
    return Task(
        family=family,
        size=size.strip().upper(),
        chars=chars,
        split=split,
        index=index,
        seed=seed,
        context=draft.context,
        question=draft.question,
        gold=draft.gold,
        scorer=draft.scorer,
        pattern=draft.pattern,
        reference_code=draft.reference_code,
        meta=draft.meta,
    )
