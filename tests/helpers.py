"""Helpers several tests share that the package itself has no use for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clinalign.eval.inference import answer_probs, choice_logliks
from clinalign.train.packing import sft_answer_logits, token_logps


def score_choices(model: Any, tokenizer: Any, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                  batch_size: int = 8, max_prompt_tokens: int | None = None) -> list[dict[str, float]]:
    """Per prompt, a probability per allowed answer: the softmax of the answers' log-likelihoods."""
    logliks = choice_logliks(model, tokenizer, prompts, choices, batch_size, max_prompt_tokens)
    return [dict(zip(opts, answer_probs(ll), strict=True)) for opts, ll in zip(choices, logliks, strict=True)]


def count_unparseable(rows: Sequence[dict[str, Any]]) -> int:
    """Generated rows whose text the task could not parse."""
    return sum(1 for r in rows if "text" in r and r["pred"] is None)


def sft_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed answer log-prob of each example of a ``collate_sft`` batch [B] (answer-only projection)."""
    logits, targets, rows = sft_answer_logits(model, batch)
    tok = token_logps(logits, targets)
    return torch.zeros(batch["labels"].size(0), dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
