"""A study under ``torchrun --nproc-per-node N -m clinalign study run STUDY.yaml``: every process runs
the same recipe; training stages use all of them (the study's ``parallel``), evaluation is sharded
across them and gathered, and rank 0 alone writes files (splits, stage markers, predictions, report).

On one process (no ``WORLD_SIZE``) every helper here is a plain call, so the runner reads the same
either way. The process group and collectives are train/distributed.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from clinalign.errors import ClinalignError
from clinalign.train import distributed

T = TypeVar("T")


def world() -> int:
    return distributed.rank_world()[1]


def is_main() -> bool:
    return distributed.rank_world()[0] == 0


class MainFailed(ClinalignError):
    """What rank 0 raised in :func:`on_main`, raised on the other ranks too (so none waits forever)."""


def on_main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``fn`` on rank 0 (a write), then every rank waits for it, so what it wrote can be read. When it
    fails, every rank raises (rank 0 its own error), so a task that fails fails on all of them."""
    error: Exception | None = None
    if is_main():
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - handed to the other ranks, then re-raised
            error = e
    failed = distributed.all_gather_objects(None if error is None else str(error).replace("\n", " "))[0]
    if error is not None:
        raise error
    if failed is not None:
        raise MainFailed(failed)


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 and handed to every rank (e.g. a cache decision before rank 0 acts on it)."""
    value = fn() if is_main() else None
    return distributed.all_gather_objects(value)[0]


def sharded(fn: Callable[[list[Any]], dict[str, list[Any]]], records: Sequence[Any]) -> dict[str, list[Any]]:
    """``fn(records)`` -> {system: one row per record}, with rank r computing records r, r+N, ... and
    every rank receiving all rows in the original order (the same rows as one process computes)."""
    rank, n = distributed.rank_world() if distributed.active() else (0, 1)
    if n == 1:
        return fn(list(records))
    mine = list(records[rank::n])
    parts = distributed.all_gather_objects(fn(mine) if mine else {})
    systems = next(p for p in parts if p).keys()
    return {s: [parts[i % n][s][i // n] for i in range(len(records))] for s in systems}
