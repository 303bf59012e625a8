"""The study file: one YAML that names every choice of a base vs SFT vs DPO comparison.

Training settings are given once under ``sft:`` / ``dpo:`` and may be overridden per task (a
discharge summary needs a longer ``max_length`` than a yes/no question). Unknown keys are errors,
so a typo cannot silently fall back to a default: the stage sections of every task are validated as
the TrainConfig / EvalConfig they become when the file is loaded (`load_study`), before any work.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clinalign.config import OTHER_NAMES, apply_overrides, config_error, read_yaml, validate
from clinalign.errors import ConfigError, TaskError
from clinalign.eval.compare import MultiplicityConfig
from clinalign.models.device import Device, DType
from clinalign.study.tracking import ReportTo


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    #: large enough to select settings on: a search, or the best epoch, chooses on these records
    val: float = 0.2
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


class Range(_Strict):
    """A numeric range to search: ``{low: 1.0e-4, high: 3.0e-3, log: true}``; an integer setting
    (epochs, lora_layers, lora_rank) takes whole numbers, ``step`` spaces the values evenly."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step exclude each other (Optuna samples a log range continuously)")
        return self


#: one setting's search space: a list of values (categorical) or a numeric range
SpaceEntry = list[Any] | Range


class TuneConfig(_Strict):
    """How settings are chosen on the validation split (study/tune.py): an Optuna search per training arm.

    ``sft:`` / ``dpo:`` map a training setting to the values to try; an arm without entries is not
    searched (its settings are the study file's). Both arms get the same budget; DPO's trials start
    from the SFT model the SFT search selected. ``epochs`` in a space is a maximum: every trial keeps
    its best epoch's weights."""

    #: trials per arm, counted over every worker that shares the storage
    trials: int = Field(default=8, ge=1)
    #: wall-time budget per arm and worker: no new trial starts after it (running ones finish)
    timeout_s: float | None = Field(default=None, gt=0)
    #: Optuna's TPE, random or grid sampler (grid: every entry a list), seeded by the study's seed
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    #: stops unpromising trials on their per-epoch validation scores
    pruner: Literal["median", "successive_halving", "none"] = "median"
    #: where the search is kept: None = ``OUT/tune.sqlite``; an RDB URL (``sqlite:///PATH``,
    #: ``postgresql://...``, ``mysql://...``) or a journal file path shared by several workers
    storage: str | None = None
    #: what is maximised (or minimised): a task metric on the validation split, or ``val_loss``; None =
    #: the task's primary metric for closed-set tasks, ``val_loss`` for generation tasks
    objective: str | None = None
    sft: dict[str, SpaceEntry] = Field(default_factory=dict)
    dpo: dict[str, SpaceEntry] = Field(default_factory=dict)

    @field_validator("sft", "dpo", mode="before")
    @classmethod
    def _entries(cls, v: Any) -> Any:
        """Each entry a list or a range, with the problem named by its key (not pydantic's union words)."""
        if not isinstance(v, dict):
            return v
        out = {}
        for key, entry in v.items():
            if isinstance(entry, dict):
                try:
                    entry = Range.model_validate(entry)
                except ValidationError as e:
                    err = e.errors()[0]
                    where = ".".join(str(x) for x in (key, *err["loc"]))
                    raise ValueError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
            elif not isinstance(entry, list | Range):
                raise ValueError(f"{key}: a list of values or a range {{low, high, log, step}}, got {entry!r}")
            out[key] = entry
        return out

    def space(self, arm: Literal["sft", "dpo"]) -> dict[str, SpaceEntry]:
        return getattr(self, arm)


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
    #: the study's ``tune:`` overridden key by key for this task; false = this task's settings are fixed
    tune: dict[str, Any] | Literal[False] | None = None


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
    #: evaluate the val split after every epoch of SFT and DPO (the task's metric, scored as the test
    #: is, and the loss; DPO reward accuracy) and keep the best epoch's weights; add
    #: early_stopping_patience under sft:/dpo: to stop early. None = on for tasks with a ``tune:`` search
    #: (YAML key ``validate``; the attribute name avoids shadowing pydantic's BaseModel.validate)
    validate_training: bool | None = Field(default=None, alias="validate")
    #: settings chosen on the validation split by a search (study/tune.py); a task may override it
    tune: TuneConfig | None = None
    #: the comparisons corrected together for multiplicity, declared in advance (eval/compare.py);
    #: default: each task's primary metric and the comparisons the study asks, Holm
    multiplicity: MultiplicityConfig = Field(default_factory=MultiplicityConfig)
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

    def tune_settings(self, task: TaskEntry) -> TuneConfig | None:
        """The task's search: the study's ``tune:`` overridden key by key by the task's; None when the
        task's settings are fixed (no ``tune:``, or ``tune: false`` on the task)."""
        if task.tune is False or (self.tune is None and not task.tune):
            return None
        written = self.tune.model_dump(exclude_unset=True) if self.tune else {}
        return TuneConfig.model_validate({**written, **(task.tune or {})})

    def validates(self, task: TaskEntry) -> bool:
        """Whether the task's training stages validate every epoch (``validate``, else: when tuned)."""
        if self.validate_training is not None:
            return self.validate_training
        return self.tune_settings(task) is not None

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
        if isinstance(t.tune, dict) and isinstance(t.tune.get("storage"), str):
            t.tune["storage"] = _storage_path(t.tune["storage"], base)
    if cfg.tune is not None and cfg.tune.storage:
        cfg.tune.storage = _storage_path(cfg.tune.storage, base)
    _check_tasks(cfg, path, raw)
    for t in cfg.tasks:
        _check_sections(cfg, t, str(path))
        _check_tune(cfg, t, str(path))
        _check_continued_adapter(cfg, t, str(path))
    _check_multiplicity(cfg, str(path))
    return cfg


