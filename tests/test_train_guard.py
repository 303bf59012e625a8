"""Overfitting guard: validation during training, early stopping, best weights kept."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from clinalign.cli import run
from clinalign.data.io import write_jsonl
from clinalign.data.pairs import preference_pairs, sft_examples
from clinalign.synthetic import generate
from clinalign.tasks import get_task

UTI = get_task("uti_classification")


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_guard_directions_and_patience():
    from clinalign.train.config import TrainConfig
    from clinalign.train.loop import Validation, _Guard

    g = _Guard.for_run(TrainConfig(early_stopping_patience=2), [Validation(dict, {"val_loss": False})])
    assert [g.update({"val_loss": v}) for v in (2.0, 1.5, 1.5, 1.7)] == [True, True, False, False]
    assert g.should_stop() and g.best == 1.5
    g = _Guard("val_reward_accuracy", True, None)
    assert [g.update({"val_reward_accuracy": v}) for v in (0.5, 0.4, 0.75)] == [True, False, True]
    assert not g.should_stop()


def test_sft_early_stopping_when_validation_stalls(tiny_model_dir, tmp_path):
    """With lr 0 the validation loss never improves after the first evaluation: stop at the second."""
    write_jsonl(tmp_path / "train.jsonl", sft_examples(UTI, generate(UTI, 48, seed=5)))
    write_jsonl(tmp_path / "val.jsonl", sft_examples(UTI, generate(UTI, 16, seed=6)))
    out = tmp_path / "run"
    assert run(["train", "sft", "--model", str(tiny_model_dir), "--data", str(tmp_path / "train.jsonl"),
                "--out", str(out), "--no-lora", "--batch-size", "8", "--epochs", "5", "--lr", "0",
                f"val_data={tmp_path / 'val.jsonl'}", "eval_every=2", "early_stopping_patience=1",
                "max_length=256", "progress=false"]) == 0
    val = _rows(out / "val_metrics.jsonl")
    assert [v["step"] for v in val] == [2, 4] and [v["best"] for v in val] == [True, False]
    assert val[0]["val_loss"] == val[1]["val_loss"] > 0
    assert _rows(out / "metrics.jsonl")[-1]["step"] == 4  # stopped early: 30 steps were planned
    best = load_file(str(out / "best" / "model.safetensors"))
    final = load_file(str(out / "final" / "model.safetensors"))
    assert all((best[k] == final[k]).all() for k in best)


def test_a_resumed_run_stops_early_where_an_uninterrupted_one_does(tiny_model_dir, tmp_path, monkeypatch):
    """The guard's best score and evaluations since it improved travel in the checkpoint: with lr 0 the
    score never improves after step 2, so patience 2 stops at step 6, also when SIGTERM stopped the run
    at step 5 (a guard started afresh on resume would take step 6 as its best and run to step 10)."""
    from clinalign.errors import RESUMABLE
    from clinalign.train import loop
    from helpers import sigterm_on_call

    write_jsonl(tmp_path / "train.jsonl", sft_examples(UTI, generate(UTI, 48, seed=5)))
    write_jsonl(tmp_path / "val.jsonl", sft_examples(UTI, generate(UTI, 16, seed=6)))

    def args(out):
        return ["train", "sft", "--model", str(tiny_model_dir), "--data", str(tmp_path / "train.jsonl"),
                "--out", str(out), "--no-lora", "--batch-size", "8", "--epochs", "5", "--lr", "0",
                f"val_data={tmp_path / 'val.jsonl'}", "eval_every=2", "early_stopping_patience=2",
                "max_length=256", "progress=false"]

    assert run(args(tmp_path / "straight")) == 0
    assert [v["step"] for v in _rows(tmp_path / "straight" / "val_metrics.jsonl")] == [2, 4, 6]

    sigterm_on_call(monkeypatch, loop, "_grad_norm", 5)  # called once per step: SIGTERM during step 5
    out = tmp_path / "stopped"
    assert run(args(out)) == RESUMABLE
    monkeypatch.undo()
    assert run([*args(out), "--resume"]) == 0
    val = _rows(out / "val_metrics.jsonl")
    assert [v["step"] for v in val] == [2, 4, 6] and [v["best"] for v in val] == [True, False, False]
    assert _rows(out / "metrics.jsonl")[-1]["step"] == 6


def test_dpo_validation_metrics(tiny_model_dir, tmp_path):
    recs = generate(UTI, 40, seed=6)
    write_jsonl(tmp_path / "pairs.jsonl", preference_pairs(UTI, recs[:32]))
    write_jsonl(tmp_path / "val.jsonl", preference_pairs(UTI, recs[32:]))
    out = tmp_path / "dpo"
    code = run(["train", "dpo", "--model", str(tiny_model_dir), "--data", str(tmp_path / "pairs.jsonl"),
                "--out", str(out), "--no-lora", "--batch-size", "8", "--epochs", "2", "--lr", "3e-3",
                f"val_data={tmp_path / 'val.jsonl'}", "early_stopping_metric=val_reward_accuracy",
                "max_length=256", "progress=false"])
    assert code == 0
    val = _rows(out / "val_metrics.jsonl")
    assert [v["step"] for v in val] == [4, 8]  # once per epoch by default
    assert set(val[0]) == {"step", "val_loss", "val_reward_accuracy", "val_reward_margin", "best"}
    assert 0.0 <= val[-1]["val_reward_accuracy"] <= 1.0
    assert (out / "best" / "config.json").is_file()


def test_unknown_guard_metric_is_an_error(tiny_model_dir, tmp_path, capsys):
    recs = generate(UTI, 16, seed=7)
    write_jsonl(tmp_path / "t.jsonl", sft_examples(UTI, recs))
    code = run(["train", "sft", "--model", str(tiny_model_dir), "--data", str(tmp_path / "t.jsonl"),
                "--out", str(tmp_path / "o"), "--no-lora", "--batch-size", "8", "--max-steps", "2",
                f"val_data={tmp_path / 't.jsonl'}", "early_stopping_metric=val_f1", "progress=false"])
    assert code == 2
    assert "early_stopping_metric 'val_f1'" in capsys.readouterr().err
