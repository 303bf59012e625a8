"""Iterative on-policy DPO in a study (study/onpolicy.py) on the tiny fixture model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clinalign.errors import ConfigError
from clinalign.study.config import load_study
from clinalign.study.onpolicy import split_settings

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_two_rounds_each_sample_from_the_previous_model_and_are_cached(tiny_model_dir: Path, tmp_path: Path):
    from clinalign.study.runner import run_study

    train = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "lora": True, "lora_rank": 4, "lora_alpha": 8, "max_length": 256}
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "onpolicy", "model": str(tiny_model_dir), "split": {"val": 0.1, "test": 0.3}, "sft": train,
        "dpo": {**train, "pairs": "on_policy", "rounds": 2, "samples": 2, "temperature": 1.0},
        "eval": {"batch_size": 8, "n_boot": 50}, "baselines": [], "tasks": [{"id": "uti_classification", "n": 30}]}))
    cfg = load_study(study)
    out = tmp_path / "out"
    results = run_study(cfg, out, log=lambda _m: None)
    ran = results["study"]["stages_run"]
    names = ["dpo_round1_sample", "dpo_round1", "dpo_round2_sample", "dpo_round2"]
    assert [s.split("/")[1] for s in ran if "dpo" in s] == names
    stages = out / "stages" / "uti_classification"
    r1, r2 = (_rows(stages / f"dpo_round{r}_sample" / "pairs.jsonl") for r in (1, 2))
    n_train = len((out / "data" / "uti_classification" / "train.jsonl").read_text().splitlines())
    assert len(r1) == len(r2) == n_train
    # round 2 sampled from round 1's model, and trained from it
    assert {p["provenance"]["model"] for p in r1} != {p["provenance"]["model"] for p in r2}
    saved = yaml.safe_load((stages / "dpo_round2" / "run" / "config.yaml").read_text())
    assert saved["init_from"] == str(stages / "dpo_round1" / "run" / "final")
    assert all(p["chosen"] != p["rejected"] for p in r1 + r2)
    rounds = results["tasks"]["uti_classification"]["_on_policy"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r, pairs in zip(rounds, (r1, r2), strict=True):
        flat = [s for p in pairs for s in p["provenance"]["sample_scores"]]
        assert r["samples"] == 2 * n_train and r["samples_per_s"] > 0
        assert r["sample_accuracy"] == pytest.approx(sum(flat) / len(flat))
    report = (out / "report.md").read_text()
    acc1 = rounds[0]["sample_accuracy"]
    assert f"on-policy round 1: samples judged correct {acc1:.2f}" in report and "on-policy round 2:" in report
    again = run_study(cfg, out, log=lambda _m: None)
    assert again["study"]["stages_run"] == []  # nothing is re-sampled or retrained


def test_on_policy_options_are_checked():
    assert split_settings({"beta": 0.1}) == (None, {"beta": 0.1})
    opts, rest = split_settings({"beta": 0.1, "pairs": "on_policy"})
    assert rest == {"beta": 0.1} and opts == {"pairs": "on_policy", "rounds": 1, "samples": 4, "temperature": 1.0}
    for bad, msg in [({"pairs": "offline"}, "dpo.pairs"), ({"rounds": 0}, "dpo.rounds"), ({"samples": 1}, "dpo.samples"),
                     ({"temperature": 0}, "dpo.temperature")]:
        with pytest.raises(ConfigError, match=msg):
            split_settings(bad)


def test_a_bad_on_policy_option_fails_at_load(tmp_path: Path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"dpo": {"pairs": "on_policy", "rounds": 0}, "tasks": [{"id": "uti_classification"}]}))
    with pytest.raises(ConfigError, match=r"s.yaml: tasks.uti_classification.dpo.rounds must be an integer >= 1"):
        load_study(study)


def test_both_arms_are_trained_from_sft_and_compared_on_the_same_items(tiny_model_dir: Path, tmp_path: Path):
    from clinalign.study.runner import run_study

    train = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "lora": True, "lora_rank": 4, "lora_alpha": 8, "max_length": 256}
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "arms", "model": str(tiny_model_dir), "split": {"val": 0.1, "test": 0.3}, "sft": train,
        "dpo": {**train, "pairs": ["builder", "on_policy"], "samples": 2},
        "eval": {"batch_size": 8, "n_boot": 50}, "tasks": [{"id": "uti_classification", "n": 30}],
        "multiplicity": {"metrics": "all", "comparisons": "all"}}))  # every comparison corrected together
    cfg = load_study(study)
    out = tmp_path / "out"
    results = run_study(cfg, out, log=lambda _m: None)
    ran = [s.split("/")[1] for s in results["study"]["stages_run"]]
    assert ran[:5] == ["data", "sft", "dpo", "dpo_round1_sample", "dpo_round1"]
    stages = out / "stages" / "uti_classification"
    sft_final = str(stages / "sft" / "run" / "final")
    for arm in ("dpo", "dpo_round1"):  # both arms start from the same SFT model
        assert yaml.safe_load((stages / arm / "run" / "config.yaml").read_text())["init_from"] == sft_final
    assert {p["strategy"] for p in _rows(stages / "dpo" / "pairs.jsonl")} != {"on_policy"}
    t = results["tasks"]["uti_classification"]
    n = t["_n_items"]
    for system in ("dpo", "dpo_onpolicy"):
        assert len(_rows(out / "predictions" / "uti_classification" / f"{system}.jsonl")) == n
    for m in ("f1_yes",):
        assert {"base", "sft", "dpo", "dpo_onpolicy", "classical"} <= set(t[m])
        assert {"dpo_onpolicy_vs_dpo", "dpo_onpolicy_vs_sft", "dpo_onpolicy_vs_base",
                "classical_vs_dpo_onpolicy", "dpo_vs_sft"} <= set(t[m]["p_values"])
        assert set(t[m]["p_values_holm"]) == set(t[m]["p_values"])
    assert [r["round"] for r in t["_on_policy"]] == [1]
    assert "On-policy DPO" in t["_verdict"] and "off-policy DPO" in t["_verdict"]
    saved = json.loads((out / "results.json").read_text())["tasks"]["uti_classification"]
    assert saved["f1_yes"]["p_values"]["dpo_onpolicy_vs_dpo"] == t["f1_yes"]["p_values"]["dpo_onpolicy_vs_dpo"]
    report = (out / "report.md").read_text()
    estimates, comparisons = [x for x in report.splitlines() if x.startswith("| Task | Metric |")]
    assert "| DPO | DPO on-policy | Classical |" in estimates and "DPO on-policy vs DPO" in comparisons
    assert "DPO on-policy: the same DPO recipe" in report
    assert (out / "uti_classification_dpo_onpolicy_curves.png").is_file()
    assert "DPO on-policy vs DPO" in (out / "report.html").read_text()
    again = run_study(cfg, out, log=lambda _m: None)
    assert again["study"]["stages_run"] == []  # neither arm is re-sampled, retrained or re-evaluated
    assert again["tasks"]["uti_classification"]["f1_yes"] == results["tasks"]["uti_classification"]["f1_yes"]


def test_two_arm_option_is_checked():
    opts, _ = split_settings({"pairs": ["on_policy", "builder"]})
    assert opts["pairs"] == ["builder", "on_policy"]
    from clinalign.study.onpolicy import systems

    assert systems(opts) == {"dpo": "builder", "dpo_onpolicy": "on_policy"}
    assert systems(split_settings({"pairs": "on_policy"})[0]) == {"dpo": "on_policy"}
    assert systems(None) == {"dpo": "builder"}
    for bad in (["builder"], ["on_policy", "on_policy"], ["builder", "offline"], 3):
        with pytest.raises(ConfigError, match="dpo.pairs"):
            split_settings({"pairs": bad})
