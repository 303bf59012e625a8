"""The study recipe: for each task, data -> split -> SFT -> DPO (each arm's settings selected on the
validation split when the task has a ``tune:`` search, study/tune.py) -> evaluate base/SFT/DPO on the
same test items, once per final configuration, on the record of the test-split ledger -> paired
statistics; then one report for the whole study. Reads top to bottom.

Layout of ``OUT`` (``<task>`` is ``<task>/fold<k>`` for each fold of a k-fold study):
  data/<task>/{train,val,test}.jsonl        the split actually used
  stages/<task>/<stage>/                    cached stage outputs (training runs, search trials, predictions)
  tune.sqlite                               the searches' Optuna storage (unless tune.storage names another)
  models/<task>/<system>                    a link to the training run each system's results come from
                                            (its final/ weights; under a search, the chosen trial's)
  predictions/<task>/<system>.jsonl         per-item predictions, traceable to every number
  report.md, report.html, results.json, *.png
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from clinalign.data.io import read_jsonl, write_jsonl
from clinalign.errors import RESUMABLE, ClinalignError, TrainingStopped
from clinalign.hashing import model_fingerprint
from clinalign.report import safe_name
from clinalign.study import onpolicy, parallel, pipeline, tune
from clinalign.study.config import StudyConfig, TaskEntry, TuneConfig, continued_shape
from clinalign.study.pipeline import Model, Split, TaskRun
from clinalign.study.stages import Stage, StageRunner
from clinalign.tasks import Task, get_task


class StudyFailed(Exception):
    """Some tasks failed; the others were reported. ``results`` is what was written."""

    def __init__(self, results: dict[str, Any], failed: dict[str, str]):
        super().__init__("; ".join(f"{t}: {e}" for t, e in failed.items()))
        self.results, self.failed = results, failed


def run_study(cfg: StudyConfig, out: Path, log: Callable[[str], None] = print, *,
              tune_only: bool = False) -> dict[str, Any]:
    """The whole study (see the module docstring). ``tune_only``: each task's data and its searches
    only (a worker of a search shared through ``tune.storage``), nothing scored on a test split and no
    report; the results hold each task's ``_selection``."""
    from clinalign.train import distributed

    if parallel.world() > 1:  # torchrun: one process group for the study (study/parallel.py)
        distributed.init(cfg.parallel, "auto", cfg.device)
    try:
        return _run_study(cfg, out, log if parallel.is_main() else (lambda _m: None), tune_only)
    finally:
        distributed.shutdown()


def _run_study(cfg: StudyConfig, out: Path, log: Callable[[str], None], tune_only: bool) -> dict[str, Any]:
    from clinalign.eval.compare import apply_multiplicity, verdict
    from clinalign.models.loading import resolve_model_path
    from clinalign.report import write_report
    from clinalign.report.provenance import provenance
    from clinalign.report.selection import test_uses_text
    from clinalign.study.tracking import report_to

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    base_model = resolve_model_path(cfg.model)
    stages = StageRunner(out / "stages", log=log)
    results: dict[str, Any] = {"tasks": {}}
    extras: dict[str, dict[str, Any]] = {"curves": {}, "calibration": {}, "confusion": {}, "examples": {}}
    failed: dict[str, str] = {}
    for entry in cfg.tasks:
        task = get_task(entry.id)
        if tune_only and cfg.tune_settings(entry) is None:
            continue  # nothing to search
        log(f"[bold cyan]== {task.id}[/bold cyan]")
        try:
            results["tasks"][task.id] = (tune_task(cfg, entry, task, base_model, stages, out) if tune_only
                                         else run_task(cfg, entry, task, base_model, stages, out, extras))
        except TrainingStopped as e:
            if e.exit_code == RESUMABLE:  # preempted: stop here; the same command resumes (exit 75 requeues)
                raise
            failed[task.id] = _failure(e, out / "errors" / f"{safe_name(task.id)}.txt")
            log(f"[bold red]failed[/bold red]  {task.id}: {failed[task.id]}")
        except Exception as e:  # reported with the others' results; the next task still runs
            failed[task.id] = _failure(e, out / "errors" / f"{safe_name(task.id)}.txt")
            log(f"[bold red]failed[/bold red]  {task.id}: {failed[task.id]}")
    if tune_only:
        if failed:
            raise StudyFailed(results, failed)
        return results

    multiplicity = apply_multiplicity(results, cfg.multiplicity)
    for task_results in results["tasks"].values():
        uses = test_uses_text(task_results)
        task_results["_verdict"] = verdict(task_results) + (f". {uses}" if uses else "")
    for tid, err in failed.items():
        results["tasks"][tid] = {"_error": err, "_verdict": f"Failed: {err}"}
    results["study"] = {"name": cfg.name, "model": cfg.model, "dpo_from": cfg.dpo_from, "failed": failed,
                        "multiplicity": multiplicity,
                        "stages_run": stages.ran, "stages_cached": stages.skipped,
                        "stage_seconds": {k: round(v, 1) for k, v in stages.timings.items()},
                        "config": cfg.model_dump(mode="json"),
                        "provenance": provenance(time.perf_counter() - started)}
    if parallel.is_main():
        write_report(results, out, **extras)
        report_to(cfg.report_to, results, out)
    if failed:
        raise StudyFailed(results, failed)
    return results


