"""The study recipe: for each task, data -> split -> SFT -> DPO -> evaluate base/SFT/DPO on the same
test items -> paired statistics; then one report for the whole study. Reads top to bottom.

Layout of ``OUT``:
  data/<task>/{train,val,test}.jsonl        the split actually used
  stages/<task>/<stage>/                    cached stage outputs (training runs, predictions)
  predictions/<task>/<system>.jsonl         per-item predictions, traceable to every number
  report.md, report.html, results.json, *.png
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clinalign.data.io import read_jsonl, read_records, write_json, write_jsonl
from clinalign.data.pairs import preference_pairs, sft_examples
from clinalign.data.splits import kfold_split, split_records
from clinalign.errors import ClinalignError
from clinalign.eval import baselines
from clinalign.hashing import model_fingerprint
from clinalign.report import safe_name
from clinalign.study import parallel
from clinalign.study.config import StudyConfig, TaskEntry
from clinalign.study.stages import StageRunner, file_fingerprint, fingerprint
from clinalign.synthetic import generate
from clinalign.tasks import Task, get_task
from clinalign.tasks.base import BASELINE_VIEW

#: bump when eval/baselines.py changes what it predicts, so cached baseline stages are redone
BASELINE_VERSION = 1


class StudyFailed(Exception):
    """Some tasks failed; the others were reported. ``results`` is what was written."""

    def __init__(self, results: dict[str, Any], failed: dict[str, str]):
        super().__init__("; ".join(f"{t}: {e}" for t, e in failed.items()))
        self.results, self.failed = results, failed


def run_study(cfg: StudyConfig, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    from clinalign.train import distributed

    if parallel.world() > 1:  # torchrun: one process group for the study (study/parallel.py)
        distributed.init(cfg.parallel, "auto", cfg.device)
    try:
        return _run_study(cfg, out, log if parallel.is_main() else (lambda _m: None))
    finally:
        distributed.shutdown()


def _run_study(cfg: StudyConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from clinalign.eval.compare import apply_holm, verdict
    from clinalign.models.loading import resolve_model_path
    from clinalign.report import write_report
    from clinalign.study.tracking import report_to

    out.mkdir(parents=True, exist_ok=True)
    base_model = resolve_model_path(cfg.model)
    stages = StageRunner(out / "stages", log=log)
    results: dict[str, Any] = {"tasks": {}}
    extras: dict[str, dict[str, Any]] = {"curves": {}, "calibration": {}, "confusion": {}}
    failed: dict[str, str] = {}
    for entry in cfg.tasks:
        task = get_task(entry.id)
        log(f"[bold cyan]== {task.id}[/bold cyan]")
        try:
            results["tasks"][task.id] = run_task(cfg, entry, task, base_model, stages, out, extras)
        except Exception as e:  # reported with the others' results; the next task still runs
            failed[task.id] = _failure(e, out / "errors" / f"{safe_name(task.id)}.txt")
            log(f"[bold red]failed[/bold red]  {task.id}: {failed[task.id]}")

    apply_holm(results)
    for task_results in results["tasks"].values():
        task_results["_verdict"] = verdict(task_results)
    for tid, err in failed.items():
        results["tasks"][tid] = {"_error": err, "_verdict": f"Failed: {err}"}
    results["study"] = {"name": cfg.name, "model": cfg.model, "dpo_from": cfg.dpo_from, "failed": failed,
                        "stages_run": stages.ran, "stages_cached": stages.skipped,
                        "stage_seconds": {k: round(v, 1) for k, v in stages.timings.items()},
                        "config": cfg.model_dump(mode="json")}
    if parallel.is_main():
        write_report(results, out, curves=extras["curves"], calibration=extras["calibration"],
                     confusion=extras["confusion"])
        report_to(cfg.report_to, results, out)
    if failed:
        raise StudyFailed(results, failed)
    return results


def run_task(cfg: StudyConfig, entry: TaskEntry, task: Task, base_model: str, stages: StageRunner,
             out: Path, extras: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One task of the study: data -> SFT -> DPO (one arm, or off- and on-policy) -> evaluate every
    system on the same test items -> paired statistics.

    With ``folds: k`` the pipeline runs once per fold (each record is tested exactly once); the
    paired tests use the pooled cross-validated predictions and ``_folds`` reports each metric's mean
    and spread over the folds.
    """
    from clinalign.eval.compare import compare_systems

    if not cfg.folds:
        test, preds, dpo_dirs, split_info = _task_predictions(cfg, entry, task, base_model, stages, out, None)
        task_results = compare_systems(task, test, {s: [r["pred"] for r in rows] for s, rows in preds.items()},
                                       n_boot=cfg.eval_settings(entry).n_boot, seed=cfg.eval_settings(entry).seed)
    else:
        test, preds, per_fold = [], {}, []
        for fold in range(cfg.folds):
            t, p, dpo_dirs, split_info = _task_predictions(cfg, entry, task, base_model, stages, out, fold)
            test += t
            for s in p:
                preds.setdefault(s, []).extend(p[s])
            per_fold.append({s: task.evaluate(t, [r["pred"] for r in p[s]]) for s in p})
        ev = cfg.eval_settings(entry)
        task_results = compare_systems(task, test, {s: [r["pred"] for r in rows] for s, rows in preds.items()},
                                       n_boot=ev.n_boot, seed=ev.seed)
        task_results["_folds"] = fold_summary(per_fold)
    _add_clinician_likert(entry, preds, task_results, cfg.eval_settings(entry))
    task_results["_split"] = split_info  # records per split and duplicate groups kept together
    from clinalign.study.onpolicy import round_stats

    rounds = [r for d in dpo_dirs.values() for r in round_stats(d)]
    if rounds:  # on-policy DPO: per round, how often the policy's samples were judged right
        task_results["_on_policy"] = rounds
    cut = sum(bool(r.get("prompt_truncated")) for r in preds["base"])
    if cut:
        task_results["_prompt_truncated"] = cut
    if task.is_closed_set:  # a model that answers one label to everything is visible at a glance
        task_results["_label_distribution"] = label_distribution(test, preds, task)
    tid = task.id
    sft_dir = next(iter(dpo_dirs.values())).parent / "sft"
    extras["curves"][tid] = {"sft": read_jsonl(sft_dir / "run" / "metrics.jsonl", missing_ok=True),
                             **{s: read_jsonl(d / "run" / "metrics.jsonl", missing_ok=True) for s, d in dpo_dirs.items()}}
    if task.is_closed_set:
        extras["calibration"][tid] = {s: [(r.get("probs"), r["gold"]) for r in rows] for s, rows in preds.items()}
        extras["confusion"][tid] = {s: ([r["gold"] for r in rows], [r["pred"] for r in rows])
                                    for s, rows in preds.items()}
    return task_results


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


