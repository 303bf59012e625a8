"""The study file: one YAML that names every choice of a base vs SFT vs DPO comparison.

Training settings are given once under ``sft:`` / ``dpo:`` and may be overridden per task (a
discharge summary needs a longer ``max_length`` than a yes/no question). Unknown keys are errors,
so a typo cannot silently fall back to a default: the stage sections of every task are validated as
the TrainConfig / EvalConfig they become when the file is loaded (`load_study`), before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinalign.config import apply_overrides, config_error, read_yaml, validate
from clinalign.errors import ConfigError, TaskError
from clinalign.models.device import Device, DType
from clinalign.study.tracking import ReportTo


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

    def stage_settings(self, stage: Literal["sft", "dpo"], task: TaskEntry) -> dict[str, Any]:
        """The stage's section as the study file wrote it for one task: the study's ``sft:``/``dpo:``,
        overridden key by key by the task's."""
        return {**getattr(self, stage), **getattr(task, stage)}

    def train_settings(self, stage: Literal["sft", "dpo"], task: TaskEntry) -> dict[str, Any]:
        """The stage's TrainConfig values: `stage_settings` over the study's device/dtype (and, under
        torchrun, its ``parallel``), which the stage's section may override."""
        from clinalign.study.parallel import world

        launch = {"device": self.device, "dtype": self.dtype,
                  **({"parallel": self.parallel} if world() > 1 else {})}
        return {**launch, **self.stage_settings(stage, task)}

    def eval_settings(self, task: TaskEntry) -> EvalConfig:
        """The study's ``eval:`` overridden key by key by the task's, validated (a typo is an error, never
        a silently ignored key); device/dtype default to the study's."""
        ev = EvalConfig.model_validate({**self.eval.model_dump(), **task.eval})
        return ev.model_copy(update={"device": ev.device or self.device, "dtype": ev.dtype or self.dtype})


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study YAML; ``overrides`` are ``dotted.key=value`` strings (value parsed as YAML).

    Everything is checked here, before any work: the study's own keys, and each task's ``sft:``,
    ``dpo:`` and ``eval:`` settings (the study's, overridden by the task's) as the TrainConfig /
    EvalConfig the stages will run with."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path, what="study"), overrides)
    cfg = validate(StudyConfig, raw, str(path), unknown_key=None)
    base = path.parent
    for t in cfg.tasks:  # relative paths are relative to the study file
        for attr in ("data", "pairs_file", "likert_csv"):
            v = getattr(t, attr)
            if v and not Path(v).is_absolute():
                setattr(t, attr, str((base / v).resolve()))
        if t.id.endswith((".yaml", ".yml")) and not Path(t.id).is_absolute():
            t.id = str((base / t.id).resolve())
    _check_tasks(cfg, path, raw)
    for t in cfg.tasks:
        _check_sections(cfg, t, str(path))
        _check_continued_adapter(cfg, t, str(path))
    return cfg


def _check_tasks(cfg: StudyConfig, path: Path, raw: dict[str, Any]) -> None:
    """Every task resolves (built-in id, task file, ``module:attr`` or entry point), its files exist,
    and one without a synthetic generator has its records in ``data:``."""
    from clinalign.synthetic import generator_for
    from clinalign.tasks import get_task

    for i, t in enumerate(cfg.tasks):
        try:
            task = get_task(t.id)
        except TaskError as e:
            raise ConfigError(f"{path}: tasks.{i}.id: {e}") from None
        written = raw["tasks"][i] if isinstance(raw.get("tasks"), list) else {}
        for attr in ("data", "pairs_file", "likert_csv"):
            v = getattr(t, attr)
            if v and not Path(v).is_file():
                given = str(written.get(attr, v)) if isinstance(written, dict) else v
                where = "" if Path(given).is_absolute() else f" (relative to the study file: {v})"
                what = "is a folder, not a file" if Path(v).is_dir() else "no such file"
                raise ConfigError(f"{path}: tasks.{t.id}.{attr}: {what}: {given}{where}")
        if t.data is None and generator_for(task) is None:
            raise ConfigError(f"{path}: tasks.{t.id}.data: task {task.id!r} has no synthetic generator; "
                              "give its records as data: FILE")