def run_task(cfg: StudyConfig, entry: TaskEntry, task: Task, base_model: str, stages: StageRunner,
             out: Path, extras: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One task of the study: data -> SFT -> DPO (one arm, or off- and on-policy) -> evaluate every
    system on the same test items -> paired statistics.

    With ``folds: k`` the pipeline runs once per fold (each record is tested exactly once); the paired
    tests use the pooled cross-validated predictions, ``_folds`` reports each metric's mean and spread
    over the folds, and every fold's split, selection, test-split uses, on-policy rounds and training
    curves are kept, each naming its fold.
    """
    from clinalign.eval import baselines
    from clinalign.eval.compare import BASELINE, compare_systems
    from clinalign.report.summary import data_source, example_outputs

    base = _base(base_model)
    folds = [run_fold(TaskRun(cfg, entry, task, base, stages, out, fold))
             for fold in (range(cfg.folds) if cfg.folds else [None])]
    test = [x for f in folds for x in f.test]
    preds = {s: [r for f in folds for r in f.preds[s]] for s in folds[0].preds}
    ev = cfg.eval_settings(entry)
    task_results = compare_systems(task, test, {s: [r["pred"] for r in rows] for s, rows in preds.items()},
                                   n_boot=ev.n_boot, seed=ev.seed)
    if cfg.folds:
        task_results["_folds"] = fold_summary([{s: task.evaluate(f.test, [r["pred"] for r in rows])
                                                for s, rows in f.preds.items()} for f in folds])
    _add_clinician_likert(entry, preds, task_results, ev)
    task_results.update(task_info(folds))
    task_results["_data"] = data_source(entry)
    if BASELINE in preds:
        task_results["_baseline"] = baselines.describe(task, test[0])
    if not task.is_closed_set:  # a few outputs beside their input, for the report page only
        extras["examples"][task.id] = example_outputs(task, test, preds)
    cut = sum(bool(r.get("prompt_truncated")) for r in preds["base"])
    if cut:
        task_results["_prompt_truncated"] = cut
    if task.is_closed_set:  # a model that answers one label to everything is visible at a glance
        task_results["_label_distribution"] = label_distribution(test, preds, task)
        extras["calibration"][task.id] = {s: [(r.get("probs"), r["gold"]) for r in rows] for s, rows in preds.items()}
        extras["confusion"][task.id] = {s: ([r["gold"] for r in rows], [r["pred"] for r in rows])
                                        for s, rows in preds.items()}
    extras["curves"][task.id] = {s: training_curve(folds, s) for s in folds[0].arms.stages}
    return task_results


def tune_task(cfg: StudyConfig, entry: TaskEntry, task: Task, base_model: str, stages: StageRunner,
              out: Path) -> dict[str, Any]:
    """A task's data and its searches only (`run_study` with ``tune_only``): ``{"_selection": ...}``."""
    base = _base(base_model)
    folds = []
    for fold in range(cfg.folds) if cfg.folds else [None]:
        run = TaskRun(cfg, entry, task, base, stages, out, fold)
        folds.append((fold, train_arms(run, pipeline.data_stage(run), searches_only=True).selection))
    return {"_selection": _per_fold([(f, sel) for f, sel in folds])}


def _base(base_model: str) -> Model:
    return Model(base_model, parallel.from_main(partial(model_fingerprint, base_model)))  # rank 0 hashes


@dataclass(frozen=True)
class Arms:
    """The trained systems of one split: each one's training stage, the settings it was trained with
    (the study file's, with the values a search selected), and how they were chosen
    (results.json's ``_selection``, per arm)."""

    stages: dict[str, Stage]
    settings: dict[str, dict[str, Any]]
    selection: dict[str, dict[str, Any]]


def train_arms(run: TaskRun, split: Split, searches_only: bool = False) -> Arms:
    """SFT, then DPO (one arm, or off- and on-policy) from it: each arm with the study file's settings,
    or the values its search selected on the validation split (study/tune.py). The on-policy arm is
    not searched: it trains with the settings selected for off-policy DPO. ``searches_only``: no DPO
    stage that is not a search (a worker of a shared search trains SFT only when DPO's trials need it)."""
    cfg, entry = run.cfg, run.entry
    search = cfg.tune_settings(entry)
    on_policy, dpo_written = onpolicy.split_settings(cfg.stage_settings("dpo", entry))
    sft = _arm(run, split, "sft", cfg.train_settings("sft", entry), cfg.stage_settings("sft", entry), search)
    _, dpo_settings = onpolicy.split_settings(cfg.train_settings("dpo", entry))
    dpo_settings = continued_shape(cfg.dpo_from, sft.settings, dpo_settings)  # the selected SFT adapter's shape
    dpo_written = continued_shape(cfg.dpo_from, sft.settings, dpo_written)
    init = sft.stage if cfg.dpo_from == "sft" else None
    stages, selection, written = {"sft": sft.stage}, {"sft": sft.info}, {"sft": sft.settings}
    chosen: dict[str, Any] = {}
    for system, arm in onpolicy.systems(on_policy).items():  # off-policy first: on-policy reuses its values
        if searches_only and not (arm == "builder" and search is not None and search.dpo):
            continue
        if arm == "on_policy":
            settings = {**dpo_settings, **chosen}
            stages[system] = onpolicy.rounds_stage(run, split, on_policy, settings, init)
            written[system] = {**dpo_written, **chosen, **on_policy, "pairs": "on_policy"}
            selection[system] = tune.fixed_info(written[system], "the settings selected for off-policy DPO" if chosen
                                                else _fixed_reason(search, "dpo"))
        else:
            dpo = _arm(run, split, "dpo", dpo_settings, dpo_written, search, init)
            stages[system], selection[system], written[system] = dpo.stage, dpo.info, dpo.settings
            chosen = {k: dpo.settings[k] for k in (search.dpo if search else {})}
    return Arms(stages, written, selection)


def _arm(run: TaskRun, split: Split, arm: tune.Arm, settings: dict[str, Any], written: dict[str, Any],
         search: TuneConfig | None, init: Stage | None = None) -> tune.Selection:
    """One arm's stage: the best trial of its search, or one stage of the study file's settings."""
    if search is not None and search.space(arm):
        chosen = tune.select(run, split, arm, settings, search, init)
        return tune.Selection(chosen.stage, {**written, **{k: chosen.settings[k] for k in search.space(arm)}},
                              chosen.info)
    stage = (pipeline.sft_stage(run, split, settings) if arm == "sft"
             else pipeline.dpo_stage(run, split, settings, init))
    return tune.Selection(stage, written, tune.fixed_info(written, _fixed_reason(search, arm)))


def _fixed_reason(search: TuneConfig | None, arm: str) -> str:
    return "fixed in the study file" if search is None else f"fixed in the study file (tune: has no {arm} space)"


@dataclass(frozen=True)
class Fold:
    """One run of a task's pipeline (the study's split, or fold ``fold`` of k): the test items, every
    system's per-item predictions on them, the trained systems, split.json and the test split's uses."""

    fold: int | None
    test: list[Any]
    preds: dict[str, list[dict[str, Any]]]
    arms: Arms
    split: dict[str, Any]
    test_uses: dict[str, Any]


def run_fold(run: TaskRun) -> Fold:
    """Data, SFT, DPO (one arm, or off- and on-policy), then every system and baseline on the same test
    items, put on the ledger's record; the predictions also go to ``OUT/predictions/<prefix>``."""
    cfg, entry = run.cfg, run.entry
    split = pipeline.data_stage(run)
    arms = train_arms(run, split)
    ev = cfg.eval_settings(entry)
    test = split.parts["test"][: ev.max_items]
    models = {"base": run.base, **{s: pipeline.trained(stage) for s, stage in arms.stages.items()}}
    preds = pipeline.eval_stages(run, split, test, ev, models)
    for name in cfg.baselines:
        preds[name] = pipeline.baseline_stage(run, split, test, ev, name)
    uses = parallel.from_main(lambda: record_test_use(run, split, test, ev, models))
    parallel.on_main(_write_predictions, run.out / "predictions" / run.prefix, preds)
    parallel.on_main(_link_models, run.out / "models" / run.prefix, arms.stages)
    return Fold(run.fold, test, preds, arms, split.info, uses)


def _link_models(folder: Path, stages: dict[str, Stage]) -> None:
    """``folder/<system>``: a relative link to the system's training run (``run/``, which holds
    ``final/``), so a chosen model has one stable path (``clinalign export model OUT/models/<task>/dpo``)
    whatever its stage is called."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    for system, stage in stages.items():
        link, tmp = folder / system, folder / f".{system}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(stage.dir / "run", folder))
        os.replace(tmp, link)


def test_configuration(run: TaskRun, split: Split, test: list[Any], ev: Any, models: dict[str, Model]) -> str:
    """The fingerprint of what was scored on the test split: every system's weights (by content, so
    every training setting), the evaluation settings and the classical baselines; not the output folder."""
    from clinalign.hashing import fingerprint

    return fingerprint({"models": {s: m.fp for s, m in models.items()}, "eval": pipeline.eval_key(run, split, test, ev),
                        "baselines": [[b, pipeline.BASELINE_VERSION] for b in run.cfg.baselines]})


def record_test_use(run: TaskRun, split: Split, test: list[Any], ev: Any, models: dict[str, Model]) -> dict[str, Any]:
    """Put this scoring of the test split on the ledger (study/ledger.py) and return results.json's
    ``_test_uses``: the split's hash, under how many configurations it has been scored, every use."""
    from clinalign.study.ledger import configurations, record_use, split_hash

    test_hash = split_hash(test)
    uses = record_use(test_hash, test_configuration(run, split, test, ev, models), study=run.cfg.name,
                      task=run.prefix, out=run.out)
    return {"test_hash": test_hash, "n_configurations": len(configurations(uses)),
            "uses": [{"config": u.config, "study": u.study, "task": u.task, "out": u.out, "time": u.time} for u in uses]}


