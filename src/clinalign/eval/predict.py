"""Per-item predictions of one model (base directory, SFT/DPO adapter or merged weights) on a task.

Closed-set tasks are scored by log-likelihood of each allowed answer (no parse failures, a
probability per class); free-text tasks are generated and parsed, unparseable answers counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clinalign.tasks.base import Task


def predict_records(
    task: Task,
    model_path: str | Path,
    records: Sequence[Any],
    batch_size: int = 8,
    mode: str = "score",
    max_new_tokens: int | None = None,
    max_prompt_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """One row per record. Prompts longer than ``max_prompt_tokens`` lose their start, as in training,
    and their rows say so (``prompt_truncated``)."""
    import torch

    from clinalign.eval.inference import predict_closed_set, predict_generation
    from clinalign.models.loading import load_model, load_tokenizer

    model = load_model(model_path)
    model.eval()
    tokenizer = load_tokenizer(_tokenizer_dir(model_path))
    with torch.inference_mode():
        if task.is_closed_set and mode == "score":
            return predict_closed_set(task, model, tokenizer, list(records), batch_size=batch_size,
                                      max_prompt_tokens=max_prompt_tokens)
        return predict_generation(task, model, tokenizer, list(records), batch_size=batch_size,
                                  max_new_tokens=max_new_tokens or task.max_new_tokens,
                                  max_prompt_tokens=max_prompt_tokens)


def _tokenizer_dir(model_path: str | Path) -> Path:
    """Adapters saved without a tokenizer use their base model's."""
    p = Path(model_path)
    if (p / "tokenizer_config.json").is_file():
        return p
    cfg = p / "adapter_config.json"
    if cfg.is_file():
        import json

        return Path(json.loads(cfg.read_text())["base_model_name_or_path"])
    return p