#: TrainConfig keys the study sets itself for each stage: in a stage section they would be ignored
#: (``progress`` is accepted, though a study's stages never show a bar: train/api.train turns it off)
SET_BY_STUDY = ("stage", "model", "data", "val_data", "task", "pairs", "out", "seed", "resume", "init_from")


def _check_continued_adapter(cfg: StudyConfig, task: TaskEntry, where: str) -> None:
    """A DPO stage that continues its task's SFT adapter (``dpo_from: sft``, LoRA) trains with that
    adapter's shape; a shape key set under ``dpo:`` to another value than the SFT stage's would be
    refused by the trainer (train/config.continued_adapter), so it is refused here, before any work."""
    from clinalign.study.onpolicy import split_settings
    from clinalign.train.config import ADAPTER_SHAPE, TrainConfig

    dpo_set = split_settings(cfg.train_settings("dpo", task))[1]
    sft = TrainConfig.model_validate({**cfg.train_settings("sft", task), "stage": "sft"})
    if cfg.dpo_from != "sft" or not (sft.lora and dpo_set.get("lora", True)):
        return
    for key in ADAPTER_SHAPE:  # target modules as a string (all-linear, a regex) depend on the model: not compared
        theirs = getattr(sft, key)
        if key not in dpo_set or isinstance(dpo_set[key], str) or isinstance(theirs, str):
            continue
        if (sorted(dpo_set[key]) != sorted(theirs)) if key == "lora_target_modules" else dpo_set[key] != theirs:
            section = f"tasks.{task.id}.dpo" if key in task.dpo else "dpo"
            raise ConfigError(f"{where}: {section}.{key}: {dpo_set[key]}, but the DPO stage continues its SFT "
                              f"stage's adapter (dpo_from: sft), whose {key} is {theirs}; set "
                              f"tasks.{task.id}.dpo.{key}: {theirs} or leave it out of dpo:")


def _check_sections(cfg: StudyConfig, task: TaskEntry, where: str) -> None:
    """Validate one task's stage settings as the stages will: a key of the merged settings is
    reported where it was written (``tasks.<id>.sft.<key>``, else ``sft.<key>``)."""
    from clinalign.study.onpolicy import split_settings
    from clinalign.train.config import TrainConfig

    name = f"tasks.{task.id}"

    def owner(stage: str, key: str | int | None) -> str:
        if key is None:  # a rule between keys: the section that has them
            return f"{name}.{stage}" if getattr(task, stage) else stage
        if key in getattr(task, stage):
            return f"{name}.{stage}"
        return stage if key in (getattr(cfg, stage) if stage != "eval" else cfg.eval.model_fields_set) else ""

    for stage in ("sft", "dpo"):
        settings = cfg.train_settings(stage, task)
        if stage == "dpo":
            try:  # dpo.pairs / rounds / samples / temperature: the study's on-policy options
                _, settings = split_settings(settings)
            except ConfigError as e:
                raise ConfigError(f"{where}: {name}.{e}") from None
        for key in SET_BY_STUDY:
            if key in settings:
                raise ConfigError(f"{where}: {owner(stage, key)}.{key}: set by the study for every stage, not "
                                  f"under {stage}:" + (" (the task's pairs: chooses rejected answers)"
                                                       if key == "pairs" else ""))
        try:
            TrainConfig.model_validate({**settings, "stage": stage})
        except ValidationError as e:
            loc = e.errors()[0]["loc"]
            raise config_error(where, e, prefix=owner(stage, loc[0] if loc else None), unknown_key=None,
                               model=TrainConfig) from None
    try:
        cfg.eval_settings(task)
    except ValidationError as e:
        loc = e.errors()[0]["loc"]
        raise config_error(where, e, prefix=owner("eval", loc[0] if loc else None), unknown_key=None,
                           model=EvalConfig) from None