def _task_predictions(cfg: StudyConfig, entry: TaskEntry, task: Task, base_model: str, stages: StageRunner,
                      out: Path, fold: int | None
                      ) -> tuple[list[Any], dict[str, list[dict[str, Any]]], dict[str, Path], dict[str, int]]:
    """Data, SFT, DPO (one arm, or off- and on-policy) and every system's per-item predictions on this
    (fold's) test split; the DPO stage folders by system."""
    tid = task.id
    sp = tid if fold is None else f"{tid}/fold{fold}"
    base_fp = parallel.from_main(lambda: model_fingerprint(base_model))  # content hash, read by rank 0 alone

    # 1. data: load or generate, then a seeded stratified split; audit for leakage before training
    data_dir, data_fp = stages.run(
        f"{sp}/data",
        {"task": tid, "data": entry.data and file_fingerprint(entry.data), "n": entry.n, "seed": entry.seed,
         "split": cfg.split.model_dump(), "max_train": entry.max_train,
         **({"fold": fold, "folds": cfg.folds} if fold is not None else {})},
        lambda d, _resume: _prepare_data(task, entry, cfg, d, fold),
    )
    split = {k: read_records(data_dir / f"{k}.jsonl", task.record_type) for k in ("train", "val", "test")}
    public = out / "data" / sp
    parallel.on_main(_copy_split, data_dir, public, list(split))
    split_info = json.loads((data_dir / "split.json").read_text()) if (data_dir / "split.json").is_file() else {}
    if split_info.get("duplicate_groups"):
        stages.log(f"split: {split_info['duplicate_groups']} duplicate group(s) of {split_info['records_in_groups']} "
                   f"records kept in one split each" + (f", {split_info['dropped']} dropped" if split_info["dropped"] else ""))
    _audit(task, data_dir, cfg, stages.log)
    # what the models are trained on, rendered: a changed prompt template or answer format retrains
    train_prompts = task.prompt_fingerprint(split["train"] + split["val"])

    # 2. SFT on (prompt, gold answer)
    sft_settings = cfg.train_settings("sft", entry)

    def train_sft(d: Path, resume: bool) -> None:
        # rank 0 checks and writes (a check on every rank would race with rank 0's write)
        parallel.on_main(lambda: (d / "sft.jsonl").exists() or write_jsonl(d / "sft.jsonl", sft_examples(task, split["train"])))
        settings = dict(sft_settings)
        if cfg.validate_training and split["val"]:
            parallel.on_main(write_jsonl, d / "val.jsonl", sft_examples(task, split["val"]))
            settings["val_data"] = str(d / "val.jsonl")
        _train("sft", base_model, d / "sft.jsonl", d / "run", settings, cfg.seed, resume)

    sft_dir, sft_fp = stages.run(
        f"{sp}/sft",
        {"model": base_fp, "data": data_fp, "prompts": train_prompts, "train": _placed(sft_settings),
         "seed": cfg.seed,
         **({"validate": True} if cfg.validate_training else {})},
        train_sft, every_rank=True,
    )

    # 3. DPO on (prompt, chosen, rejected), on top of SFT by default
    from clinalign.study import onpolicy

    on_policy, dpo_settings = onpolicy.split_settings(cfg.train_settings("dpo", entry))
    init = sft_dir / "run" / "final" if cfg.dpo_from == "sft" else None

    def train_dpo(d: Path, resume: bool) -> None:
        parallel.on_main(lambda: (d / "pairs.jsonl").exists()
                         or _write_pairs(task, entry, split["train"][: entry.max_pairs], cfg.seed, d / "pairs.jsonl"))
        settings = dict(dpo_settings)
        if cfg.validate_training and split["val"]:
            parallel.on_main(write_jsonl, d / "val_pairs.jsonl",
                             preference_pairs(task, split["val"], strategy=entry.pairs, seed=cfg.seed))
            settings["val_data"] = str(d / "val_pairs.jsonl")
        _train("dpo", base_model, d / "pairs.jsonl", d / "run", settings, cfg.seed, resume, init_from=init)

    ev = cfg.eval_settings(entry)
    dpo_stages: dict[str, tuple[Path, str]] = {}  # system -> (stage dir, fingerprint), both from the same init
    for system, arm in onpolicy.systems(on_policy).items():
        if arm == "on_policy":  # the model's own judged samples, round after round (study/onpolicy.py)
            dpo_stages[system] = onpolicy.run_rounds(
                stages, sp, task, split["train"][: entry.max_pairs], on_policy, dpo_settings, base_model=base_model,
                # the rounds' stages key on data_fp: here it carries the prompts and resolved device/dtype too
                base_fp=base_fp, data_fp=fingerprint([data_fp, train_prompts, _placed(dpo_settings)]), init=init,
                init_fp=sft_fp if init else base_fp, seed=cfg.seed,
                batch_size=ev.batch_size, train_fn=_train, max_new_tokens=ev.max_new_tokens,
                max_prompt_tokens=ev.max_prompt_tokens)
        else:
            dpo_stages[system] = stages.run(
                f"{sp}/dpo",
                {"model": base_fp, "data": data_fp, "prompts": train_prompts, "init": sft_fp if init else None,
                 "pairs": entry.pairs, **({"max_pairs": entry.max_pairs} if entry.max_pairs else {}),
                 "pairs_file": entry.pairs_file and file_fingerprint(entry.pairs_file), "train": _placed(dpo_settings),
                 "seed": cfg.seed, **({"validate": True} if cfg.validate_training else {})},
                train_dpo, every_rank=True,
            )

    # 4. evaluate every system on the same test items
    test = split["test"][: ev.max_items] if ev.max_items else split["test"]
    scored = {"data": data_fp, "prompts": task.prompt_fingerprint(test), "eval": _placed(ev.model_dump())}
    models = {"base": (base_model, base_fp), "sft": (sft_dir / "run" / "final", sft_fp),
              **{s: (d / "run" / "final", fp) for s, (d, fp) in dpo_stages.items()}}
    preds: dict[str, list[dict[str, Any]]] = {}
    if task.is_closed_set and ev.closed_set_mode == "score":
        # one stage for every system: the layers below the adapters run once per item (eval/predict.py)
        pred_dir, _ = stages.run(
            f"{sp}/eval", {"models": {s: fp for s, (_p, fp) in models.items()}, **scored},
            lambda d, _resume: _predict(task, {s: p for s, (p, _fp) in models.items()}, test, ev, d),
            every_rank=True,
        )
        preds = {system: read_jsonl(pred_dir / f"{system}.jsonl") for system in models}
    else:  # generation: nothing to share, and each system's outputs are worth keeping on their own
        for system, (path, fp) in models.items():
            pred_dir, _ = stages.run(
                f"{sp}/eval-{system}", {"model": fp, **scored},
                lambda d, _resume, s=system, path=path: _predict(task, {s: path}, test, ev, d),
                every_rank=True,
            )
            preds[system] = read_jsonl(pred_dir / f"{system}.jsonl")

    # 5. the classical baseline (eval/baselines.py), trained on the same training split
    for name in cfg.baselines:
        pred_dir, _ = stages.run(
            f"{sp}/eval-{name}", {"baseline": name, "data": data_fp, "eval_items": ev.max_items,
                                  "features": task.prompt_fingerprint(split["train"] + test, BASELINE_VIEW),
                                  "version": BASELINE_VERSION},
            lambda d, _resume: write_jsonl(d / "predictions.jsonl",
                                           baselines.predict(task, split["train"], test, seed=cfg.seed)),
        )
        preds[name] = read_jsonl(pred_dir / "predictions.jsonl")
    if parallel.is_main():
        (out / "predictions" / sp).mkdir(parents=True, exist_ok=True)
        for system in preds:
            write_jsonl(out / "predictions" / sp / f"{system}.jsonl", preds[system])
    return test, preds, {s: d for s, (d, _fp) in dpo_stages.items()}, split_info


