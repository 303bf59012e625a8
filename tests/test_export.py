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
