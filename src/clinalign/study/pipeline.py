"""One task's stages on one split (the study's split, or one fold of k): a function per stage, each
returning its folder and fingerprint (a `Stage`), with the cache key it is stored under built beside it.

A key names by content everything its stage computes from: the upstream stages' fingerprints, the base
weights' hash, the prompts it renders, its settings with device/dtype as resolved on this machine
(`placed`); StageRunner (study/stages.py) adds the stage's name and clinalign's version. An option that
is off is left out of its key (`key`), so adding an option to clinalign leaves the cached stages of
studies that do not use it valid.

Every stage function takes the settings it runs with and its stage name, so a caller can run the same
stage with other settings beside the study's own (each its own cached stage).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from clinalign.data.audit import check_leakage
from clinalign.data.io import read_jsonl, read_records, write_json, write_jsonl
from clinalign.data.pairs import preference_pairs, sft_examples
from clinalign.data.splits import kfold_split, split_records
from clinalign.eval import baselines
from clinalign.hashing import file_fingerprint
from clinalign.report.summary import data_line, data_source
from clinalign.study import parallel
from clinalign.study.config import SET_BY_STUDY, EvalConfig, StudyConfig, TaskEntry
from clinalign.study.stages import Stage, StageRunner
from clinalign.study.validation import Objective, Report, objective_for, task_validation
from clinalign.synthetic import generate
from clinalign.tasks import Task
from clinalign.tasks.base import BASELINE_VIEW
from clinalign.train.loop import Validation

#: bump when eval/baselines.py changes what it predicts, so cached baseline stages are redone
BASELINE_VERSION = 1
PARTS = ("train", "val", "test")
#: written into a training stage whose validation listener (a search's pruner) stopped it early
PRUNED = "pruned.json"


class Model(NamedTuple):
    """Weights to train from or evaluate (a model or adapter folder, or a name that models/loading.py
    resolves) and their content fingerprint."""

    path: str | Path
    fp: str


def trained(stage: Stage) -> Model:
    """A training stage's final weights (``run/final``: the best epoch's with validation)."""
    return Model(stage.dir / "run" / "final", stage.fp)


@dataclass(frozen=True)
class TaskRun:
    """What every stage of one task on one split reads."""

    cfg: StudyConfig
    entry: TaskEntry
    task: Task
    base: Model
    stages: StageRunner
    out: Path
    fold: int | None = None

    @property
    def prefix(self) -> str:
        """Stage names and output folders: ``<task>``, or ``<task>/fold<k>`` in a k-fold study."""
        return self.task.id if self.fold is None else f"{self.task.id}/fold{self.fold}"

    @cached_property
    def objective(self) -> Objective | None:
        """What the training stages are validated on after every epoch (study/validation.py); None
        when they are not validated."""
        if not self.cfg.validates(self.entry):
            return None
        tune = self.cfg.tune_settings(self.entry)
        return objective_for(self.task, tune.objective if tune else None)


@dataclass(frozen=True)
class Split:
    """The data stage's output: records per part, its ``split.json`` (records per part, duplicate
    groups) and the fingerprint of the prompts the models are trained on (train + val, rendered)."""

    stage: Stage
    parts: dict[str, list[Any]]
    info: dict[str, Any]
    prompts: str


def key(always: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A stage's cache key: ``always`` whole, and each of ``options`` only when it is on (not None or
    False)."""
    return {**always, **{k: v for k, v in options.items() if v is not None and v is not False}}


