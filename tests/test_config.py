"""The one config loader (clinalign/config.py): study stage sections validated at load, overrides,
YAML errors with their line, the prefix_cache rule before OUT is written, max_steps as in transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clinalign.cli import run
from clinalign.config import apply_overrides, read_yaml
from clinalign.errors import ConfigError
from clinalign.study.config import load_study


def _study(tmp_path: Path, model: Path, task: dict | None = None, **top) -> Path:
    cfg = {"name": "typo", "model": str(model), "sft": {"epochs": 1, "lora_rank": 4}, "dpo": {"beta": 0.1},
           "eval": {"n_boot": 50}, "tasks": [{"id": "uti_classification", "n": 20, **(task or {})}], **top}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("task", "top", "key", "meant"), [
    ({"eval": {"max_itemz": 16}}, {}, "tasks.uti_classification.eval.max_itemz", "max_items"),
    ({"sft": {"epochz": 2}}, {}, "tasks.uti_classification.sft.epochz", "epochs"),
    ({"dpo": {"betta": 0.2}}, {}, "tasks.uti_classification.dpo.betta", "beta"),
    ({}, {"sft": {"lora_rnak": 4}}, "sft.lora_rnak", "lora_rank"),
    ({}, {"dpo": {"losss": "ipo"}}, "dpo.losss", "loss"),
    ({}, {"eval": {"n_bot": 10}}, "eval.n_bot", "n_boot"),
    ({"sft": {"lerning_rate": 0.1}}, {}, "tasks.uti_classification.sft.lerning_rate", "lr"),
    ({}, {"sft": {"epoch": 2}}, "sft.epoch", "epochs"),
    ({}, {"dpo": {"per_device_train_batch_size": 2}}, "dpo.per_device_train_batch_size", "batch_size"),
])
def test_a_typo_in_any_stage_section_fails_at_load_and_nothing_is_written(tmp_path, tiny_model_dir, capsys,
                                                                         task, top, key, meant):
    """A mistyped key (or another tool's name for one of ours) is named with the key it was meant to be."""
    path = _study(tmp_path, tiny_model_dir, task, **top)
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert str(e.value) == f"{path}: {key}: Extra inputs are not permitted (did you mean {meant!r}?)"
    out = tmp_path / "out"
    assert run(["study", "run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: {key}: " in err[0], err
    assert not out.exists()


def test_stage_values_and_rules_are_checked_at_load(tmp_path, tiny_model_dir):
    for task, top, message in [
        ({"dpo": {"beta": 0}}, {}, "tasks.uti_classification.dpo.beta: must be > 0"),
        ({"eval": {"max_items": "many"}}, {}, "tasks.uti_classification.eval.max_items: Input should be a valid integer"),
        ({}, {"sft": {"lr": "fast"}}, "sft.lr: Input should be a valid number"),
        ({}, {"sft": {"prefix_cache": True}}, "sft: prefix_cache: the first decoder layer trains"),
        ({"sft": {"model": "other"}}, {}, "tasks.uti_classification.sft.model: set by the study"),
        ({}, {"dpo": {"pairs": "on_policy", "samples": 1}}, "tasks.uti_classification.dpo.samples must be"),
    ]:
        with pytest.raises(ConfigError, match=f"study.yaml: {message}"):
            load_study(_study(tmp_path, tiny_model_dir, task, **top))
    # on-policy options are the study's keys of dpo:, not the trainer's: they keep working
    cfg = load_study(_study(tmp_path, tiny_model_dir, None, dpo={"pairs": "on_policy", "rounds": 2, "samples": 3,
                                                                 "temperature": 0.7, "beta": 0.2}))
    assert cfg.train_settings("dpo", cfg.tasks[0])["rounds"] == 2


def test_per_task_eval_settings_are_applied_and_typed(tmp_path, tiny_model_dir):
    cfg = load_study(_study(tmp_path, tiny_model_dir, {"eval": {"max_items": "16", "batch_size": 2}}))
    ev = cfg.eval_settings(cfg.tasks[0])
    assert (ev.max_items, ev.batch_size, ev.n_boot) == (16, 2, 50)  # validated: "16" became 16
    cfg.tasks[0].eval = {"max_itemz": 3}
    with pytest.raises(ValueError, match="max_itemz"):  # never silently ignored, even after load
        cfg.eval_settings(cfg.tasks[0])


def test_overrides_reach_sections_and_list_items_and_yaml_errors_name_the_line(tmp_path, tiny_model_dir):
    cfg = load_study(_study(tmp_path, tiny_model_dir), ["tasks.0.n=33", "tasks.0.sft.lr=0.01", "eval.seed=4"])
    assert (cfg.tasks[0].n, cfg.tasks[0].sft["lr"], cfg.eval.seed) == (33, 0.01, 4)
    with pytest.raises(ConfigError, match="tasks.uti_classification.sft.lrr: Extra inputs"):
        load_study(_study(tmp_path, tiny_model_dir), ["tasks.0.sft.lrr=0.01"])
    with pytest.raises(ConfigError, match="override 'name.x=1': 'name' is not a section"):
        apply_overrides({"name": "a"}, ["name.x=1"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides({}, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlr: [0.1\nbeta: 2\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:\d: not valid YAML"):
        read_yaml(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match=r"nope.yaml: study file not found"):
        load_study(tmp_path / "nope.yaml")


def _sft_data(tmp_path: Path, n: int) -> Path:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "a"}) + "\n" for i in range(n)))
    return data


def test_prefix_cache_with_every_layer_adapted_fails_before_out_is_written(tiny_model_dir, tmp_path, capsys):
    n_layers = json.loads((Path(tiny_model_dir) / "config.json").read_text())["num_hidden_layers"]
    out = tmp_path / "out"
    code = run(["train", "sft", "--model", str(tiny_model_dir), "--data", str(_sft_data(tmp_path, 4)), "--out",
                str(out), "--max-steps", "1", "progress=false", "prefix_cache=true", f"lora_layers={n_layers}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing to cache" in err[0], err
    assert not out.exists()  # not even config.yaml


def test_max_steps_beyond_one_epoch_trains_that_many_steps(tiny_model_dir, tmp_path):
    """transformers' rule: max_steps overrides epochs, continuing into further epochs (4 examples at
    batch 2 are 2 steps an epoch; --epochs 1 --max-steps 5 trains 5)."""
    out = tmp_path / "out"
    assert run(["train", "sft", "--model", str(tiny_model_dir), "--data", str(_sft_data(tmp_path, 4)), "--out",
                str(out), "--batch-size", "2", "--epochs", "1", "--max-steps", "5", "progress=false",
                "lora_rank=2", "max_length=64"]) == 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    from clinalign.train.config import TrainConfig

    assert "overrides epochs" in TrainConfig.model_fields["max_steps"].description


@pytest.mark.parametrize(("overrides", "message"), [
    (["lerning_rate=0.1"], "config: lerning_rate: unknown config key (did you mean 'lr'?)"),
    (["epoch=2"], "config: epoch: unknown config key (did you mean 'epochs'?)"),
    (["num_train_epochs=2"], "config: num_train_epochs: unknown config key (did you mean 'epochs'?)"),
    (["lora_r=8"], "config: lora_r: unknown config key (did you mean 'lora_rank'?)"),
    (["colour=blue"], "config: colour: unknown config key"),  # nothing near: no guess
])
def test_an_unknown_training_key_gets_the_key_it_was_meant_to_be(overrides, message):
    from clinalign.train.config import build_config

    with pytest.raises(ConfigError) as e:
        build_config(None, overrides)
    assert str(e.value) == message


def test_did_you_mean_reaches_nested_study_sections(tmp_path, tiny_model_dir):
    path = _study(tmp_path, tiny_model_dir, {"nn": 3})
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert str(e.value).startswith(f"{path}: tasks.0.nn: Extra inputs are not permitted")
    with pytest.raises(ConfigError) as e:
        load_study(_study(tmp_path, tiny_model_dir, {"pairs_fil": "x.jsonl"}))
    assert str(e.value).endswith("tasks.0.pairs_fil: Extra inputs are not permitted (did you mean 'pairs_file'?)")
    with pytest.raises(ConfigError) as e:
        load_study(_study(tmp_path, tiny_model_dir, split={"tset": 0.2}))
    assert str(e.value).endswith("split.tset: Extra inputs are not permitted (did you mean 'test'?)")
    with pytest.raises(ConfigError) as e:
        load_study(_study(tmp_path, tiny_model_dir, validat=True))
    assert str(e.value).endswith("validat: Extra inputs are not permitted (did you mean 'validate'?)")
