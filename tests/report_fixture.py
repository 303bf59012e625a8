"""A demo-shaped study's results for report tests, without a model: the five built-in tasks on their
synthetic records, every system (base, SFT, DPO, on-policy DPO on one task, the classical baseline)
given planted per-item answers, put through the study's own statistics (compare_systems,
apply_multiplicity, verdict), plus what the runner adds (_settings, _split, _data, _baseline,
_label_distribution, _selection, _test_uses, provenance) and the figures' inputs."""

from __future__ import annotations

import random
from typing import Any

from clinalign.eval.compare import MultiplicityConfig, apply_multiplicity, compare_systems, verdict
from clinalign.report.summary import data_source, example_outputs
from clinalign.study.config import TaskEntry
from clinalign.synthetic import generate
from clinalign.tasks import get_task

TASKS = {"uti_classification": 40, "message_triage": 40, "clinical_reasoning": 40, "hyponatremia_urine": 40,
         "discharge_summary": 16}
#: share of items each system gets right (per task the same, which is enough for a page's shape)
SKILL = {"base": 0.35, "sft": 0.8, "dpo": 0.85, "dpo_onpolicy": 0.87, "classical": 0.75}
COMMON_SFT = {"epochs": 3, "batch_size": 4, "lr": 2e-3, "warmup_steps": 4, "scheduler": "constant", "lora": True,
              "lora_rank": 16, "lora_alpha": 32, "lora_layers": 6, "prefix_cache": True, "max_length": 448}
COMMON_DPO = {"epochs": 1, "batch_size": 4, "lr": 5e-4, "beta": 0.1, "loss": "sigmoid", "lora": True,
              "lora_rank": 16, "lora_alpha": 32, "lora_layers": 6, "prefix_cache": True, "max_length": 448}