def _placed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as part of a stage's identity: device/dtype as models/device.py resolves them on this
    machine, so ``auto`` on a CPU (float32) and on a GPU (bfloat16) are different stages, and ``auto``
    and ``bfloat16`` on that GPU the same one. The trainer and evaluator still get ``settings``."""
    from clinalign.models.device import resolve

    where = resolve(settings.get("device", "auto"), settings.get("dtype", "auto"),
                    bool(settings.get("load_in_4bit")))
    return {**settings, **where.identity()}


def _copy_split(data_dir: Path, public: Path, parts: list[str]) -> None:
    public.mkdir(parents=True, exist_ok=True)
    for k in parts:
        shutil.copyfile(data_dir / f"{k}.jsonl", public / f"{k}.jsonl")


def _prepare_data(task: Task, entry: TaskEntry, cfg: StudyConfig, out: Path, fold: int | None = None) -> None:
    if entry.data:
        records = read_records(entry.data, task.record_type)
    else:
        records = generate(task, entry.n, seed=entry.seed)
    info: dict[str, int] = {}
    if fold is None:
        parts = split_records(task, records, val=cfg.split.val, test=cfg.split.test, seed=cfg.split.seed,
                              dedupe=cfg.split.dedupe, info=info)
    else:
        parts = kfold_split(task, records, k=cfg.folds, fold=fold, val=cfg.split.val, seed=cfg.split.seed,
                            dedupe=cfg.split.dedupe, info=info)
    if entry.max_train:
        parts["train"] = parts["train"][: entry.max_train]
    for name, recs in parts.items():
        write_jsonl(out / f"{name}.jsonl", recs)
    write_json(out / "split.json", {"records": len(records), **info, **{k: len(v) for k, v in parts.items()}})


def _write_pairs(task: Task, entry: TaskEntry, train: list[Any], seed: int, path: Path) -> None:
    if entry.pairs_file:
        shutil.copyfile(entry.pairs_file, path)
    else:
        write_jsonl(path, preference_pairs(task, train, strategy=entry.pairs, seed=seed))


def _audit(task: Task, data_dir: Path, cfg: StudyConfig, log: Callable[[str], None]) -> None:
    """Stop before training on train/test leakage (near-duplicates across splits)."""
    try:
        from clinalign.data.audit import check_leakage
    except ImportError:  # the audit module is optional at this layer
        return
    check_leakage(task, data_dir / "train.jsonl", data_dir / "test.jsonl", allow=cfg.allow_leakage, log=log)


def _train(stage: str, model: str, data: Path, out: Path, settings: dict[str, Any], seed: int,
           resume: bool, init_from: Path | None = None) -> None:
    from clinalign.train.api import train

    train(stage, model=model, data=data, out=out, settings=settings, seed=seed, resume=resume, init_from=init_from)


def _predict(task: Task, models: dict[str, str | Path], records: list[Any], ev: Any, out: Path) -> None:
    """``OUT/<system>.jsonl`` for every system, predicted together where they share layers (sharded
    across the processes of a torchrun launch, written by rank 0)."""
    from clinalign.eval.predict import predict_systems

    rows = parallel.sharded(lambda recs: predict_systems(
        task, models, recs, batch_size=ev.batch_size, mode=ev.closed_set_mode, max_new_tokens=ev.max_new_tokens,
        max_prompt_tokens=ev.max_prompt_tokens, device=ev.device, dtype=ev.dtype), records)
    if parallel.is_main():
        for system, r in rows.items():
            write_jsonl(out / f"{system}.jsonl", r)


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