def _storage_path(storage: str, base: Path) -> str:
    """A search's storage: an RDB URL as given, a journal file relative to the study file."""
    return storage if "://" in storage or Path(storage).is_absolute() else str((base / storage).resolve())


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
    from clinalign.train.config import TrainConfig

    dpo_set = split_settings(cfg.train_settings("dpo", task))[1]
    sft = TrainConfig.model_validate({**cfg.train_settings("sft", task), "stage": "sft"})
    if cfg.dpo_from != "sft" or not (sft.lora and dpo_set.get("lora", True)):
        return
    search = cfg.tune_settings(task)
    for key in (search.sft if search else {}):
        if key in dpo_set and key in ADAPTER_SHAPE:
            section = f"tasks.{task.id}.dpo" if key in task.dpo else "dpo"
            raise ConfigError(f"{where}: {section}.{key}: the DPO stage continues the SFT adapter, whose {key} "
                              f"the search chooses (tune.sft.{key}); leave {key} out of dpo:")
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
            settings = continued_shape(cfg.dpo_from, cfg.train_settings("sft", task), settings)
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


#: training settings a search may not vary: the study sets them, or they say where and how it runs
NOT_SEARCHED = (*SET_BY_STUDY, "device", "dtype", "parallel", "backend", "progress", "val_data", "save_every",
                "log_every", "restore_best", "early_stopping_metric")
#: settings a DPO stage that continues the SFT adapter takes from that adapter (its shape)
ADAPTER_SHAPE = ("lora", "lora_rank", "lora_alpha", "lora_layers", "lora_target_modules")


def continued_shape(dpo_from: str, sft: dict[str, Any], dpo: dict[str, Any]) -> dict[str, Any]:
    """A DPO stage's settings with the shape of the SFT adapter it continues (``dpo_from: sft``, LoRA):
    the shape keys ``dpo:`` leaves out are the SFT stage's (its selected values under a search), so the
    stage's settings, fingerprint and checks name the adapter it trains, not TrainConfig's defaults."""
    if dpo_from != "sft" or not sft.get("lora", True) or dpo.get("lora", True) is False:
        return dpo
    return {**{k: sft[k] for k in ADAPTER_SHAPE if k in sft and k not in dpo}, **dpo}