def _answers(task: Any, records: list[Any], skill: float, rng: random.Random, collapse: str | None) -> list[Any]:
    out = []
    for r in records:
        gold = task.answer(r)
        if not task.is_closed_set:
            out.append(task.parse(gold if rng.random() < skill else " ".join(gold.split()[: len(gold.split()) // 3])))
            continue
        if collapse is not None:
            out.append(collapse)
            continue
        options = list(task.choices_for(r) or task.choices)
        out.append(gold if rng.random() < skill else rng.choice([o for o in options if o != gold] or options))
    return out


def demo_results(seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, extras for write_report: curves, calibration, confusion, examples)."""
    rng = random.Random(seed)
    results: dict[str, Any] = {"tasks": {}}
    extras: dict[str, dict[str, Any]] = {"curves": {}, "calibration": {}, "confusion": {}, "examples": {}}
    for tid, n_test in TASKS.items():
        task = get_task(tid)
        records = generate(task, 4 * n_test, seed=0)
        test = records[:n_test]
        systems = [s for s in SKILL if s != "dpo_onpolicy" or tid == "uti_classification"]
        preds = {s: _answers(task, test, SKILL[s], rng, "B" if (tid, s) == ("clinical_reasoning", "dpo") else None)
                 for s in systems}
        t = compare_systems(task, test, preds, n_boot=200, seed=0)
        t["_split"] = {"records": 4 * n_test, "train": 3 * n_test - 8, "val": 8, "test": n_test}
        t["_data"] = data_source(TaskEntry(id=tid, n=4 * n_test))
        t["_baseline"] = ("extractive: the note's diagnosis line, discharge medication and follow-up lists"
                          if not task.is_closed_set else "TF-IDF (word 1-2-grams) + logistic regression, C by cross-validation")
        sft = dict(COMMON_SFT)
        if tid == "message_triage":
            sft["lora_layers"] = 12
        if tid == "hyponatremia_urine":
            sft["epochs"] = 1
        if tid == "discharge_summary":
            sft |= {"epochs": 2, "lr": 1e-3, "scheduler": "linear", "warmup_steps": 0, "max_length": 640}
        dpo = {**COMMON_DPO, **({"lora_layers": 12} if tid == "message_triage" else {})}
        t["_settings"] = {"sft": sft, "dpo": dpo}
        if "dpo_onpolicy" in systems:
            t["_settings"]["dpo_onpolicy"] = {**dpo, "pairs": "on_policy", "rounds": 2, "samples": 4}
        if task.is_closed_set:
            t["_label_distribution"] = {"gold": _counts([task.answer(r) for r in test]),
                                        **{s: _counts(p) for s, p in preds.items()}}
            extras["confusion"][tid] = {s: ([task.answer(r) for r in test], p) for s, p in preds.items()}
            extras["calibration"][tid] = {s: [({a: (0.9 if a == x else 0.1 / max(1, len(task.choices_for(r) or task.choices) - 1))
                                                for a in (task.choices_for(r) or task.choices)}, task.answer(r))
                                               for r, x in zip(test, p, strict=True)] for s, p in preds.items()}
        else:
            rows = {s: [{"text": task.answer(r) if p is not None else ""} for r, p in zip(test, ps, strict=True)]
                    for s, ps in preds.items()}
            extras["examples"][tid] = example_outputs(task, test, rows)
        extras["curves"][tid] = {"sft": [{"step": i, "loss": 2.0 / (i + 1)} for i in range(20)],
                                 "dpo": [{"step": i, "loss": 0.69 - 0.01 * i, "reward_margin": 0.05 * i,
                                          "reward_accuracy": min(1.0, 0.5 + 0.03 * i)} for i in range(20)]}
        results["tasks"][tid] = t
    uti = results["tasks"]["uti_classification"]
    uti["_selection"] = {
        "sft": {"space": {"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "lora_layers": [6, 12]},
                "budget": {"trials": 4, "timeout_s": None}, "sampler": "tpe", "pruner": "median", "seed": 0,
                "objective": {"metric": "f1_yes", "split": "validation", "higher_is_better": True},
                "validation_records": 32, "storage": "sqlite:///OUT/tune.sqlite",
                "trials": [{"number": i, "params": {"lr": lr, "lora_layers": ll}, "state": st, "value": v,
                            "epoch_scores": [v], "best_epoch": 1, "stage": f"stages/uti_classification/sft-trial-{i}"}
                           for i, (lr, ll, st, v) in enumerate([(1e-4, 6, "complete", 0.61), (2e-3, 12, "complete", 0.9),
                                                                (5e-4, 6, "pruned", 0.55), (1e-3, 12, "complete", 0.84)])],
                "chosen": {"trial": 1, "params": {"lr": 2e-3, "lora_layers": 12}, "value": 0.9, "best_epoch": 1}},
        "dpo": {"fixed": {"lr": 5e-4, "beta": 0.1}, "reason": "fixed in the study file"}}
    for tid, t in results["tasks"].items():
        t["_test_uses"] = {"test_hash": f"h-{tid}", "n_configurations": 3 if tid == "hyponatremia_urine" else 1,
                           "uses": []}
    family = apply_multiplicity(results, MultiplicityConfig())
    for t in results["tasks"].values():
        t["_verdict"] = verdict(t)
    results["study"] = {"name": "demo", "model": "default", "dpo_from": "sft", "failed": {},
                        "multiplicity": family,
                        "provenance": {"clinalign": "0.1.0", "commit": "0123abcd4567", "date": "2025-01-01T00:00:00+00:00",
                                       "cpu": "Test CPU", "cores": 2, "gpus": [], "torch": "2.13.0",
                                       "python": "3.12.0", "run_seconds": 882.0},
                        "config": {"model": "default", "dpo_from": "sft", "eval": {"n_boot": 200}, "tasks": []}}
    return results, extras


def _counts(labels: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in labels:
        key = "(none)" if x is None else str(x)
        out[key] = out.get(key, 0) + 1
    return out
