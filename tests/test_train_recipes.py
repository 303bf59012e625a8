"""`clinalign train sft|dpo` end to end on synthetic uti_classification data with the tiny model."""

from __future__ import annotations

import json

import pytest
import yaml

from clinalign.cli import run
from clinalign.synthetic import generate


@pytest.fixture(scope="module")
def uti_records(tmp_path_factory):
    from clinalign.data.io import write_jsonl
    from clinalign.tasks import get_task

    path = tmp_path_factory.mktemp("uti") / "uti.jsonl"
    write_jsonl(path, generate(get_task("uti_classification"), 48, seed=3))
    return path


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow  # trains until the preferences are learnt
def test_sft_then_dpo_learns_the_preferences(tiny_model_dir, uti_records, tmp_path):
    common = ["--model", str(tiny_model_dir), "--data", str(uti_records), "--task", "uti_classification",
              "--batch-size", "8", "--no-lora", "max_length=256", "progress=false"]
    assert run(["train", "sft", *common, "--out", str(tmp_path / "sft"), "--epochs", "1", "--lr", "1e-3"]) == 0
    sft_final = tmp_path / "sft" / "final"
    assert (sft_final / "config.json").is_file() and list(sft_final.glob("*.safetensors"))
    sft_rows = _rows(tmp_path / "sft" / "metrics.jsonl")
    assert [r["step"] for r in sft_rows] == list(range(1, 7))
    assert sft_rows[-1]["loss"] < sft_rows[0]["loss"]

    out = tmp_path / "dpo"
    assert run(["train", "dpo", *common, "--out", str(out), "--init-from", str(sft_final), "--epochs", "12",
                "--lr", "3e-3", "--beta", "0.5", "--save-every", "30"]) == 0
    rows = _rows(out / "metrics.jsonl")
    assert set(rows[0]) == {"step", "epoch", "loss", "lr", "tokens_per_s", "reward_margin", "reward_accuracy",
                            "chosen_reward", "rejected_reward"}
    first, last_epoch = rows[0], rows[-6:]  # 48 pairs / batch 8 = 6 steps per epoch: the last epoch
    assert first["reward_accuracy"] < 0.9
    assert sum(r["reward_accuracy"] for r in last_epoch) / 6 > 0.9
    assert last_epoch[-1]["reward_margin"] > 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["stage"] == "dpo" and saved["beta"] == 0.5 and saved["init_from"] == str(sft_final)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-30", "step-60", "step-72"]
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_lora_dpo_on_top_of_a_lora_sft_adapter(tiny_model_dir, uti_records, tmp_path):
    """The DPO output is one adapter on the original base (loadable alone), trained from the SFT adapter."""
    from safetensors.torch import load_file

    common = ["--model", str(tiny_model_dir), "--data", str(uti_records), "--task", "uti_classification",
              "--batch-size", "8", "--max-steps", "2", "max_length=256", "progress=false", "lora_rank=4", "lora_dropout=0"]
    assert run(["train", "sft", *common, "--out", str(tmp_path / "sft"), "--lr", "1e-2"]) == 0
    sft = tmp_path / "sft" / "final"
    assert run(["train", "dpo", *common, "--out", str(tmp_path / "dpo"), "--init-from", str(sft)]) == 0
    dpo = tmp_path / "dpo" / "final"
    cfg = json.loads((dpo / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir) and cfg["r"] == 4
    a, b = load_file(str(sft / "adapter_model.safetensors")), load_file(str(dpo / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert any(not (a[k] == b[k]).all() for k in a)  # DPO kept training the SFT adapter
    # the reference was the SFT policy: on the first step, before any update, rewards are exactly 0
    first = _rows(tmp_path / "dpo" / "metrics.jsonl")[0]
    assert abs(first["chosen_reward"]) < 1e-5 and abs(first["rejected_reward"]) < 1e-5


def test_a_stage_continuing_an_adapter_trains_with_its_own_lora_dropout(tiny_model_dir, adapter_run):
    """Rank and layers are the adapter's; dropout is the stage's (DPO from SFT used to inherit SFT's)."""
    from clinalign.train.config import TrainConfig
    from clinalign.train.loop import load_policy

    def dropouts(p: float) -> set:
        model = load_policy(TrainConfig(stage="dpo", model=str(tiny_model_dir), init_from=str(adapter_run / "final"),
                                        lora_dropout=p, device="cpu", dtype="float32"), str(tiny_model_dir))
        mods = [m for name, m in model.named_modules() if ".lora_dropout." in name]
        assert mods and any(w.requires_grad for w in model.parameters())
        return {(type(m).__name__, getattr(m, "p", None)) for m in mods}

    assert json.loads((adapter_run / "final" / "adapter_config.json").read_text())["lora_dropout"] == 0.0
    assert dropouts(0.3) == {("Dropout", 0.3)}
    assert dropouts(0.0) == {("Identity", None)}


def test_trl_style_pair_file_and_overrides(tiny_model_dir, tmp_path):
    from clinalign.data.io import write_jsonl

    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, [{"prompt": f"Is {i} even?", "chosen": "yes" if i % 2 == 0 else "no",
                        "rejected": "no" if i % 2 == 0 else "yes"} for i in range(8)])
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "batch_size": 2, "max_steps": 2, "lora": True,
                                   "progress": False}))
    out = tmp_path / "out"
    assert run(["train", "dpo", "--config", str(cfg), "--data", str(data), "--out", str(out), "loss=ipo",
                "lora_rank=2", "--batch-size", "4"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["loss"], saved["lora_rank"], saved["batch_size"]) == ("ipo", 2, 4)  # flag beats file
    assert (out / "final" / "adapter_config.json").is_file()
    assert len(_rows(out / "metrics.jsonl")) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["unknown_key=3"], "unknown_key: unknown config key"),
        (["--loss", "nope"], "unknown loss 'nope'"),
        (["--model", "/nonexistent/model"], "model '/nonexistent/model' not found"),
        (["--data", "{bad}"], "{bad}:2: rejected: missing field"),
        (["parallel=fsdp3"], "parallel: Input should be 'none', 'ddp' or 'fsdp2'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tiny_model_dir, tmp_path, capsys, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    args = [a.replace("{bad}", str(bad)) for a in args]
    message = message.replace("{bad}", str(bad))
    base = {"--model": str(tiny_model_dir), "--data": str(bad)}
    for flag in ("--model", "--data"):
        if flag not in args:
            args += [flag, base[flag] if flag == "--model" else str(bad).replace("bad", "good")]
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 4)
    out = tmp_path / "out"
    assert run(["train", "dpo", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_refuses_to_overwrite_a_finished_run_without_resume(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "p", "completion": "a"}\n' * 4)
    args = ["train", "sft", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "o"),
            "--batch-size", "2", "--max-steps", "1", "progress=false"]
    assert run(args) == 0
    assert run(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert run([*args, "--resume"]) == 0  # nothing left to do: the last checkpoint is the end


@pytest.mark.parametrize("name", ["train_sft.yaml", "train_dpo.yaml"])
def test_shipped_configs_are_valid(name):
    from pathlib import Path

    from clinalign.train.config import build_config

    cfg = build_config(Path(__file__).parent.parent / "configs" / name, ["lr=0.5"])
    assert cfg.lr == 0.5 and cfg.model == "default"


@pytest.mark.parametrize("lora", ["--lora", "--no-lora"])
def test_on_the_fly_reference_equals_the_precomputed_one(tiny_model_dir, uti_records, tmp_path, lora):
    """Adapters disabled (LoRA) or a frozen copy (full) each step gives what the cache gave."""
    common = ["train", "dpo", "--model", str(tiny_model_dir), "--data", str(uti_records), "--task",
              "uti_classification", "--batch-size", "4", "--max-steps", "3", "--lr", "1e-3", lora,
              "max_length=256", "progress=false", "lora_dropout=0", "lora_rank=4"]
    assert run([*common, "--out", str(tmp_path / "cached")]) == 0
    assert run([*common, "--out", str(tmp_path / "fly"), "precompute_ref=false"]) == 0
    assert (tmp_path / "cached" / "ref_logps").is_dir() and not (tmp_path / "fly" / "ref_logps").exists()
    a, b = _rows(tmp_path / "cached" / "metrics.jsonl"), _rows(tmp_path / "fly" / "metrics.jsonl")
    assert abs(a[-1]["reward_margin"]) > 0
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "chosen_reward", "rejected_reward"):
            assert abs(ra[k] - rb[k]) < 1e-5, (k, ra[k], rb[k])


@pytest.mark.parametrize(("loss", "extra"), [("simpo", ["--beta", "2.0", "simpo_gamma=0.5"]),
                                             ("orpo", ["--beta", "0.5"]), ("kto", ["--beta", "0.5"])])
@pytest.mark.slow  # trains until the preferences are learnt
def test_simpo_orpo_kto_learn_the_preferences(tiny_model_dir, uti_records, tmp_path, loss, extra):
    """Each new loss raises reward accuracy on the fixture pairs; the reference-free ones never
    compute (or cache) reference log-probs. KTO reads the task's pairs as desirable/undesirable rows."""
    out = tmp_path / loss
    assert run(["train", "dpo", "--model", str(tiny_model_dir), "--data", str(uti_records), "--task",
                "uti_classification", "--batch-size", "8", "--no-lora", "max_length=256", "progress=false",
                "--out", str(out), "--epochs", "6", "--lr", "3e-3", "--loss", loss, *extra]) == 0
    rows = _rows(out / "metrics.jsonl")
    per_epoch = len(rows) // 6
    assert per_epoch == (12 if loss == "kto" else 6)  # KTO: 48 pairs -> 96 rows
    first, last = rows[:per_epoch], rows[-per_epoch:]
    acc = [sum(r["reward_accuracy"] for r in e) / per_epoch for e in (first, last)]
    assert acc[1] > acc[0] + 0.2 and acc[1] > 0.8, acc
    assert (out / "ref_logps").is_dir() == (loss == "kto")


def test_kto_reads_trls_unpaired_format(tiny_model_dir, tmp_path):
    from clinalign.data.io import write_jsonl
    from clinalign.errors import DataError
    from clinalign.train.data import kto_as_pairs, load_kto_rows

    data = tmp_path / "kto.jsonl"
    rows = [{"prompt": f"Is {i} even?", "completion": c, "label": (c == "yes") == (i % 2 == 0)}
            for i in range(4) for c in ("yes", "no")]
    write_jsonl(data, rows)
    assert load_kto_rows(data) == rows
    packed = kto_as_pairs(rows)
    assert [p["chosen"] for p in packed] == [r["completion"] for r in rows]
    assert [p["rejected"] for p in packed] == [rows[(i + 4) % 8]["completion"] for i in range(8)]
    out = tmp_path / "out"
    assert run(["train", "dpo", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                "--loss", "kto", "--batch-size", "4", "--max-steps", "2", "progress=false"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["loss"] == "kto"
    assert len(_rows(out / "metrics.jsonl")) == 2
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "a"}])
    with pytest.raises(DataError, match="bad.jsonl:1: label"):
        load_kto_rows(tmp_path / "bad.jsonl")
