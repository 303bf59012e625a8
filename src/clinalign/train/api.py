"""The trainers as one Python call (what the study runner uses): ``train("sft" | "dpo", ...)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinalign.train import distributed, preempt
from clinalign.train.config import TrainConfig, build_config, lr_warning

if TYPE_CHECKING:
    from clinalign.train.loop import Validation


def run(cfg: TrainConfig, validation: Validation | None = None) -> Path:
    """Run the recipe the config names; returns ``OUT/final``. A learning rate far outside the usual
    range is one warning line first; SIGTERM at any phase is a resumable stop (train/preempt.py)."""
    if cfg.stage == "sft":
        from clinalign.train.sft import run as recipe
    else:
        from clinalign.train.dpo import run as recipe
    with preempt.watch(), distributed.held(cfg.parallel, cfg.backend, cfg.device):
        warning = lr_warning(cfg)
        if warning and distributed.rank_world()[0] == 0:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        return recipe(cfg, validation)


def train(stage: str, *, model: str, data: str | Path, out: str | Path, settings: dict[str, Any] | None = None,
          seed: int = 0, resume: bool = False, init_from: str | Path | None = None,
          progress: bool = False, validation: Validation | None = None) -> Path:
    """One training run. ``validation`` (train/loop.Validation) adds the caller's held-out scores to the
    run's evaluations: the study passes the task's metric on the validation split, computed on the live
    model, so the best epoch is chosen by what the test measures (train/ itself knows no task metric)."""
    values = {**(settings or {}), "stage": stage, "model": str(model), "data": str(data), "out": str(out),
              "seed": seed, "resume": resume, "progress": progress,
              "init_from": str(init_from) if init_from else None}
    return run(build_config(None, values=values), validation)