def task_info(folds: list[Fold]) -> dict[str, Any]:
    """The task's ``_split`` (records per part, duplicate groups), ``_selection`` (per arm, how its
    settings were chosen), ``_test_uses`` (the ledger's record of the test split): each a dict, or one
    per fold naming it; ``_on_policy`` (per round of on-policy DPO, how often the policy's samples were
    judged right; each naming its fold in a k-fold study) and ``_settings`` (what each training stage
    ran with)."""
    info: dict[str, Any] = {"_split": _per_fold([(f.fold, f.split) for f in folds]),
                            "_selection": _per_fold([(f.fold, f.arms.selection) for f in folds]),
                            "_test_uses": _per_fold([(f.fold, f.test_uses) for f in folds])}
    rounds = [r for f in folds for stage in f.arms.stages.values()
              for r in _named(f.fold, onpolicy.round_stats(stage.dir))]
    if rounds:
        info["_on_policy"] = rounds
    info["_settings"] = stage_settings(folds[0].arms)
    return info


def _per_fold(items: list[tuple[int | None, dict[str, Any]]]) -> Any:
    """One split's dict as it is; in a k-fold study a list of them, each naming its fold (as ``_split``)."""
    if items[0][0] is None:
        return items[0][1]
    return [{"fold": fold, **d} for fold, d in items]


