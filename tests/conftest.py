"""Shared fixtures. Tests run offline; the tiny model is built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _tiny_corpus() -> list[str]:
    from clinalign.tasks import all_tasks

    texts: list[str] = []
    for task in all_tasks():
        for rec in task.generate(60, seed=123):
            texts.append(task.prompt(rec))
            texts.append(task.answer(rec))
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A ~0.5M-parameter Llama with a BPE tokenizer trained on the five tasks' synthetic text."""
    from clinalign.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-llama")
    try:
        texts = _tiny_corpus()
    except Exception:  # tasks not importable yet: fall back to generic clinical text
        texts = ["patient with dysuria and fever, urine culture positive"] * 50
    return build_tiny_model(out, texts)
