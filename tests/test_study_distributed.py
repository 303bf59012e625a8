"""A study under torchrun: `torchrun --nproc-per-node 2 -m clinalign study run` (gloo, CPU) of a 2-task
mini study gives the same results.json metrics as one process with the same global batch, with rank 0
alone writing, and a second launch reuses every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _study(path: Path, model: Path, batch: int, **extra) -> Path:
    # no dropout: the runs differ only in how each global batch is split over processes
    train = {"epochs": 1, "batch_size": batch, "lr": 3e-3, "lora": True, "lora_rank": 4, "lora_alpha": 8,
             "lora_dropout": 0.0, "max_length": 256, "progress": False}
    path.write_text(yaml.safe_dump({
        "name": "mini", "model": str(model), "seed": 0, "split": {"val": 0.1, "test": 0.3, "seed": 0},
        "sft": train, "dpo": {**train, "beta": 0.1}, "eval": {"batch_size": 4, "n_boot": 200},
        "tasks": [{"id": "uti_classification", "n": 24}, {"id": "hyponatremia_urine", "n": 24}], **extra}))
    return path


def _clinalign(tmp_path: Path, *args: str, procs: int = 1, rc: int = 0) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLINALIGN_CACHE": str(tmp_path / "cache")}  # its own test ledger
    launch = (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)] if procs > 1 else [])
    res = subprocess.run([sys.executable, *launch, "-m", "clinalign", *args], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == rc, (res.stdout + res.stderr)[-4000:]
    return res.stdout


def _metrics(out: Path) -> dict:
    tasks = json.loads((out / "results.json").read_text())["tasks"]
    return {t: {m: v for m, v in r.items() if isinstance(v, dict) and "p_values" in v} for t, r in tasks.items()}


def test_two_processes_give_the_same_study_as_one(tiny_model_dir, tmp_path):
    from clinalign.cli import run

    one, two = tmp_path / "one", tmp_path / "two"
    assert run(["study", "run", str(_study(tmp_path / "one.yaml", tiny_model_dir, 4)), "--out", str(one)]) == 0
    study2 = _study(tmp_path / "two.yaml", tiny_model_dir, 2, parallel="ddp")
    log = _clinalign(tmp_path, "study", "run", str(study2), "--out", str(two), procs=2)
    assert log.count("report:") == 1  # rank 0 alone reports

    m1, m2 = _metrics(one), _metrics(two)
    assert set(m1) == {"uti_classification", "hyponatremia_urine"} and m1.keys() == m2.keys()
    for task in m1:
        assert m1[task].keys() == m2[task].keys() and m1[task]
        for metric, a in m1[task].items():
            b = m2[task][metric]
            for system in ("base", "sft", "dpo", "classical"):
                assert b[system]["value"] == pytest.approx(a[system]["value"], abs=1e-9), (task, metric, system)
                assert b[system]["ci"] == pytest.approx(a[system]["ci"], abs=1e-9)
            assert b["p_values"] == pytest.approx(a["p_values"], abs=1e-9)
    for task in m1:  # the same splits, and per-item scores equal up to float summation order
        assert (one / "data" / task / "test.jsonl").read_text() == (two / "data" / task / "test.jsonl").read_text()
        for system in ("base", "sft", "dpo"):
            r1 = [json.loads(x) for x in (one / "predictions" / task / f"{system}.jsonl").read_text().splitlines()]
            r2 = [json.loads(x) for x in (two / "predictions" / task / f"{system}.jsonl").read_text().splitlines()]
            assert [r["id"] for r in r1] == [r["id"] for r in r2] and [r["pred"] for r in r1] == [r["pred"] for r in r2]
            for a, b in zip(r1, r2, strict=True):
                assert b["logliks"] == pytest.approx(a["logliks"], abs=1e-4)
    sft1 = [json.loads(x)["loss"] for x in (one / "stages/uti_classification/sft/run/metrics.jsonl").read_text().splitlines()]
    sft2 = [json.loads(x)["loss"] for x in (two / "stages/uti_classification/sft/run/metrics.jsonl").read_text().splitlines()]
    assert len(sft1) > 1 and sft2 == pytest.approx(sft1, abs=1e-5)  # the training really was distributed alike
    assert sft1[0] != sft1[-1]

    # again, with a third task whose data is bad: it fails on every rank (none is left waiting), is
    # reported beside the others (exit 1), and every finished stage is reused
    (tmp_path / "bad.jsonl").write_text('{"id": "x1", "vignette": 3}\n')
    cfg = yaml.safe_load(study2.read_text())
    cfg["tasks"].append({"id": "clinical_reasoning", "data": str(tmp_path / "bad.jsonl")})
    study2.write_text(yaml.safe_dump(cfg))
    log = _clinalign(tmp_path, "study", "run", str(study2), "--out", str(two), procs=2, rc=1)
    saved = json.loads((two / "results.json").read_text())
    assert set(saved["study"]["failed"]) == {"clinical_reasoning"}, log[-2000:]
    assert saved["study"]["stages_run"] == [] and any(s.endswith("/dpo") for s in saved["study"]["stages_cached"])
    assert {t: m for t, m in _metrics(two).items() if t in m2} == m2  # Holm over the same finished tasks


def test_a_study_launched_on_several_processes_needs_parallel(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from clinalign.cli import run

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; refused before any process group or file
    assert run(["study", "run", str(_study(tmp_path / "s.yaml", tiny_model_dir, 2)), "--out", str(tmp_path / "out")]) == 2
    assert "launched with 2 processes but parallel is 'none'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_python_m_clinalign_help(tmp_path):
    out = _clinalign(tmp_path, "--help")
    assert "study" in out and "train" in out


def test_on_policy_rounds_train_on_every_process(tiny_model_dir, tmp_path):
    """An on-policy round's training is a DDP stage like SFT's: under torchrun every process trains it
    (rank 0 alone would wait forever for the others), with the same losses as one process."""
    from clinalign.cli import run

    on_policy = {"pairs": "on_policy", "samples": 2, "max_steps": 2}
    one = _study(tmp_path / "one.yaml", tiny_model_dir, 4, baselines=[])
    two = _study(tmp_path / "two.yaml", tiny_model_dir, 2, parallel="ddp", baselines=[])
    for path in (one, two):
        cfg = yaml.safe_load(path.read_text())
        cfg["dpo"] |= on_policy
        cfg["tasks"] = cfg["tasks"][:1]
        path.write_text(yaml.safe_dump(cfg))
    assert run(["study", "run", str(one), "--out", str(tmp_path / "one")]) == 0
    _clinalign(tmp_path, "study", "run", str(two), "--out", str(tmp_path / "two"), procs=2)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / out / "stages/uti_classification/dpo_round1/run/metrics.jsonl")
               .read_text().splitlines()] for out in ("one", "two")]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], abs=1e-5)
