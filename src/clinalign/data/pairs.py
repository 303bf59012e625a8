"""SFT examples and DPO preference pairs from task records, in the common shapes other tools use:
``{"prompt", "completion"}`` and ``{"prompt", "chosen", "rejected"}`` (TRL's standard format)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from clinalign.errors import ConfigError
from clinalign.tasks.base import Task

ALL_STRATEGIES = "all"


def sft_examples(task: Task, records: Sequence[Any]) -> list[dict[str, str]]:
    return [{"id": r.id, "prompt": task.prompt(r), "completion": task.answer(r)} for r in records]


def preference_pairs(
    task: Task, records: Sequence[Any], strategy: str | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """One pair per record from the named rejected-answer builder (the task's default when None), or
    one pair per record per builder with ``strategy="all"``. Deterministic for a seed."""
    builders = task.rejected_builders
    if strategy in (None, ""):
        names = [task.default_strategy]
    elif strategy == ALL_STRATEGIES:
        names = list(builders)
    else:
        names = [s.strip() for s in strategy.split(",")]
        unknown = [s for s in names if s not in builders]
        if unknown:
            raise ConfigError(
                f"unknown strategy {unknown[0]!r} for task {task.id}: choose from {', '.join(builders)} or 'all'"
            )
    rng = random.Random(seed)
    pairs = []
    for rec in records:
        chosen = task.answer(rec)
        for name in names:
            rejected = builders[name](rec, rng)
            if rejected == chosen:  # a builder may have nothing to change for this record
                continue
            pairs.append(
                {"id": f"{rec.id}:{name}", "prompt": task.prompt(rec), "chosen": chosen,
                 "rejected": rejected, "strategy": name}
            )
    return pairs
