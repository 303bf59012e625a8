"""Training config: one flat pydantic model that names every choice of an SFT or DPO run.

Config is data: a YAML file gives the values, ``key=value`` overrides change one key, and the config a
run actually used is saved as ``OUT/config.yaml``. Unknown keys are errors (``extra="forbid"``), so a
typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError, model_validator

from clinalign.errors import ConfigError
from clinalign.models.device import Device, DType
from clinalign.train.losses import loss_spec

#: Defaults measured on small clinical datasets (a few hundred records; see benchmarks/RESULTS.md,
#: "SFT that fits"): one epoch of LoRA SFT at 5e-4 left the model at chance on its own training set
#: (triage decision tokens 1.92 nats, train accuracy 0.375), so SFT runs several epochs at a LoRA-sized
#: step. DPO starts from that SFT model and moves it with a small step (2e-4 swung the label prior).
DEFAULT_EPOCHS = {"sft": 3, "dpo": 1}
DEFAULT_LR = {("sft", True): 1e-3, ("sft", False): 2e-5, ("dpo", True): 5e-5, ("dpo", False): 1e-6}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["sft", "dpo"] = "sft"
    #: a local Hugging Face model directory (or "default", the embedded model)
    model: str = "default"
    #: JSONL/CSV: prompt/completion (SFT) or prompt/chosen/rejected (DPO); with ``task``, task records
    data: str | None = None
    #: held-out examples in the same format as ``data``: evaluated every ``eval_every`` steps (default:
    #: each epoch) for validation loss (and DPO reward accuracy/margin); guards against overfitting
    val_data: str | None = None
    eval_every: int | None = None
    #: stop after this many evaluations without improvement of ``early_stopping_metric``
    early_stopping_patience: int | None = None
    #: val_loss (lower is better) or, for DPO, val_reward_accuracy / val_reward_margin (higher is better)
    early_stopping_metric: str = "val_loss"
    #: with validation: ``final/`` holds the best evaluated weights (also kept in ``best/``)
    restore_best: bool = True
    #: task id or task YAML: ``data`` then holds that task's records and its prompt/answer/pair builders apply
    task: str | None = None
    #: rejected-answer strategy for task records (a builder name, a comma list, or "all")
    pairs: str | None = None
    out: str | None = None
    #: a previous run's ``final/`` (peft adapter dir: keep training that adapter; full model dir: start from it)
    init_from: str | None = None

    #: None = the stage's default (DEFAULT_EPOCHS); ``max_steps`` overrides it, as in transformers/TRL
    epochs: int | None = None
    #: optimizer steps to run, across epochs if need be (the data order continues into the next epoch)
    max_steps: int | None = None
    #: examples per process per micro-batch; the global batch is batch_size * processes * grad_accum
    batch_size: int = 8
    grad_accum: int = 1
    #: None = the default for the stage and method (DEFAULT_LR: LoRA needs a far larger step than full weights)
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    #: models/device.py: auto = CUDA when present; bfloat16 on a GPU that has it, else float32
    dtype: DType = "auto"
    device: Device = "auto"
    #: recompute each decoder layer's activations in the backward pass (HF's activation
    #: checkpointing, use_reentrant=False):
    #: less memory for long prompts, about a third more compute, the same gradients
    gradient_checkpointing: bool = False
    #: QLoRA: the frozen base in 4-bit NF4 (bitsandbytes; CUDA only, `pip install 'clinalign[qlora]'`)
    load_in_4bit: bool = False

    lora: bool = True
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    #: adapt only the last N decoder layers: backpropagation then stops there, which makes CPU
    #: training several times cheaper (None = every layer)
    lora_layers: int | None = None
    #: module names to adapt; "all-linear" is peft's every linear layer but the output head
    lora_target_modules: list[str] | str = "all-linear"
    #: with lora_layers: run the frozen leading layers once per example and reuse their output in every
    #: epoch and the reference pass (train/prefix.py); host memory [tokens, hidden] per example; not FSDP2
    prefix_cache: bool = False

    max_length: int = 1024
    #: over-long prompts: "left" drops the prompt's first tokens (answers kept whole), "drop" skips the example
    truncation: Literal["left", "drop"] = "left"

    # DPO
    beta: float = 0.1
    loss: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float | None = None
    #: SimPO's target reward margin gamma (loss: simpo)
    simpo_gamma: float = 0.5
    #: KTO's lambda_D / lambda_U (loss: kto); raise the scarcer side's weight when labels are unbalanced
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    #: reference log-probs computed once before training (and cached) instead of a second forward per step
    precompute_ref: bool = True

    parallel: Literal["none", "ddp", "fsdp2"] = "none"
    backend: Literal["auto", "nccl", "gloo"] = "auto"

    save_every: int | None = None
    #: batches with a non-finite loss or gradient that may be skipped (no update) before training stops
    skip_nonfinite: NonNegativeInt = 0
    log_every: int = 1
    resume: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.stage]
        if self.lr is None:
            self.lr = DEFAULT_LR[(self.stage, self.lora)]
        try:
            loss_spec(self.loss, key="loss")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        for name in ("epochs", "batch_size", "grad_accum", "lora_rank", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.save_every is not None and self.save_every < 1:
            raise ValueError("save_every must be >= 1")
        if self.beta <= 0:
            raise ValueError("beta must be > 0")
        if self.load_in_4bit and (not self.lora or self.parallel == "fsdp2"):
            raise ValueError("load_in_4bit (QLoRA) trains LoRA adapters on a frozen 4-bit base: it needs "
                             "lora: true and parallel none or ddp")
        if self.prefix_cache and (not self.lora or self.parallel == "fsdp2"):
            raise ValueError("prefix_cache needs LoRA with lora_layers (frozen leading layers) and "
                             "parallel none or ddp")
        return self

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_config(
    path: str | Path | None, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> TrainConfig:
    """YAML file < ``key=value`` overrides < explicit ``values`` (the CLI's flags), then validated."""
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value")
    raw.update(_parse_overrides(overrides or []))
    raw.update({k: v for k, v in (values or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        msg = "unknown config key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {key}: {msg}" if key != "config" else f"{where}: {msg}") from None
