"""A cached stage is reused exactly when what it computes from is unchanged: the base
weights' bytes, the prompts it renders, clinalign's version, the resolved device/dtype. Each test
re-runs one mini study and checks which stages ran; they run in file order, each from the state the
one before left."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from clinalign import hashing
from clinalign.study.config import load_study
from helpers import nudge_weights

pytestmark = pytest.mark.slow

TASK = "hyponatremia_urine"  # its classical baseline reads lab values, not the prompt
TRAINED = {f"{TASK}/{s}" for s in ("sft", "dpo", "eval")}  # everything a model computes
UNTRAINED = {f"{TASK}/data", f"{TASK}/eval-classical"}


@pytest.fixture(scope="module")
def study(tiny_model_dir: Path, tmp_path_factory):
    """(study file, out dir, model dir, stages of the first run); the model is a copy this module retrains."""
    from clinalign.study.runner import run_study

    tmp = tmp_path_factory.mktemp("identity")
    model = tmp / "model"
    shutil.copytree(tiny_model_dir, model)
    old = time.time_ns() - 3600 * 10**9  # settled files: their hashes are remembered
    for f in model.iterdir():
        os.utime(f, ns=(old, old))
    train = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "lora": True, "lora_rank": 4, "lora_alpha": 8,
             "max_length": 256}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "identity", "model": str(model), "seed": 0, "split": {"val": 0.1, "test": 0.3, "seed": 0},
        "sft": train, "dpo": {**train, "beta": 0.1}, "eval": {"batch_size": 8, "n_boot": 50},
        "tasks": [{"id": TASK, "n": 24}]}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLINALIGN_CACHE", str(tmp / "cache"))
        mp.setattr(hashing, "CACHE_MIN_BYTES", 1 << 16)  # the tiny model's weights (0.8 MB) stand for 16 GB
        first = run_study(load_study(path), tmp / "out", log=lambda _m: None)
        yield path, tmp / "out", model, set(first["study"]["stages_run"])


def _rerun(study, overrides: list[str] | None = None) -> set[str]:
    """The stages a re-run ran (every other stage was reused)."""
    from clinalign.study.runner import run_study

    path, out, _, first = study
    results = run_study(load_study(path, overrides), out, log=lambda _m: None)
    ran = set(results["study"]["stages_run"])
    assert ran | set(results["study"]["stages_cached"]) == first and not ran & set(results["study"]["stages_cached"])
    return ran


def test_an_unchanged_rerun_reuses_every_stage_and_hashes_no_weights_again(study, monkeypatch):
    _, _, model, first = study
    assert first == TRAINED | UNTRAINED
    hashed: list[Path] = []
    real = hashing._hash_file
    monkeypatch.setattr(hashing, "_hash_file", lambda p: hashed.append(p) or real(p))
    assert _rerun(study) == set()
    weights = (model / "model.safetensors").resolve()
    assert weights.stat().st_size >= hashing.CACHE_MIN_BYTES and weights not in hashed  # remembered
    assert len(hashed) > 0  # the counter does count: the stages' small output files are hashed each time


def test_retrained_weights_of_the_same_size_retrain_everything_downstream(study):
    _, _, model, _ = study
    nudge_weights(model)
    assert _rerun(study) == TRAINED  # the data and the baseline stay


def test_a_changed_prompt_reruns_only_the_stages_that_render_it(study, monkeypatch):
    from clinalign.tasks import get_task

    cls = type(get_task(TASK))
    prompt, features = cls.prompt, cls.baseline_features
    monkeypatch.setattr(cls, "prompt", lambda self, r: prompt(self, r) + "\nAnswer with the category only.")
    assert _rerun(study) == TRAINED  # not the data, not the baseline (it reads lab values)
    monkeypatch.setattr(cls, "baseline_features", lambda self, r: {**features(self, r), "extra": 1.0})
    assert _rerun(study) == {f"{TASK}/eval-classical"}  # what the baseline reads, and only that
    monkeypatch.undo()
    assert _rerun(study) == TRAINED | {f"{TASK}/eval-classical"}  # the shipped prompt again: its stages again


def test_the_resolved_device_and_dtype_are_the_identity_not_the_words(study, monkeypatch):
    from clinalign.models.device import Placement

    assert _rerun(study, ["device=cpu", "dtype=float32"]) == set()  # what auto is on this CPU: the same stages
    # auto where a bfloat16 GPU is: only the identity is faked, so the stages still run here, in float32
    monkeypatch.setattr(Placement, "identity", lambda self: {"device": "cuda", "dtype": "bfloat16"})
    assert _rerun(study) == TRAINED
