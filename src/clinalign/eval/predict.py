"""Per-item predictions of one model (base directory, SFT/DPO adapter or merged weights) on a task.

Closed-set tasks are scored by log-likelihood of each allowed answer (no parse failures, a
probability per class); free-text tasks are generated and parsed, unparseable answers counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    device: str = "auto",
    dtype: str = "auto",
) -> list[dict[str, Any]]:
    """One row per record. Prompts longer than ``max_prompt_tokens`` lose their start, as in training,
    and their rows say so (``prompt_truncated``). ``device``/``dtype``: models/device.py's policy."""
    import torch

    from clinalign.eval.inference import predict_closed_set, predict_generation
    from clinalign.models.loading import load_model, load_tokenizer, tokenizer_dir

    model = load_model(model_path, dtype=dtype, device=device)
    model.eval()
    tokenizer = load_tokenizer(tokenizer_dir(model_path))
    with torch.inference_mode():
        if task.is_closed_set and mode == "score":
            return predict_closed_set(task, model, tokenizer, list(records), batch_size=batch_size,
                                      max_prompt_tokens=max_prompt_tokens)
        return predict_generation(task, model, tokenizer, list(records), batch_size=batch_size,
                                  max_new_tokens=max_new_tokens or task.max_new_tokens,
                                  max_prompt_tokens=max_prompt_tokens)


def predict_systems(
    task: Task,
    models: Mapping[str, str | Path],
    records: Sequence[Any],
    batch_size: int = 8,
    mode: str = "score",
    max_new_tokens: int | None = None,
    max_prompt_tokens: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> dict[str, list[dict[str, Any]]]:
    """:func:`predict_records` for several systems on the same records, sharing what they share.

    A base model directory and LoRA adapters trained on it (the study's base, SFT and DPO) are loaded
    as ONE network with named adapters; for scored closed-set answers the decoder layers below the
    first adapted one run once per batch for all of them (``shared_choice_logliks``). Any other system
    (merged or fully fine-tuned weights) is predicted on its own. Same rows as separate calls.
    """
    from clinalign.models.loading import adapter_base

    base_dir = next((Path(p) for p in models.values() if adapter_base(p) is None), None)
    shared: dict[str, Path | None] = {}
    if base_dir is not None and task.is_closed_set and mode == "score":
        for name, p in models.items():
            if Path(p).resolve() == base_dir.resolve():
                shared[name] = None
            elif (base := adapter_base(p)) is not None and base.resolve() == base_dir.resolve():
                shared[name] = Path(p)
    out = {}
    if len(shared) > 1:
        out.update(_predict_shared(task, base_dir, shared, records, batch_size, max_prompt_tokens, device, dtype))
    for name, p in models.items():
        if name not in out:
            out[name] = predict_records(task, p, records, batch_size=batch_size, mode=mode,
                                        max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
                                        device=device, dtype=dtype)
    return {name: out[name] for name in models}


def _predict_shared(task: Task, base_dir: Path, systems: Mapping[str, Path | None], records: Sequence[Any],
                    batch_size: int, max_prompt_tokens: int | None, device: str = "auto", dtype: str = "auto"
                    ) -> dict[str, list[dict[str, Any]]]:
    from contextlib import nullcontext

    import torch
    from peft import PeftModel

    from clinalign.eval.inference import closed_set_rows, shared_choice_logliks
    from clinalign.models.loading import adapter_config, load_model, load_tokenizer

    model: Any = load_model(base_dir, dtype=dtype, device=device)
    tokenizer = load_tokenizer(base_dir)
    adapters = {n: p for n, p in systems.items() if p is not None}
    first = model.config.num_hidden_layers
    for i, (name, path) in enumerate(adapters.items()):
        model = (PeftModel.from_pretrained(model, str(path), adapter_name=name) if i == 0
                 else (model.load_adapter(str(path), adapter_name=name), model)[1])
        layers = (adapter_config(path) or {}).get("layers_to_transform")
        first = min(first, min(layers) if isinstance(layers, list) and layers else 0)
    model.eval()

    def variant(name: str) -> Any:
        if systems[name] is None:
            return model.disable_adapter  # the base model: every adapter off

        def on() -> Any:
            model.set_adapter(name)
            return nullcontext()

        return on

    opts = [tuple(task.choices_for(r) or ()) for r in records]
    with torch.inference_mode():
        logliks = shared_choice_logliks(model, {n: variant(n) for n in systems}, tokenizer,
                                        [task.prompt(r) for r in records], opts, batch_size, max_prompt_tokens,
                                        start_layer=first)
    return {n: closed_set_rows(task, records, ll, tokenizer, max_prompt_tokens) for n, ll in logliks.items()}