def placed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as part of a stage's identity: device/dtype as models/device.py resolves them on this
    machine, so ``auto`` on a CPU (float32) and on a GPU (bfloat16) are different stages, and ``auto``
    and ``bfloat16`` on that GPU the same one. The trainer and evaluator still get ``settings``."""
    from clinalign.models.device import resolve

    where = resolve(settings.get("device", "auto"), settings.get("dtype", "auto"),
                    bool(settings.get("load_in_4bit")))
    return {**settings, **where.identity()}


# -- data ------------------------------------------------------------------------------------------

def data_key(run: TaskRun) -> dict[str, Any]:
    e = run.entry
    return key({"task": run.task.id, "data": e.data and file_fingerprint(e.data), "n": e.n, "seed": e.seed,
                "split": run.cfg.split.model_dump(), "max_train": e.max_train},
               fold=run.fold, folds=run.cfg.folds)


def data_stage(run: TaskRun) -> Split:
    """Load or generate the records and split them (seeded, stratified, duplicates kept in one part);
    the split is copied to ``OUT/data/<prefix>``, and train/test leakage stops the task here, before
    anything trains."""
    stage = run.stages.run(f"{run.prefix}/data", data_key(run), partial(_write_split, run))
    parts = {k: read_records(stage.dir / f"{k}.jsonl", run.task.record_type) for k in PARTS}
    parallel.on_main(_copy_split, stage.dir, run.out / "data" / run.prefix)
    info = json.loads((stage.dir / "split.json").read_text()) if (stage.dir / "split.json").is_file() else {}
    if info.get("duplicate_groups"):
        run.stages.log(f"split: {info['duplicate_groups']} duplicate group(s) of {info['records_in_groups']} "
                       f"records kept in one split each" + (f", {info['dropped']} dropped" if info["dropped"] else ""))
    if run.fold in (None, 0):  # what the task trains and is tested on, before anything trains
        run.stages.log(data_line(run.task, parts, info, data_source(run.entry), run.entry.max_train))
    check_leakage(run.task, stage.dir / "train.jsonl", stage.dir / "test.jsonl", allow=run.cfg.allow_leakage,
                  log=run.stages.log)
    # what the models are trained on, rendered: a changed prompt template or answer format retrains
    return Split(stage, parts, info, run.task.prompt_fingerprint(parts["train"] + parts["val"]))


def _write_split(run: TaskRun, out: Path, _resume: bool) -> None:
    task, e, cfg = run.task, run.entry, run.cfg
    records = read_records(e.data, task.record_type) if e.data else generate(task, e.n, seed=e.seed)
    info: dict[str, int] = {}
    if run.fold is None:
        parts = split_records(task, records, val=cfg.split.val, test=cfg.split.test, seed=cfg.split.seed,
                              dedupe=cfg.split.dedupe, info=info)
    else:
        parts = kfold_split(task, records, k=cfg.folds, fold=run.fold, val=cfg.split.val, seed=cfg.split.seed,
                            dedupe=cfg.split.dedupe, info=info)
    parts["train"] = parts["train"][: e.max_train]
    for name, recs in parts.items():
        write_jsonl(out / f"{name}.jsonl", recs)
    write_json(out / "split.json", {"records": len(records), **info, **{k: len(v) for k, v in parts.items()}})


def _copy_split(data_dir: Path, public: Path) -> None:
    public.mkdir(parents=True, exist_ok=True)
    for k in PARTS:
        shutil.copyfile(data_dir / f"{k}.jsonl", public / f"{k}.jsonl")


# -- training --------------------------------------------------------------------------------------

def validated(run: TaskRun, split: Split) -> str | None:
    """The score a training stage of this split selects its best epoch on; None when it is not
    validated (the study does not validate, or the split has no validation records)."""
    return run.objective.score if run.objective is not None and split.parts["val"] else None


def sft_key(run: TaskRun, split: Split, settings: dict[str, Any]) -> dict[str, Any]:
    return key({"model": run.base.fp, "data": split.stage.fp, "prompts": split.prompts, "train": placed(settings),
                "seed": run.cfg.seed}, validate=validated(run, split))


def sft_stage(run: TaskRun, split: Split, settings: dict[str, Any], name: str = "sft", report: Report | None = None,
              copy_from: Path | None = None) -> Stage:
    """SFT from the base model on (prompt, gold answer) of the training split. ``report`` hears every
    validation (a search's pruner: True stops the stage there, which says so in ``pruned.json``);
    ``copy_from``: the same stage finished in another output folder (study/stages.py)."""
    return run.stages.run(f"{run.prefix}/{name}", sft_key(run, split, settings),
                          partial(_train_sft, run, split, settings, report), every_rank=True, copy_from=copy_from)


def _train_sft(run: TaskRun, split: Split, settings: dict[str, Any], report: Report | None, out: Path,
               resume: bool) -> None:
    examples = partial(sft_examples, run.task)
    parallel.on_main(_write_once, out / "sft.jsonl", lambda path: write_jsonl(path, examples(split.parts["train"])))
    val = _val_data(run, split, out / "val.jsonl", examples)
    run_trainer("sft", run.base.path, out / "sft.jsonl", out / "run", {**settings, **val}, run.cfg.seed, resume,
                validation=_validation(run, split, out, report))


def dpo_key(run: TaskRun, split: Split, settings: dict[str, Any], init: Stage | None) -> dict[str, Any]:
    e = run.entry
    return key({"model": run.base.fp, "data": split.stage.fp, "prompts": split.prompts,
                "init": init.fp if init else None, "pairs": e.pairs,
                "pairs_file": e.pairs_file and file_fingerprint(e.pairs_file), "train": placed(settings),
                "seed": run.cfg.seed},
               max_pairs=e.max_pairs, validate=validated(run, split))


def dpo_stage(run: TaskRun, split: Split, settings: dict[str, Any], init: Stage | None, name: str = "dpo",
              report: Report | None = None, copy_from: Path | None = None, reference: Path | None = None) -> Stage:
    """Off-policy DPO: on the task's built pairs of the first ``max_pairs`` training records (or a
    prepared ``pairs_file``), from ``init``'s final weights (None: from the base model); ``report`` and
    ``copy_from`` as for `sft_stage`. ``reference``: another DPO stage's ``ref_logps/`` folder, from the
    same starting model on the same pairs (a search's earlier trial): its cached reference log-probs are
    used instead of computing them again (train/ref_cache.py keys them by content, so a file that does
    not match is not used)."""
    return run.stages.run(f"{run.prefix}/{name}", dpo_key(run, split, settings, init),
                          partial(_train_dpo, run, split, settings, init, report, reference), every_rank=True,
                          copy_from=copy_from)


def _train_dpo(run: TaskRun, split: Split, settings: dict[str, Any], init: Stage | None, report: Report | None,
               reference: Path | None, out: Path, resume: bool) -> None:
    e = run.entry
    pairs = partial(preference_pairs, run.task, strategy=e.pairs, seed=run.cfg.seed)
    parallel.on_main(_write_once, out / "pairs.jsonl", partial(_write_pairs, e, pairs, split.parts["train"][: e.max_pairs]))
    if reference is not None and not resume:
        parallel.on_main(_copy_files, sorted(reference.glob("ref-logps-*.safetensors")), out / "run" / "ref_logps")
    val = _val_data(run, split, out / "val_pairs.jsonl", pairs)
    run_trainer("dpo", run.base.path, out / "pairs.jsonl", out / "run", {**settings, **val}, run.cfg.seed, resume,
                init_from=trained(init).path if init else None, validation=_validation(run, split, out, report))


def _validation(run: TaskRun, split: Split, out: Path, report: Report | None) -> Validation | None:
    """The task's metric on the validation split after every epoch (study/validation.py), when the
    stage is validated; a ``report`` that stops the stage leaves ``pruned.json`` in its folder."""
    if validated(run, split) is None:
        return None

    def heard(evaluation: int, scores: dict[str, float]) -> bool:
        stop = report is not None and report(evaluation, scores)
        if stop:
            parallel.on_main(write_json, out / PRUNED, {"evaluation": evaluation})
        return stop

    return task_validation(run.task, split.parts["val"], run.cfg.eval_settings(run.entry), run.objective, heard)


def _copy_files(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)


def _write_pairs(entry: TaskEntry, pairs: Callable[[list[Any]], list[dict[str, Any]]], records: list[Any],
                 path: Path) -> None:
    if entry.pairs_file:
        shutil.copyfile(entry.pairs_file, path)
    else:
        write_jsonl(path, pairs(records))


def _write_once(path: Path, write: Callable[[Path], None]) -> None:
    """A training stage's input file, unless a killed run of the stage wrote it already: the resumed
    trainer continues on the file its checkpoints were made from."""
    if not path.exists():
        write(path)


def _val_data(run: TaskRun, split: Split, path: Path, rows: Callable[[list[Any]], list[Any]]) -> dict[str, str]:
    """``{"val_data": path}`` with the val split written there as ``rows``, when the study validates
    training (and the split has val records); else nothing."""
    if validated(run, split) is None:
        return {}
    parallel.on_main(write_jsonl, path, rows(split.parts["val"]))
    return {"val_data": str(path)}


def run_trainer(stage: str, model: str | Path, data: Path, out: Path, settings: dict[str, Any], seed: int,
                resume: bool, init_from: Path | None = None, validation: Validation | None = None) -> None:
    """The trainer (train/api.py) on one stage's files."""
    from clinalign.train.api import train

    train(stage, model=str(model), data=data, out=out, settings=settings, seed=seed, resume=resume,
          init_from=init_from, validation=validation)


def trained_settings(stage: Stage, written: dict[str, Any]) -> dict[str, Any]:
    """What a training stage ran with, read back from its saved ``run/config.yaml``: the keys the study
    file set (``written``) and those the trainer filled in itself (a default that depends on other keys,
    such as epochs and lr), with the values the trainer used; the per-run keys the study sets (paths,
    seed) aside."""
    from clinalign.train.config import TrainConfig

    saved = yaml.safe_load((stage.dir / "run" / "config.yaml").read_text(encoding="utf-8"))
    filled = {k for k, f in TrainConfig.model_fields.items() if f.default is None and saved.get(k) is not None}
    return {k: saved[k] for k in sorted((set(written) | filled) - set(SET_BY_STUDY)) if k in saved}


# -- evaluation ------------------------------------------------------------------------------------

def eval_key(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig) -> dict[str, Any]:
    """What an evaluation computes from besides the weights: the split, the items' rendered prompts and
    the evaluation settings."""
    return {"data": split.stage.fp, "prompts": run.task.prompt_fingerprint(items), "eval": placed(ev.model_dump())}


def eval_stages(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig, models: dict[str, Model],
                name: str = "eval") -> dict[str, list[dict[str, Any]]]:
    """Every system's per-item predictions on ``items``: one scoring stage for all of them (closed-set
    answers ranked by log-likelihood: the layers below the adapters run once per item, eval/predict.py),
    or one generation stage per system (nothing to share, and each one's outputs are worth keeping)."""
    if run.task.is_closed_set and ev.closed_set_mode == "score":
        stage = run.stages.run(f"{run.prefix}/{name}", score_key(run, split, items, ev, models),
                               partial(_predict, run.task, models, items, ev), every_rank=True)
        return {s: read_jsonl(stage.dir / f"{s}.jsonl") for s in models}
    return {s: generate_stage(run, split, items, ev, s, m, name) for s, m in models.items()}


def score_key(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig, models: dict[str, Model]) -> dict[str, Any]:
    return {"models": {s: m.fp for s, m in models.items()}, **eval_key(run, split, items, ev)}


def generate_key(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig, model: Model) -> dict[str, Any]:
    return {"model": model.fp, **eval_key(run, split, items, ev)}


def generate_stage(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig, system: str, model: Model,
                   name: str = "eval") -> list[dict[str, Any]]:
    stage = run.stages.run(f"{run.prefix}/{name}-{system}", generate_key(run, split, items, ev, model),
                           partial(_predict, run.task, {system: model}, items, ev), every_rank=True)
    return read_jsonl(stage.dir / f"{system}.jsonl")


def _predict(task: Task, models: dict[str, Model], records: list[Any], ev: EvalConfig, out: Path,
             _resume: bool) -> None:
    """``OUT/<system>.jsonl`` for every system, predicted together where they share layers (sharded
    across the processes of a torchrun launch, written by rank 0)."""
    from clinalign.eval.predict import predict_systems

    paths = {s: m.path for s, m in models.items()}
    rows = parallel.sharded(lambda recs: predict_systems(
        task, paths, recs, batch_size=ev.batch_size, mode=ev.closed_set_mode, max_new_tokens=ev.max_new_tokens,
        max_prompt_tokens=ev.max_prompt_tokens, device=ev.device, dtype=ev.dtype), records)
    if parallel.is_main():
        for system, r in rows.items():
            write_jsonl(out / f"{system}.jsonl", r)


def baseline_key(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig, name: str) -> dict[str, Any]:
    return {"baseline": name, "data": split.stage.fp, "eval_items": ev.max_items,
            "features": run.task.prompt_fingerprint(split.parts["train"] + items, BASELINE_VIEW),
            "version": BASELINE_VERSION}


def baseline_stage(run: TaskRun, split: Split, items: list[Any], ev: EvalConfig, name: str) -> list[dict[str, Any]]:
    """A classical baseline (eval/baselines.py) trained on the training split, predicting ``items``."""
    stage = run.stages.run(f"{run.prefix}/eval-{name}", baseline_key(run, split, items, ev, name),
                           partial(_predict_baseline, run, split, items))
    return read_jsonl(stage.dir / "predictions.jsonl")


def _predict_baseline(run: TaskRun, split: Split, items: list[Any], out: Path, _resume: bool) -> None:
    write_jsonl(out / "predictions.jsonl", baselines.predict(run.task, split.parts["train"], items, seed=run.cfg.seed))
