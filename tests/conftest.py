"""Shared fixtures. Tests run offline; the tiny model is built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _tiny_corpus() -> list[str]:
    from clinalign.synthetic import generate
    from clinalign.tasks import all_tasks

    texts: list[str] = []
    for task in all_tasks():
        for rec in generate(task, 60, seed=123):
            texts.append(task.prompt(rec))
            texts.append(task.answer(rec))
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A ~0.5M-parameter Llama with a BPE tokenizer trained on the five tasks' synthetic text."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), _tiny_corpus())


@pytest.fixture(scope="session")
def adapter_run(tiny_model_dir, tmp_path_factory):
    """A training-run folder holding a LoRA adapter with non-zero (trained-like) weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from clinalign.models.loading import load_model

    run = tmp_path_factory.mktemp("run")
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(run / "final")
    (run / "config.yaml").write_text(f"model: {tiny_model_dir}\nstage: dpo\nlora: true\nbeta: 0.1\n")
    return run


@pytest.fixture(scope="session", autouse=True)
def _ledger_in_tmp(tmp_path_factory):
    """Studies run by the tests put their test splits on a temporary ledger, not on the user's
    (study/ledger.py keeps it in the user's cache); a test that sets CLINALIGN_CACHE gets that cache's."""
    from clinalign.study import ledger

    real, tmp = ledger.ledger_dir, tmp_path_factory.mktemp("ledger")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ledger, "ledger_dir", lambda: real() if os.environ.get("CLINALIGN_CACHE") else tmp)
        yield
