"""Helpers several tests share that the package itself has no use for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from clinalign.config import validate
from clinalign.eval.inference import answer_probs, choice_logliks
from clinalign.eval.stats import IndexMetric, bootstrap_systems
from clinalign.train.config import FLAT_LOSS_KEYS
from clinalign.train.losses import DPOOutput, Loss, loss_class
from clinalign.train.packing import sft_answer_logits, token_logps


def score_choices(model: Any, tokenizer: Any, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                  batch_size: int = 8, max_prompt_tokens: int | None = None) -> list[dict[str, float]]:
    """Per prompt, a probability per allowed answer: the softmax of the answers' log-likelihoods."""
    logliks = choice_logliks(model, tokenizer, prompts, choices, batch_size, max_prompt_tokens)
    return [dict(zip(opts, answer_probs(ll), strict=True)) for opts, ll in zip(choices, logliks, strict=True)]


def count_unparseable(rows: Sequence[dict[str, Any]]) -> int:
    """Generated rows whose text the task could not parse."""
    return sum(1 for r in rows if "text" in r and r["pred"] is None)


def make_loss(loss_type: str = "sigmoid", **knobs: Any) -> Loss:
    """A registered loss with knobs given by their flat config names (simpo_gamma=...), checked as a
    config would be: a bad name or value is a ConfigError."""
    cls = loss_class(loss_type, key="DPO loss_type")
    return validate(cls, {"type": loss_type, **{FLAT_LOSS_KEYS.get(k, k): v for k, v in knobs.items()}}, "loss")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor | None, ref_rejected_logps: torch.Tensor | None, *,
             loss_type: str = "sigmoid", chosen_nll: torch.Tensor | None = None,
             chosen_lengths: torch.Tensor | None = None, rejected_lengths: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, **knobs: Any) -> DPOOutput:
    """A registered loss as one function call on plain tensors (:func:`make_loss`, then called)."""
    return make_loss(loss_type, **knobs)(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                         ref_rejected_logps, chosen_nll=chosen_nll, chosen_lengths=chosen_lengths,
                                         rejected_lengths=rejected_lengths, labels=labels)


def sft_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed answer log-prob of each example of a ``collate_sft`` batch [B] (answer-only projection)."""
    logits, targets, rows = sft_answer_logits(model, batch)
    tok = token_logps(logits, targets)
    return torch.zeros(batch["labels"].size(0), dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)


def nudge_weights(model_dir: Path) -> None:
    """Scale one weight matrix of a saved model by 1.01 and save it again: the same file size, other
    bytes, so an identity that looked at sizes or dates only could not tell the two apart."""
    from clinalign.models.loading import load_model

    weights = model_dir / "model.safetensors"
    size = weights.stat().st_size
    model = load_model(model_dir)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.01)
    model.save_pretrained(model_dir)
    assert weights.stat().st_size == size


def bootstrap_ci(metric_fn: IndexMetric, n_items: int, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap ``1 - alpha`` interval of one metric: what `compare_systems` reports as a
    system's CI, computed for that system alone."""
    return bootstrap_systems({"": metric_fn}, n_items, n_boot, seed, alpha)[""].ci


def uti_stage_files(d: Path, n: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """``d/sft.jsonl`` and ``d/dpo.jsonl`` from ``n`` generated UTI records (the trainers' own inputs);
    returns the rows written, by stage."""
    from clinalign.data.io import write_jsonl
    from clinalign.data.pairs import preference_pairs, sft_examples
    from clinalign.synthetic import generate
    from clinalign.tasks import get_task

    task = get_task("uti_classification")
    records = generate(task, n, seed=seed)
    rows = {"sft": sft_examples(task, records), "dpo": preference_pairs(task, records, seed=0)}
    for name, stage_rows in rows.items():
        write_jsonl(d / f"{name}.jsonl", stage_rows)
    return rows


def sigterm_on_call(monkeypatch: Any, module: Any, name: str, when: int) -> None:
    """Wrap ``module.name``: its ``when``-th call sends this process SIGTERM first (as Slurm would, mid-work)."""
    import os
    import signal

    real, calls = getattr(module, name), [0]

    def wrapped(*a, **kw):
        calls[0] += 1
        if calls[0] == when:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, wrapped)

