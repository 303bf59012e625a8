"""Nothing is written before the checks pass: every check that can fail on the data or the config runs
before `train sft|dpo` creates OUT, so a refused run leaves no OUT (or OUT exactly as it was). Also what
the saved config says: the shape of an adapter a stage continues, and no epochs when max_steps decided."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from clinalign.cli import run
from helpers import uti_stage_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("preflight")
    for name, rows in uti_stage_files(d, 12, seed=2).items():
        (d / f"{name}-2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    (d / "bad.jsonl").write_text('{"prompt": "p"}\n')
    (d / "empty").mkdir()
    return d


def _args(stage, model, files, out, *extra):
    return ["train", stage, "--model", str(model), "--data", str(files / f"{stage}.jsonl"), "--out", str(out),
            "--batch-size", "4", "--max-steps", "2", "max_length=256", "progress=false", "lora_rank=4", *extra]


def _refused(args, capsys, message: str) -> str:
    assert run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    return err[0]


CASES = {
    "too few examples for one step": (["--data", "{files}/{stage}-2.jsonl"], "2 examples are too few for one step"),
    "every example over max_length (truncation=drop)": (["max_length=8", "truncation=drop"],
                                                        "longer than max_length=8 under truncation='drop'"),
    "a record over the size limit": (["--max-record-bytes", "64"], "bytes, over the limit of 64 (--max-record-bytes)"),
    "bad validation data": (["val_data={files}/bad.jsonl"], "bad.jsonl:1: "),
    "init_from that is not a folder": (["--init-from", "{files}/nope"], "is not a directory"),
    "init_from a folder of nothing": (["--init-from", "{files}/empty"], "holds neither a LoRA adapter"),
    "init_from an adapter of every layer with prefix_cache": (["--init-from", "{adapter}", "prefix_cache=true"],
                                                              "nothing to cache"),
    "a shape setting the continued adapter overrides": (["--init-from", "{adapter}", "lora_rank=8"],
                                                        "lora_rank: 8 was set, but init_from"),
    "a damaged adapter": (["--init-from", "{damaged}"], "this adapter does not load onto"),
}


@pytest.mark.parametrize("stage", ["sft", "dpo"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_run_refused_on_its_inputs_writes_nothing(tiny_model_dir, adapter_run, files, tmp_path, capsys, stage, case):
    damaged = tmp_path / "damaged"
    shutil.copytree(adapter_run / "final", damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"\x00" * 100)
    extra, message = CASES[case]
    fill = {"{files}": str(files), "{stage}": stage, "{adapter}": str(adapter_run / "final"), "{damaged}": str(damaged)}

    def filled(s: str) -> str:
        for k, v in fill.items():
            s = s.replace(k, v)
        return s

    out = tmp_path / "out"
    args = _args(stage, tiny_model_dir, files, out)
    if "--data" in extra:  # replace, not add
        i = args.index("--data")
        args[i + 1] = filled(extra[extra.index("--data") + 1])
        extra = [x for j, x in enumerate(extra) if j not in (extra.index("--data"), extra.index("--data") + 1)]
    if any("lora_rank=" in x for x in extra):
        args.remove("lora_rank=4")
    _refused([*args, *map(filled, extra)], capsys, message)
    assert not out.exists()  # no config.yaml, no data_summary.json, no reference pass


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_a_refused_resume_leaves_out_exactly_as_it_was(tiny_model_dir, files, tmp_path, capsys, stage):
    out = tmp_path / "out"
    assert run(_args(stage, tiny_model_dir, files, out, "--max-steps", "1", "--save-every", "1")) == 0
    shutil.rmtree(out / "final")  # as if stopped after its checkpoint
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    message = "cannot resume"
    _refused([*_args(stage, tiny_model_dir, files, out, "--resume"), "--batch-size", "2"], capsys, message)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_a_dpo_stage_continuing_an_adapter_saves_the_adapters_shape(tiny_model_dir, files, tmp_path, capsys):
    """A DPO stage on a 1-layer SFT adapter says lora_layers: 1 (and its rank/alpha), set or not; a value
    set that differs is refused with the key and both values, before anything is written."""
    sft = tmp_path / "sft"
    assert run([*_args("sft", tiny_model_dir, files, sft), "lora_layers=1", "lora_alpha=8"]) == 0
    dpo = tmp_path / "dpo"
    assert run([*_args("dpo", tiny_model_dir, files, dpo), "--init-from", str(sft / "final")]) == 0
    saved = yaml.safe_load((dpo / "config.yaml").read_text())
    assert (saved["lora_layers"], saved["lora_rank"], saved["lora_alpha"]) == (1, 4, 8)
    assert saved["lora_target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                            "v_proj"]
    adapter = json.loads((dpo / "final" / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [1] and adapter["r"] == 4  # what ran is what the config says
    refused = tmp_path / "dpo2"
    err = _refused([*_args("dpo", tiny_model_dir, files, refused), "--init-from", str(sft / "final"), "lora_layers=2"],
                   capsys, "lora_layers: 2 was set")
    assert f"init_from {sft / 'final'} is a LoRA adapter with lora_layers 1" in err
    assert not refused.exists()
    # a value equal to the adapter's, and all-linear (which the adapter resolves), are accepted
    same = tmp_path / "dpo3"
    assert run([*_args("dpo", tiny_model_dir, files, same), "--init-from", str(sft / "final"), "lora_layers=1",
                "lora_target_modules=all-linear"]) == 0


def test_the_saved_config_says_max_steps_ran_not_epochs(tiny_model_dir, files, tmp_path):
    out = tmp_path / "out"
    assert run([*_args("sft", tiny_model_dir, files, out), "--epochs", "3", "--max-steps", "1",
                "--save-every", "1"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["epochs"], saved["max_steps"]) == (None, 1)
    plain = tmp_path / "plain"
    assert run([*_args("sft", tiny_model_dir, files, plain)[:-5], "max_length=256", "progress=false"]) == 0
    assert yaml.safe_load((plain / "config.yaml").read_text())["epochs"] == 3  # the SFT default, filled in
    # the saved config builds the same run again, and resuming it is unchanged by the missing epochs
    from clinalign.train.config import build_config

    assert build_config(out / "config.yaml").max_steps == 1
    shutil.rmtree(out / "final")
    assert run([*_args("sft", tiny_model_dir, files, out), "--max-steps", "1", "--resume"]) == 0
    assert (out / "final").is_dir()


@pytest.mark.parametrize(("stage", "lora", "lr", "warned"), [
    ("sft", "--lora", "1e6", "lr 1e+06 is far outside the usual range for LoRA SFT (1e-05 to 0.002); expect divergence"),
    ("dpo", "--no-lora", "1e-3", "lr 0.001 is far outside the usual range for full DPO (1e-07 to 2e-05); expect "
                                 "divergence"),
    ("sft", "--lora", "1e-3", None),
    ("dpo", "--lora", "5e-4", None),
])
def test_a_learning_rate_far_outside_the_usual_range_is_one_warning_line(tiny_model_dir, files, tmp_path, capsys,
                                                                         stage, lora, lr, warned):
    out = tmp_path / "out"
    run([*_args(stage, tiny_model_dir, files, out), lora, "--lr", lr, "--max-steps", "1", "stop_on_divergence=false"])
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: lr")]
    assert warnings == ([f"warning: {warned}"] if warned else [])


def test_the_usual_ranges_name_each_method():
    from clinalign.train.config import DEFAULT_LR, USUAL_LR, TrainConfig, lr_warning

    for (stage, lora), (low, high) in USUAL_LR.items():
        assert low <= DEFAULT_LR[(stage, lora)] <= high  # the defaults are usual
        assert lr_warning(TrainConfig(stage=stage, lora=lora, lr=high * 10)) is None
        assert lr_warning(TrainConfig(stage=stage, lora=lora, lr=low / 10)) is None
        far = lr_warning(TrainConfig(stage=stage, lora=lora, lr=high * 11))
        assert far and f"{'LoRA' if lora else 'full'} {stage.upper()} ({low:g} to {high:g})" in far
        assert "barely move" in lr_warning(TrainConfig(stage=stage, lora=lora, lr=low / 11))


def test_example_configs_leave_the_adapter_shape_to_the_adapter():
    """configs/train_dpo.yaml is used with --init-from an SFT adapter (README, slurm script): it must not
    set a shape key, or every such run would be refused."""
    from clinalign.train.config import ADAPTER_SHAPE

    saved = yaml.safe_load((Path(__file__).parents[1] / "configs" / "train_dpo.yaml").read_text())
    assert not set(saved) & set(ADAPTER_SHAPE)


def test_a_study_whose_dpo_shape_differs_from_the_sft_adapter_it_continues_fails_at_load(tiny_model_dir, tmp_path,
                                                                                          capsys):
    """The demo's case: triage's SFT adapts 12 layers, the study's dpo: said 6, and the DPO stage (which
    continues the SFT adapter) silently ran with 12. Now the study file is refused, naming the key."""
    from clinalign.errors import ConfigError
    from clinalign.study.config import load_study

    def study(sft: dict, dpo: dict, task: dict | None = None, **top) -> Path:
        cfg = {"name": "shape", "model": str(tiny_model_dir), "sft": {"lora_rank": 4, **sft}, "dpo": dpo,
               "tasks": [{"id": "uti_classification", "n": 20, **(task or {})}], **top}
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    path = study({"lora_layers": 2}, {"lora_layers": 1})
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert str(e.value) == (f"{path}: dpo.lora_layers: 1, but the DPO stage continues its SFT stage's adapter "
                            "(dpo_from: sft), whose lora_layers is 2; set tasks.uti_classification.dpo.lora_layers: 2 "
                            "or leave it out of dpo:")
    out = tmp_path / "out"
    assert run(["study", "run", str(path), "--out", str(out)]) == 2 and not out.exists()
    assert "dpo.lora_layers: 1, but" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"tasks\.uti_classification\.dpo\.lora_rank: 8, but .* lora_rank is 4"):
        load_study(study({}, {}, task={"dpo": {"lora_rank": 8}}))
    load_study(study({"lora_layers": 2}, {"lora_layers": 2, "lora_rank": 4}))  # equal: accepted
    load_study(study({"lora_layers": 2}, {"lora_layers": 1}, dpo_from="base"))  # a fresh adapter: its own shape
    load_study(study({"lora_layers": 2}, {"lora_layers": 1, "lora": False}))  # full fine-tuning of the merged model
    demo = Path(__file__).parents[1] / "configs" / "demo.yaml"
    cfg = load_study(demo)  # its DPO leaves the shape out: it continues the SFT adapter the search chose
    assert all("lora_layers" not in cfg.stage_settings("dpo", t) for t in cfg.tasks)
    with pytest.raises(ConfigError, match=r"dpo\.lora_layers: the DPO stage continues the SFT adapter, whose "
                                          r"lora_layers the search chooses"):
        load_study(demo, ["dpo.lora_layers=6"])
