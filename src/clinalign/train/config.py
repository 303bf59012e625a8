"""Training config: one pydantic model that names every choice of an SFT or DPO run.

Config is data: a YAML file gives the values, ``key=value`` overrides change one key, and the config a
run actually used is saved as ``OUT/config.yaml``. Unknown keys are errors (``extra="forbid"``), so a
typo never silently falls back to a default. The keys are flat but for the preference loss, whose
knobs differ from loss to loss: ``loss: {type: simpo, gamma: 0.5}`` (train/losses.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    field_serializer,
    field_validator,
    model_validator,
)

from clinalign.config import apply_overrides, read_yaml, validate
from clinalign.errors import ConfigError
from clinalign.models.device import Device, DType
from clinalign.train.losses import Loss, Sigmoid, loss_class

#: Defaults measured on small clinical datasets (a few hundred records; see benchmarks/RESULTS.md,
#: "SFT that fits"): one epoch of LoRA SFT at 5e-4 left the model at chance on its own training set
#: (triage decision tokens 1.92 nats, train accuracy 0.375), so SFT runs several epochs at a LoRA-sized
#: step. DPO starts from that SFT model and moves it with a small step (2e-4 swung the label prior).
DEFAULT_EPOCHS = {"sft": 3, "dpo": 1}
DEFAULT_LR = {("sft", True): 1e-3, ("sft", False): 2e-5, ("dpo", True): 5e-5, ("dpo", False): 1e-6}
#: the learning rates published recipes and this project's runs use, per (stage, LoRA): LoRA SFT 1e-4
#: to 2e-4 (QLoRA) up to 2e-3 (the demo); full SFT around 2e-5; DPO an order of magnitude below SFT
#: (TRL's 1e-6 and Zephyr's 5e-7 for full weights, 5e-6 to 5e-4 with LoRA). A run set 10x beyond either
#: end gets a warning at load (``lr_warning``); divergence itself is caught while training (divergence.py).
USUAL_LR = {("sft", True): (1e-5, 2e-3), ("sft", False): (1e-6, 1e-4), ("dpo", True): (1e-6, 1e-3),
            ("dpo", False): (1e-7, 2e-5)}
#: the keys that shape a LoRA adapter: a stage continuing an adapter (``init_from``) takes them from it
ADAPTER_SHAPE = ("lora_rank", "lora_alpha", "lora_layers", "lora_target_modules")


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
    #: the validation score that picks the best weights and stops early, in the direction its validation
    #: declares: val_loss (lower is better), for DPO val_reward_accuracy / val_reward_margin (higher);
    #: None = the task metric when a study validates on one (``val_<metric>``), else val_loss
    early_stopping_metric: str | None = None
    #: with validation: ``final/`` holds the best evaluated weights (also kept in ``best/``)
    restore_best: bool = True
    #: task id or task YAML: ``data`` then holds that task's records and its prompt/answer/pair builders apply
    task: str | None = None
    #: rejected-answer strategy for task records (a builder name, a comma list, or "all")
    pairs: str | None = None
    out: str | None = None
    #: a previous run's ``final/`` (peft adapter dir: keep training that adapter; full model dir: start from it)
    init_from: str | None = None

    epochs: int | None = Field(None, description=(
        "passes over the training data; None = the stage's default (DEFAULT_EPOCHS). With max_steps set "
        "it does not apply and stays None, so the saved config says what ran"))
    max_steps: int | None = Field(None, description=(
        "optimizer steps to run; when set it overrides epochs, as transformers' TrainingArguments and TRL "
        "do: training runs exactly this many steps, fewer or more than one epoch, continuing the data "
        "order into the next epoch"))
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
    #: the temperature of every preference loss (ORPO: the weight of its odds-ratio term)
    beta: float = 0.1
    #: the preference loss: a name (``loss: simpo``), or the name and knobs of that loss
    #: (``loss: {type: simpo, gamma: 0.5}``; train/losses.py lists them); ``loss.beta`` is ``beta``
    loss: Loss = Field(default_factory=Sigmoid)
    #: reference log-probs computed once before training (and cached) instead of a second forward per step
    precompute_ref: bool = True

    parallel: Literal["none", "ddp", "fsdp2"] = "none"
    backend: Literal["auto", "nccl", "gloo"] = "auto"

    save_every: int | None = None
    #: batches with a non-finite loss or gradient that may be skipped (no update) before training stops
    skip_nonfinite: NonNegativeInt = 0
    #: stop with exit 3 when the weights blow up or the loss climbs and stays up (train/divergence.py)
    stop_on_divergence: bool = True
    log_every: int = 1
    resume: bool = False
    progress: bool = True

    @field_validator("epochs", "max_steps", "save_every", "batch_size", "grad_accum", "lora_rank", "max_length",
                     "log_every")
    @classmethod
    def _at_least_one(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("beta")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @model_validator(mode="before")
    @classmethod
    def _gather_loss(cls, raw: Any) -> Any:
        return gather_loss(raw) if isinstance(raw, dict) else raw

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_class(cls, v: Any) -> Any:
        return loss_class(v["type"]).model_validate(v) if isinstance(v, dict) else v

    @field_serializer("loss")
    def _loss_as_set(self, loss: Loss) -> str | dict[str, Any]:
        """The loss as it was set: its name, with the knobs that were given (``beta`` stands on its own)."""
        knobs = {k: getattr(loss, k) for k in loss.knobs() if k in loss.model_fields_set and k != "beta"}
        return {"type": loss.type, **knobs} if knobs else loss.type

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        """Defaults that depend on other keys, and rules between keys."""
        self.loss = self.loss.model_copy(update={"beta": self.beta})
        if self.max_steps is not None:
            self.epochs = None  # max_steps decides the run's length: the config says so
        elif self.epochs is None:
            self.epochs = DEFAULT_EPOCHS[self.stage]
        if self.lr is None:
            self.lr = DEFAULT_LR[(self.stage, self.lora)]
        if self.load_in_4bit and (not self.lora or self.parallel == "fsdp2"):
            raise ValueError("load_in_4bit (QLoRA) trains LoRA adapters on a frozen 4-bit base: it needs "
                             "lora: true and parallel none or ddp")
        problem = prefix_cache_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def lr_warning(cfg: TrainConfig) -> str | None:
    """One line when ``lr`` is over ten times outside ``USUAL_LR`` for the stage and method, else None."""
    low, high = USUAL_LR[(cfg.stage, cfg.lora)]
    if low / 10 <= cfg.lr <= high * 10:
        return None
    method = f"{'LoRA' if cfg.lora else 'full'} {cfg.stage.upper()}"
    risk = "expect divergence" if cfg.lr > high else "expect the weights to barely move"
    return f"lr {cfg.lr:g} is far outside the usual range for {method} ({low:g} to {high:g}); {risk}"


def continued_adapter(cfg: TrainConfig) -> TrainConfig:
    """The config with the shape of the LoRA adapter it continues (``init_from`` an adapter, with LoRA):
    rank, alpha, layers and target modules are the adapter's, whatever the config says, so the saved
    config must say the adapter's. A shape key set explicitly to another value is refused, naming both.
    ``lora_target_modules`` given as a string (``all-linear``, a regex) is not compared: which modules it
    names depends on the model."""
    from clinalign.models.loading import adapter_config

    if not (cfg.lora and cfg.init_from):
        return cfg
    try:
        saved = adapter_config(cfg.init_from)
        if saved is None:  # a full model directory: a fresh adapter of this config's shape goes on it
            return cfg
        layers, modules = saved.get("layers_to_transform"), saved["target_modules"]
        shape = {"lora_rank": int(saved["r"]), "lora_alpha": saved["lora_alpha"],
                 "lora_layers": len(layers) if isinstance(layers, list) else layers,
                 "lora_target_modules": modules if isinstance(modules, str)
                 else sorted({m.rsplit(".", 1)[-1] for m in modules})}  # peft saves full names for all-linear
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"init_from {cfg.init_from}: adapter_config.json is not a readable LoRA adapter "
                          f"config ({type(e).__name__}: {e})") from None
    for key in ADAPTER_SHAPE:
        mine = getattr(cfg, key)
        if key not in cfg.model_fields_set or isinstance(mine, str) or isinstance(shape[key], str):
            continue
        if (sorted(mine) if key == "lora_target_modules" else mine) != shape[key]:
            raise ConfigError(f"{key}: {mine} was set, but init_from {cfg.init_from} is a LoRA adapter with "
                              f"{key} {shape[key]}, which this stage continues; leave {key} out or set it to "
                              f"{shape[key]}")
    return cfg.model_copy(update=shape)


def prefix_cache_problem(cfg: TrainConfig, frozen: int | None = None) -> str | None:
    """The rule of ``prefix_cache`` (train/prefix.py), in one place: it needs LoRA on the last
    ``lora_layers`` only, so that leading layers stay frozen, and unsharded layers (not FSDP2).
    ``frozen`` is the number of leading layers no gradient reaches, once the model is built
    (``prefix.cached`` judges it then, before anything is written); without it, at load, only what the
    config says is judged. Returns what is wrong, or None."""
    if not cfg.prefix_cache:
        return None
    if not cfg.lora or cfg.parallel == "fsdp2":
        return "prefix_cache needs LoRA with lora_layers (frozen leading layers) and parallel none or ddp"
    if frozen == 0 or (frozen is None and cfg.lora_layers is None and cfg.init_from is None):
        return ("prefix_cache: the first decoder layer trains, so there is nothing to cache; "
                "set lora_layers to fewer layers than the model has")
    return None


#: the flat keys that named a loss's knobs before ``loss:`` held them, and the knob each names
FLAT_LOSS_KEYS = {"simpo_gamma": "gamma", "label_smoothing": "label_smoothing", "rpo_alpha": "rpo_alpha",
                  "desirable_weight": "desirable_weight", "undesirable_weight": "undesirable_weight"}


def gather_loss(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with its loss as one ``{type, knob: value}`` section, whatever form it was written in: a
    name or a section, ``loss.beta`` moved out to ``beta``, the flat knob keys moved in (with a
    deprecation warning). A key that is not a knob of the chosen loss is an error naming it."""
    raw = dict(raw)
    given = raw.pop("loss", None)
    if isinstance(given, Loss):
        given = {**given.model_dump(exclude_unset=True), "type": given.type}
    section = {"type": given} if isinstance(given, str) else dict(given or {})
    name = section.setdefault("type", "sigmoid")
    try:
        knobs = loss_class(name).knobs()
    except ConfigError as e:
        raise ValueError(f"loss: {e}") from None
    flat = {key: raw.pop(key) for key in FLAT_LOSS_KEYS if key in raw}
    where = {k: f"loss.{k}" for k in section} | {FLAT_LOSS_KEYS[k]: k for k in flat}
    for key, value in flat.items():
        if section.setdefault(FLAT_LOSS_KEYS[key], value) != value:
            raise ValueError(f"{key}: given twice, also as loss.{FLAT_LOSS_KEYS[key]}")
    for knob in section:
        if knob != "type" and knob not in knobs:
            raise ValueError(f"{where[knob]}: not a knob of the {name} loss (its knobs: {', '.join(knobs)})")
    if flat:
        example = ", ".join(f"{FLAT_LOSS_KEYS[k]}: {v}" for k, v in flat.items())
        warnings.warn(f"{', '.join(flat)}: flat loss keys are deprecated; write loss: {{type: {name}, {example}}}",
                      FutureWarning, stacklevel=1)
    if "beta" in section:
        if raw.setdefault("beta", section["beta"]) != section.pop("beta"):
            raise ValueError("beta: given twice, also as loss.beta")
    raw["loss"] = section
    return raw


def build_config(
    path: str | Path | None, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> TrainConfig:
    """YAML file < ``key=value`` overrides < explicit ``values`` (the CLI's flags), then validated. A loss
    named on its own is a section holding its type, so ``loss.KNOB=VALUE`` adds to it and ``--loss NAME``
    sets its type."""
    raw = read_yaml(path) if path is not None else {}
    if isinstance(raw.get("loss"), str):
        raw["loss"] = {"type": raw["loss"]}
    apply_overrides(raw, overrides)
    for key, value in (values or {}).items():
        if value is not None and key == "loss" and isinstance(raw.get("loss"), dict):
            raw["loss"] = {**raw["loss"], "type": value}
        elif value is not None:
            raw[key] = value
    return validate(TrainConfig, raw, str(path) if path is not None else "config")