def stage_settings(arms: Arms) -> dict[str, dict[str, Any]]:
    """system -> the settings its training stage ran with (pipeline.trained_settings); an on-policy arm
    adds its rounds, samples and temperature. Every fold trains with the same settings written."""
    out = {}
    for system, stage in arms.stages.items():
        opts, written = onpolicy.split_settings(arms.settings[system])
        out[system] = pipeline.trained_settings(stage, written) | (opts or {})
    return out


def training_curve(folds: list[Fold], system: str) -> list[dict[str, Any]]:
    """The metrics.jsonl rows of ``system``'s training stage (an on-policy arm: its last round), every
    fold's rows naming their fold."""
    return [r for f in folds
            for r in _named(f.fold, read_jsonl(f.arms.stages[system].dir / "run" / "metrics.jsonl", missing_ok=True))]


def _named(fold: int | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of one fold, each naming it (a k-fold study pools every fold's rows); as they are for
    the study's one split."""
    return rows if fold is None else [{"fold": fold, **r} for r in rows]


def _write_predictions(folder: Path, preds: dict[str, list[dict[str, Any]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for system, rows in preds.items():
        write_jsonl(folder / f"{system}.jsonl", rows)


def _failure(e: Exception, trace: Path) -> str:
    """One line for the report; a bug's traceback goes to ``trace`` (not to the log), a user error
    (``ClinalignError``) is its own message."""
    if isinstance(e, ClinalignError):
        return str(e).replace("\n", " ")
    import traceback

    from clinalign.data.io import write_text_atomic

    if parallel.is_main():
        trace.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(trace, "".join(traceback.format_exception(e)))
    return f"{type(e).__name__}: {e} (traceback in {trace})".replace("\n", " ")


def label_distribution(test: list[Any], preds: dict[str, list[dict[str, Any]]], task: Task
                       ) -> dict[str, dict[str, int]]:
    """{"gold" | system: {label: count}} over the test items, labels in the task's order."""
    from collections import Counter

    def counts(labels: list[Any]) -> dict[str, int]:
        c = Counter("(none)" if x is None else str(x) for x in labels)
        order = [x for x in (task.choices or ()) if x in c] + sorted(x for x in c if x not in (task.choices or ()))
        return {x: c[x] for x in order}

    return {"gold": counts([task.answer(r) for r in test]),
            **{s: counts([r["pred"] for r in rows]) for s, rows in preds.items()}}


def fold_summary(per_fold: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{metric: {system: {"mean", "std", "values"}}} over folds."""
    import statistics

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system in per_fold[0]:
        for metric in per_fold[0][system]:
            vals = [f[system][metric] for f in per_fold]
            out.setdefault(metric, {})[system] = {
                "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "values": vals}
    return out


def _add_clinician_likert(entry: TaskEntry, preds: dict[str, list[dict]], task_results: dict[str, Any],
                          ev: Any) -> None:
    """Where clinicians rated outputs (see rate/), their Likert means are reported as their own metric,
    tested on the items every system has a rating for, and take precedence over the rubric."""
    if not entry.likert_csv:
        return
    from clinalign.eval.compare import likert_metric
    from clinalign.rate.export import load_likert_csv

    scores = load_likert_csv(entry.likert_csv)
    per_system = {s: {r["id"]: scores.get((r["id"], s)) for r in rows} for s, rows in preds.items()
                  if any((r["id"], s) in scores for r in rows)}  # systems no clinician rated are left out
    task_results["likert_clinician"] = likert_metric(per_system, n_boot=ev.n_boot, seed=ev.seed)
