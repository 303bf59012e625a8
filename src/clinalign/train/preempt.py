"""SIGTERM at any phase of a training run ends in exit 75 (``RESUMABLE``) and one line saying what was
kept, so a batch system requeues the job and ``--resume`` continues it.

SIGTERM is what Slurm sends before preemption or the time limit; ``scripts/slurm_dpo.sbatch`` passes
it to ``torchrun``, which passes it to every worker. What stopping costs depends on the phase:

- **Before the optimizer steps** (reading and checking the data and config, loading the model, the
  DPO reference pass; the frozen prefix is filled as batches first pass through it): nothing that a
  rerun does not redo. SIGTERM stops the process where it is (the handler raises) and ``--resume``
  starts that phase again. The reference pass is not checkpointed: an interrupted one restarts from
  its first pair; a finished one is in ``OUT/ref_logps/`` and is read back, not recomputed.
- **During the optimizer steps** (validation and checkpoint writes included, see :func:`deferred`):
  SIGTERM only sets a flag; the loop finishes its step, the processes agree on the flag in the step's
  all-reduce, and a checkpoint is written; ``--resume`` continues bit-identically.
- **While ``final/`` is written**: the write completes (it is atomic), then the run exits 75 all the
  same; ``--resume`` has no step left and writes ``final/`` again.

Under ``torchrun`` a process can be blocked in a collective when another has already stopped; the
error that breaks the collective is then reported as the same resumable stop (:func:`watch`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from clinalign.errors import RESUMABLE, TrainingStopped

NOTHING_WRITTEN = "nothing was written"


@dataclass
class _Watch:
    phase: str = "the checks before training (data, config, model)"
    kept: str = NOTHING_WRITTEN
    deferred: bool = False
    received: threading.Event = field(default_factory=threading.Event)

    def stopped(self) -> TrainingStopped:
        return TrainingStopped(f"SIGTERM during {self.phase}: stopped; {self.kept}. Run the same command with "
                               f"--resume to continue", exit_code=RESUMABLE)


_watch: _Watch | None = None


@contextmanager
def watch() -> Iterator[None]:
    """Turn SIGTERM into a resumable stop for the duration of a training run (the previous handler is
    restored afterwards). Signals reach only the main thread: elsewhere, and inside another watch,
    this does nothing."""
    global _watch
    if _watch is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    w = _watch = _Watch()

    def on_sigterm(*_: object) -> None:
        w.received.set()
        if not w.deferred:
            raise w.stopped()

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except TrainingStopped:
        raise
    except Exception as e:  # e.g. a collective broken because another process stopped first
        if w.received.is_set():
            raise w.stopped() from e
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        _watch = None


def phase(name: str, kept: str = NOTHING_WRITTEN) -> None:
    """Name the phase the run is in, and what a stop now keeps (for the message)."""
    if _watch is not None:
        _watch.phase, _watch.kept = name, kept


@contextmanager
def deferred(name: str) -> Iterator[threading.Event]:
    """For the duration, SIGTERM only sets the event yielded: the caller stops at its next safe point
    (the training loop: after the step, with a checkpoint). Installs the watch itself when none is up."""
    with watch():
        w = _watch
        if w is None:  # not the main thread: no signal can arrive
            yield threading.Event()
            return
        before = (w.phase, w.kept, w.deferred)
        w.phase, w.kept, w.deferred = name, "--resume continues from the newest intact checkpoint", True
        try:
            yield w.received
        finally:
            w.phase, w.kept, w.deferred = before
