"""The trainers as one Python call (what the study runner uses): ``train("sft" | "dpo", ...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clinalign.errors import ConfigError
from clinalign.train.config import TrainConfig, build_config, prefix_cache_problem


def run(cfg: TrainConfig) -> Path:
    """Run the recipe the config names; returns ``OUT/final``."""
    _check_prefix_cache(cfg)
    if cfg.stage == "sft":
        from clinalign.train.sft import run as recipe
    else:
        from clinalign.train.dpo import run as recipe
    return recipe(cfg)


def train(stage: str, *, model: str, data: str | Path, out: str | Path, settings: dict[str, Any] | None = None,
          seed: int = 0, resume: bool = False, init_from: str | Path | None = None,
          progress: bool = False) -> Path:
    values = {**(settings or {}), "stage": stage, "model": str(model), "data": str(data), "out": str(out),
              "seed": seed, "resume": resume, "progress": progress,
              "init_from": str(init_from) if init_from else None}
    return run(build_config(None, values=values))


def _check_prefix_cache(cfg: TrainConfig) -> None:
    """``prefix_cache`` against the model's layer count, before the recipe writes anything to OUT
    (an ``init_from`` adapter brings its own layers: the recipe judges those on the loaded model)."""
    if not (cfg.prefix_cache and cfg.lora_layers and cfg.init_from is None):
        return
    from transformers import AutoConfig

    from clinalign.models.loading import resolve_model_path

    path = resolve_model_path(cfg.model)
    if not (Path(path) / "config.json").is_file():  # an adapter directory: judged once loaded
        return
    n_layers = AutoConfig.from_pretrained(path).num_hidden_layers
    problem = prefix_cache_problem(cfg, frozen=max(0, n_layers - cfg.lora_layers))
    if problem:
        raise ConfigError(problem)