def _check_tune(cfg: StudyConfig, task: TaskEntry, where: str) -> None:
    """The task's ``tune:`` as the search will run it: each space key a setting the trainer has, each
    value (a list's every item, a range's ends) a valid setting of the stage, the objective a metric of
    the task; a problem is reported where it was written (``tasks.<id>.tune.<key>``, else ``tune.<key>``)."""
    from clinalign.study.onpolicy import split_settings
    from clinalign.tasks import get_task
    from clinalign.train.config import TrainConfig

    def owner(key: str) -> str:
        return f"tasks.{task.id}.tune" if isinstance(task.tune, dict) and key in task.tune else "tune"

    try:
        tune = cfg.tune_settings(task)
    except ValidationError as e:
        loc = e.errors()[0]["loc"]
        raise config_error(where, e, prefix=owner(str(loc[0]) if loc else ""), model=TuneConfig,
                           unknown_key=None) from None
    if tune is None:
        return
    if cfg.validate_training is False:
        raise ConfigError(f"{where}: validate: false, but {owner('trials')} chooses settings on the validation "
                          "split: leave validate out (or true)")
    metrics = [m.name for m in get_task(task.id).metrics]
    if tune.objective is not None and tune.objective not in (*metrics, "val_loss"):
        raise ConfigError(f"{where}: {owner('objective')}.objective: {tune.objective!r} is not a metric of "
                          f"{task.id} (choose one of {', '.join([*metrics, 'val_loss'])})")
    for arm in ("sft", "dpo"):
        space = tune.space(arm)
        settings = cfg.train_settings(arm, task)
        if arm == "dpo":
            on_policy, settings = split_settings(settings)
            settings = continued_shape(cfg.dpo_from, cfg.train_settings("sft", task), settings)
            if space and on_policy is not None and on_policy["pairs"] == "on_policy":
                raise ConfigError(f"{where}: {owner('dpo')}.dpo: the study's DPO is on-policy only, which is not "
                                  "searched; search the off-policy arm (dpo.pairs: [builder, on_policy]) or leave tune.dpo out")
        for key, entry in space.items():
            at = f"{where}: {owner(arm)}.{arm}.{key}"
            _check_space_key(at, key, arm, cfg.dpo_from)
            if isinstance(entry, list) and (not entry or len({repr(v) for v in entry}) != len(entry)):
                raise ConfigError(f"{at}: a list of distinct values to try, got {entry!r}")
            if isinstance(entry, Range) and _is_int_setting(key) and not all(
                    float(x).is_integer() for x in (entry.low, entry.high, entry.step or 1)):
                raise ConfigError(f"{at}: {key} takes whole numbers: low, high and step must be integers")
            if tune.sampler == "grid" and not isinstance(entry, list):
                raise ConfigError(f"{at}: sampler: grid tries every combination: give a list of values")
            for value in entry if isinstance(entry, list) else (entry.low, entry.high):
                value = int(value) if isinstance(entry, Range) and _is_int_setting(key) else value
                try:
                    TrainConfig.model_validate({**settings, key: value, "stage": arm})
                except ValidationError as e:
                    raise ConfigError(f"{at}: {value!r}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def _check_space_key(at: str, key: str, arm: str, dpo_from: str) -> None:
    from clinalign.train.config import TrainConfig

    if key in NOT_SEARCHED:
        raise ConfigError(f"{at}: not searched (set by the study, or where the run happens)")
    if key not in TrainConfig.model_fields:
        known = [k for k in TrainConfig.model_fields if k not in NOT_SEARCHED]
        hit = OTHER_NAMES.get(key) or next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.75)), None)
        raise ConfigError(f"{at}: not a training setting" + (f" (did you mean {hit!r}?)" if hit else ""))
    if arm == "dpo" and dpo_from == "sft" and key in ADAPTER_SHAPE:
        raise ConfigError(f"{at}: the DPO stage continues the SFT adapter and takes its shape; search "
                          f"{key} under tune.sft")


def _is_int_setting(key: str) -> bool:
    """Whether a TrainConfig setting holds whole numbers (an Optuna int range) rather than floats."""
    from clinalign.train.config import TrainConfig

    ann = TrainConfig.model_fields[key].annotation
    return int in (get_args(ann) or (ann,)) and float not in (get_args(ann) or (ann,))


def _check_multiplicity(cfg: StudyConfig, where: str) -> None:
    """The family's metric names are metrics of the study's tasks (clinician Likert where rated)."""
    from clinalign.eval.compare import CLINICIAN_LIKERT
    from clinalign.tasks import get_task

    if isinstance(cfg.multiplicity.metrics, str):
        return
    known = {m.name for t in cfg.tasks for m in get_task(t.id).metrics}
    known |= {CLINICIAN_LIKERT} if any(t.likert_csv for t in cfg.tasks) else set()
    for name in cfg.multiplicity.metrics:
        if name not in known:
            hit = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
            raise ConfigError(f"{where}: multiplicity.metrics: {name!r} is not a metric of the study's tasks"
                              + (f" (did you mean {hit[0]!r}?)" if hit else f" (their metrics: {', '.join(sorted(known))})"))
