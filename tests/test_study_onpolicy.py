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
