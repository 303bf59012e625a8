"""The study file: one YAML that names every choice of a base vs SFT vs DPO comparison.

Training settings are given once under ``sft:`` / ``dpo:`` and may be overridden per task (a
discharge summary needs a longer ``max_length`` than a yes/no question). Unknown keys are errors,
so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinalign.errors import ConfigError
from clinalign.models.device import Device, DType
from clinalign.study.tracking import ReportTo


def merge_settings(study_level: dict[str, Any], task_level: dict[str, Any]) -> dict[str, Any]:
    """A stage's settings for one task: the study's ``sft:``/``dpo:``, overridden key by key by the task's
    (also used by the report to state each task's recipe from the saved config)."""
    return {**study_level, **task_level}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    val: float = 0.1
    test: float = 0.2
    seed: int = 0
    #: duplicate and near-duplicate records (the task's rule) always share a split ("group"), or only
    #: the first of each group is kept ("drop"); see data/splits.py
    dedupe: Literal["group", "drop"] = "group"


class EvalConfig(_Strict):
    batch_size: int = 8
    #: "score" ranks each allowed answer by log-likelihood; "generate" decodes and parses
    closed_set_mode: Literal["score", "generate"] = "score"
    max_new_tokens: int | None = None
    #: longer prompts lose their start (as in training); their prediction rows carry prompt_truncated
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    max_items: int | None = None
    n_boot: int = 1000
    seed: int = 0
    #: models/device.py's policy for scoring and generation; None = the study's ``device``/``dtype``
    device: Device | None = None
    dtype: DType | None = None


class TaskEntry(_Strict):
    id: str
    #: a JSONL/CSV record file; when absent the task's synthetic generator makes ``n`` records
    data: str | None = None
    n: int = 400
    seed: int = 0
    #: rejected-answer strategy for DPO pairs ("all", a name, or a comma list); None = task default
    pairs: str | None = None
    #: a prepared preference-pair JSONL (e.g. clinician picks exported by `clinalign rate export`)
    pairs_file: str | None = None
    #: clinician Likert CSV (`clinalign rate export --likert`), replaces rubric scores where present
    likert_csv: str | None = None
    max_train: int | None = None
    #: DPO on the generated pairs of the first N training records only (a DPO step costs more than an
    #: SFT step; SFT still uses every training record). A pairs_file is used whole.
    max_pairs: int | None = Field(default=None, ge=1)
    sft: dict[str, Any] = Field(default_factory=dict)
    dpo: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)


class StudyConfig(_Strict):
    name: str = "study"
    model: str = "default"
    seed: int = 0
    #: one device/precision policy for training and evaluation (models/device.py): auto = CUDA when
    #: present, bfloat16 on a GPU that has it, else float32; a stage's sft:/dpo:/eval: may override it
    device: Device = "auto"
    dtype: DType = "auto"
    #: how training stages use the processes of `torchrun ... -m clinalign study run` (train/distributed.py);
    #: ignored on one process, so the same file runs with and without torchrun
    parallel: Literal["none", "ddp", "fsdp2"] = "none"
    #: DPO starts from the SFT output (the study's design) or from the base model
    dpo_from: Literal["sft", "base"] = "sft"
    split: SplitConfig = Field(default_factory=SplitConfig)
    sft: dict[str, Any] = Field(default_factory=dict)
    dpo: dict[str, Any] = Field(default_factory=dict)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    #: stop before training when the audit finds train/test leakage, unless set
    allow_leakage: bool = False
    #: evaluate the val split during SFT and DPO (loss; DPO reward accuracy) and keep the best weights;
    #: add early_stopping_patience under sft:/dpo: to stop early
    #: (YAML key ``validate``; the attribute name avoids shadowing pydantic's BaseModel.validate)
    validate_training: bool = Field(default=False, alias="validate")
    #: k-fold cross-validation for small datasets: every record is tested once; None = one split
    folds: int | None = Field(default=None, ge=2)
    #: classical systems evaluated beside base/SFT/DPO on the same test items (eval/baselines.py:
    #: TF-IDF + logistic regression for closed-set tasks, extractive for generation); [] = none
    baselines: list[Literal["classical"]] = Field(default_factory=lambda: ["classical"])
    #: experiment trackers to send the finished study to (study/tracking.py); MLflow: a local SQLite store under OUT
    report_to: ReportTo = Field(default_factory=list)
    tasks: list[TaskEntry]

    @model_validator(mode="after")
    def _unique_tasks(self) -> StudyConfig:
        ids = [t.id for t in self.tasks]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"task listed twice: {', '.join(sorted(dup))}")
        if not ids:
            raise ValueError("a study needs at least one task")
        from clinalign.models.device import resolve

        try:  # a study that cannot run on this machine fails before any work starts
            resolve(self.device, self.dtype)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self

    def train_settings(self, stage: Literal["sft", "dpo"], task: TaskEntry) -> dict[str, Any]:
        """The stage's TrainConfig values: the study's device/dtype (and, under torchrun, its
        ``parallel``) unless the stage names its own."""
        from clinalign.study.parallel import world

        launch = {"device": self.device, "dtype": self.dtype,
                  **({"parallel": self.parallel} if world() > 1 else {})}
        return merge_settings({**launch, **getattr(self, stage)}, getattr(task, stage))

    def eval_settings(self, task: TaskEntry) -> EvalConfig:
        ev = self.eval.model_copy(update=task.eval)
        return ev.model_copy(update={"device": ev.device or self.device, "dtype": ev.dtype or self.dtype})


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study YAML; ``overrides`` are ``dotted.key=value`` strings (value parsed as YAML)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"study file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {msg}" if where else f"{path}: {msg}") from None
    base = path.parent
    for t in cfg.tasks:  # relative data paths are relative to the study file
        for attr in ("data", "pairs_file", "likert_csv"):
            v = getattr(t, attr)
            if v and not Path(v).is_absolute():
                setattr(t, attr, str((base / v).resolve()))
        if t.id.endswith((".yaml", ".yml")) and not Path(t.id).is_absolute():
            t.id = str((base / t.id).resolve())
        from clinalign.study.onpolicy import split_settings

        try:  # dpo.pairs / rounds / samples / temperature: checked now, not after SFT
            split_settings(cfg.train_settings("dpo", t))
        except ConfigError as e:
            raise ConfigError(f"{path}: tasks.{t.id}.{e}") from None
    return cfg
