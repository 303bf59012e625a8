"""Progress of anything that can take minutes (training steps, the DPO reference pass, label scoring,
batched generation, on-policy sampling), shown one way everywhere: done/total, elapsed time and ETA.

On a terminal it is a rich bar; in a pipe or a log file a bar redrawn with carriage returns is
mangled, so there it is a plain line on the first update, then at most every ``every_s`` seconds,
and at the end. Progress goes to stderr (stdout is for results), from the first process of a
``torchrun`` launch only. Nested progress (generation inside a training step's validation) joins the
bar already on screen, as rich allows one live display at a time.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_live: list[Any] = []  # the one rich Progress on screen, while any bar is


def clock(seconds: float) -> str:
    """``h:mm:ss`` (``-:--:--`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Tracker:
    """One piece of work of ``total`` units; :meth:`update` says how far it is."""

    def __init__(self, description: str, total: int, completed: int, every_s: float, bar: Any) -> None:
        self.description, self.total, self.completed = description, total, completed
        self.every_s, self.bar = every_s, bar
        self.start, self.start_done, self.last = time.monotonic(), completed, -math.inf
        self.task = bar.add_task(description, total=total, completed=completed, stats="") if bar else None

    def update(self, completed: int | None = None, *, advance: int = 0, total: int | None = None,
               stats: str = "") -> None:
        """Set (``completed``) or advance the units done; a new ``total`` (early stopping) or ``stats``
        (the loss) may come with it. A change of the total alone shows nothing new."""
        moved = completed is not None or advance != 0
        self.completed = (self.completed if completed is None else completed) + advance
        self.total = self.total if total is None else total
        if self.bar is not None:
            self.bar.update(self.task, completed=self.completed, total=self.total, stats=stats)
            return
        now = time.monotonic()
        if moved and (now - self.last >= self.every_s or self.completed >= self.total):
            self.last = now
            print(self.line(now, stats), file=sys.stderr, flush=True)

    def line(self, now: float, stats: str = "") -> str:
        """``DESCRIPTION done/total  elapsed h:mm:ss  ETA h:mm:ss  stats``."""
        elapsed = now - self.start
        done = self.completed - self.start_done
        eta = (self.total - self.completed) * elapsed / done if done > 0 else math.inf
        return (f"{self.description} {self.completed}/{self.total}  elapsed {clock(elapsed)}  "
                f"ETA {clock(eta)}  {stats}").rstrip()


class _Off(Tracker):
    def __init__(self) -> None:
        self.completed = self.total = 0

    def update(self, completed: int | None = None, *, advance: int = 0, total: int | None = None,
               stats: str = "") -> None:
        return None


def _rich() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    # on a narrow terminal the stats (the loss) give way; the bar, done/total and the times stay
    stats = Column(ratio=1, min_width=0, no_wrap=True, overflow="ellipsis")
    return Progress(TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                    BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), TextColumn("{task.fields[stats]}", table_column=stats),
                    console=Console(stderr=True), transient=False, expand=True)


@contextmanager
def progress(description: str, total: int, *, completed: int = 0, enabled: bool = True,
             every_s: float = 10.0) -> Iterator[Tracker]:
    """A :class:`Tracker` for ``total`` units of work, shown while the block runs (nothing when not
    ``enabled`` or on a process other than the first)."""
    if not enabled or int(os.environ.get("RANK", "0")) != 0:
        yield _Off()
        return
    if not sys.stderr.isatty():
        yield Tracker(description, total, completed, every_s, None)
        return
    outer = not _live
    if outer:
        _live.append(_rich())
        _live[0].start()
    bar = _live[0]
    tracker = Tracker(description, total, completed, every_s, bar)
    try:
        yield tracker
    finally:
        if outer:
            bar.stop()
            _live.clear()
        else:
            bar.remove_task(tracker.task)
