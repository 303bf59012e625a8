"""Seeded train/val/test splits, stratified by the task's label where it has one, and duplicate-aware:
records that are the same input (exactly, or nearly: ``data.audit.duplicate_groups``) always land in
the same split, because real exports repeat records (one note filed under two encounters) and a copy
on each side of the split would be a test item seen in training. ``dedupe="drop"`` keeps one record
of each group instead."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


Dedupe = Literal["group", "drop"]


@dataclass
class Units:
    """Records as split units: each group's first record stands for the group (it gives the stratum)."""

    heads: list[Any]
    members: dict[int, list[Any]]  # id(head) -> the group's records
    groups: int  # groups of two or more records
    grouped: int  # records in those groups
    dropped: int  # records left out by dedupe="drop"

    def expand(self, heads: Sequence[Any]) -> list[Any]:
        return [r for h in heads for r in self.members[id(h)]]

    def summary(self) -> dict[str, int]:
        return {"duplicate_groups": self.groups, "records_in_groups": self.grouped, "dropped": self.dropped}


def units(task: Task, records: Sequence[Any], dedupe: Dedupe = "group") -> Units:
    from clinalign.data.audit import duplicate_groups

    if dedupe not in ("group", "drop"):
        raise ConfigError(f"split dedupe must be 'group' or 'drop' (got {dedupe!r})")
    groups = duplicate_groups(task, records)
    big = [g for g in groups if len(g) > 1]
    heads = [records[g[0]] for g in groups]
    keep = (lambda g: g[:1]) if dedupe == "drop" else (lambda g: g)
    members = {id(records[g[0]]): [records[i] for i in keep(g)] for g in groups}
    dropped = sum(len(g) - 1 for g in big) if dedupe == "drop" else 0
    return Units(heads, members, len(big), sum(map(len, big)), dropped)


def split_records(
    task: Task, records: Sequence[Any], val: float = 0.1, test: float = 0.2, seed: int = 0,
    dedupe: Dedupe = "group", info: dict[str, int] | None = None,
) -> dict[str, list[Any]]:
    """Split into train/val/test. Within each stratum the duplicate groups are shuffled with the seed
    and cut by the fractions (rounded), so every label keeps its share in every split and no group is
    cut in two. ``info`` (a dict), when given, receives the duplicate-group counts."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"split fractions must satisfy 0 <= val, test and val + test < 1 (got {val}, {test})")
    u = units(task, records, dedupe)
    if info is not None:
        info.update(u.summary())
    rng = random.Random(seed)
    strata: dict[str | None, list[Any]] = defaultdict(list)
    for rec in u.heads:
        strata[task.stratum(rec)].append(rec)
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    keys = sorted(strata, key=lambda k: (k is None, k or ""))
    sizes = [len(strata[k]) for k in keys]
    for key, n_test, n_val in zip(keys, _quotas(sizes, test), _quotas(sizes, val), strict=True):
        group = list(strata[key])
        rng.shuffle(group)
        n_val = min(n_val, len(group) - n_test)
        out["test"].extend(u.expand(group[:n_test]))
        out["val"].extend(u.expand(group[n_test : n_test + n_val]))
        out["train"].extend(u.expand(group[n_test + n_val :]))
    for part in out.values():  # interleave strata so a file's head is not one label
        rng.shuffle(part)
    return out


def kfold_split(task: Task, records: Sequence[Any], k: int, fold: int, val: float = 0.1,
                seed: int = 0, dedupe: Dedupe = "group", info: dict[str, int] | None = None
                ) -> dict[str, list[Any]]:
    """Fold ``fold`` of a stratified k-fold split: every record is in exactly one fold's test set;
    a ``val`` share of the rest is held out for validation. Duplicate groups stay in one fold."""
    if not 0 <= fold < k:
        raise ConfigError(f"fold {fold} out of range for {k} folds")
    u = units(task, records, dedupe)
    if info is not None:
        info.update(u.summary())
    rng = random.Random(seed)
    strata: dict[str | None, list[Any]] = defaultdict(list)
    for rec in u.heads:
        strata[task.stratum(rec)].append(rec)
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    folded = []
    for key in sorted(strata, key=lambda x: (x is None, x or "")):
        group = list(strata[key])
        rng.shuffle(group)
        folded.append((group[fold::k], [r for i, r in enumerate(group) if i % k != fold]))
    for (test, rest), n_val in zip(folded, _quotas([len(r) for _, r in folded], val), strict=True):
        out["test"].extend(u.expand(test))
        out["val"].extend(u.expand(rest[:n_val]))
        out["train"].extend(u.expand(rest[n_val:]))
    for part in out.values():
        rng.shuffle(part)
    return out
