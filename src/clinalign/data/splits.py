"""Seeded train/val/test splits, stratified by the task's label where it has one."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from clinalign.errors import ConfigError
from clinalign.tasks.base import Task


def _quotas(sizes: list[int], frac: float) -> list[int]:
    """Per-stratum counts adding up to round(total * frac): each stratum's share rounded down, the
    rest to the largest fractional parts (largest-remainder method), so many small strata cannot
    round a whole split away (8 labels x 5 records with val=0.1 must still give 4 val records)."""
    exact = [n * frac for n in sizes]
    out = [int(x) for x in exact]
    order = sorted(range(len(sizes)), key=lambda i: (out[i] - exact[i], i))
    for i in order[: max(0, round(sum(sizes) * frac) - sum(out))]:
        out[i] += 1
    return out


def split_records(
    task: Task, records: Sequence[Any], val: float = 0.1, test: float = 0.2, seed: int = 0
) -> dict[str, list[Any]]:
    """Split into train/val/test. Within each stratum the records are shuffled with the seed and cut
    by the fractions (rounded), so every label keeps its share in every split."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"split fractions must satisfy 0 <= val, test and val + test < 1 (got {val}, {test})")
    rng = random.Random(seed)
    strata: dict[str | None, list[Any]] = defaultdict(list)
    for rec in records:
        strata[task.stratum(rec)].append(rec)
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    keys = sorted(strata, key=lambda k: (k is None, k or ""))
    sizes = [len(strata[k]) for k in keys]
    for key, n_test, n_val in zip(keys, _quotas(sizes, test), _quotas(sizes, val), strict=True):
        group = list(strata[key])
        rng.shuffle(group)
        n_val = min(n_val, len(group) - n_test)
        out["test"].extend(group[:n_test])
        out["val"].extend(group[n_test : n_test + n_val])
        out["train"].extend(group[n_test + n_val :])
    for part in out.values():  # interleave strata so a file's head is not one label
        rng.shuffle(part)
    return out


def kfold_split(task: Task, records: Sequence[Any], k: int, fold: int, val: float = 0.1,
                seed: int = 0) -> dict[str, list[Any]]:
    """Fold ``fold`` of a stratified k-fold split: every record is in exactly one fold's test set;
    a ``val`` share of the rest is held out for validation."""
    if not 0 <= fold < k:
        raise ConfigError(f"fold {fold} out of range for {k} folds")
    rng = random.Random(seed)
    strata: dict[str | None, list[Any]] = defaultdict(list)
    for rec in records:
        strata[task.stratum(rec)].append(rec)
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    folded = []
    for key in sorted(strata, key=lambda x: (x is None, x or "")):
        group = list(strata[key])
        rng.shuffle(group)
        folded.append((group[fold::k], [r for i, r in enumerate(group) if i % k != fold]))
    for (test, rest), n_val in zip(folded, _quotas([len(r) for _, r in folded], val), strict=True):
        out["test"].extend(test)
        out["val"].extend(rest[:n_val])
        out["train"].extend(rest[n_val:])
    for part in out.values():
        rng.shuffle(part)
    return out
