"""On-policy preference pairs: the model's own samples, judged by the task (``Task.judge``).

Off-policy rejected answers (a builder's wrong label or perturbed summary) are ones the model may
never produce; DPO learns most from the mistakes the policy actually makes. Per prompt we sample K
answers (batched, seeded, through ``eval/inference.generate_answers``) and judge each:

- closed-set tasks: chosen = the gold answer, rejected = the model's most probable *wrong* answer by
  label scoring (``eval/inference.choice_logliks``), so it is wrong by the judge by construction; the
  samples' judged accuracy is recorded (how often the policy is already right);
- generation tasks: chosen = the best-judged sample, rejected = the worst; prompts whose samples all
  tie (or whose extremes are the same text) give no pair.

Every pair carries its provenance: the model fingerprint, the sample scores, seed and temperature.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from clinalign.errors import ConfigError
from clinalign.tasks.base import Task

STRATEGY = "on_policy"


def sample_pairs(task: Task, model: Any, tokenizer: Any, records: Sequence[Any], *, samples: int,
                 temperature: float = 1.0, seed: int = 0, batch_size: int = 8,
                 max_new_tokens: int | None = None, max_prompt_tokens: int | None = None,
                 fingerprint: str = "") -> tuple[list[dict[str, Any]], dict[str, float]]:
    """(pairs, stats); stats: samples judged correct/mean score, samples per second, pairs, skipped ties.
    Deterministic for a seed: sampling runs under ``seed`` without touching the caller's RNG."""
    from clinalign.eval.inference import choice_logliks, generate_answers

    if samples < 1 or (not task.is_closed_set and samples < 2):
        raise ConfigError("samples must be >= 1 (>= 2 for a generation task: best vs worst)")
    prompts = [task.prompt(r) for r in records]
    t0 = time.perf_counter()
    texts = generate_answers(model, tokenizer, [p for p in prompts for _ in range(samples)],
                             max_new_tokens or task.max_new_tokens, batch_size, greedy=False,
                             temperature=temperature, seed=seed, max_prompt_tokens=max_prompt_tokens,
                             description=f"on-policy sampling ({samples} per prompt): samples")
    elapsed = time.perf_counter() - t0
    per_prompt = [texts[i * samples:(i + 1) * samples] for i in range(len(records))]
    scores = [[task.judge(r, t) for t in ts] for r, ts in zip(records, per_prompt, strict=True)]
    logliks = (choice_logliks(model, tokenizer, prompts, [task.choices_for(r) for r in records], batch_size,
                              max_prompt_tokens) if task.is_closed_set else None)
    pairs: list[dict[str, Any]] = []
    ties = 0
    for i, rec in enumerate(records):
        if logliks is not None:
            gold, options = task.answer(rec), task.choices_for(rec)
            wrong = [(ll, c) for ll, c in zip(logliks[i], options, strict=True) if c != gold]
            chosen, rejected = gold, max(wrong)[1]
            c_score, r_score = 1.0, task.judge(rec, rejected)
        else:
            best = max(range(samples), key=lambda k: scores[i][k])
            worst = min(range(samples), key=lambda k: scores[i][k])
            chosen, rejected = per_prompt[i][best], per_prompt[i][worst]
            c_score, r_score = scores[i][best], scores[i][worst]
            if c_score == r_score or chosen == rejected or not chosen or not rejected:
                ties += 1
                continue
        pairs.append({"id": f"{rec.id}:{STRATEGY}", "prompt": prompts[i], "chosen": chosen, "rejected": rejected,
                      "strategy": STRATEGY, "provenance": {
                          "model": fingerprint, "samples": samples, "temperature": temperature, "seed": seed,
                          "sample_scores": scores[i], "chosen_score": c_score, "rejected_score": r_score}})
    flat = [s for row in scores for s in row]
    stats = {"records": len(records), "samples": len(flat), "pairs": len(pairs), "ties_skipped": ties,
             "mean_score": sum(flat) / len(flat) if flat else float("nan"),
             "samples_per_s": len(flat) / elapsed if elapsed > 0 else float("inf")}
    if task.is_closed_set:
        stats["sample_accuracy"] = stats["mean_score"]
    return pairs, stats


def load_policy(run_or_model: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, fingerprint) for a training run directory (its ``final/``), an adapter or
    model directory, or a model name that ``resolve_model_path`` knows ("default")."""
    from pathlib import Path

    from clinalign.hashing import model_fingerprint
    from clinalign.models.loading import load_model, load_tokenizer, resolve_model_path, tokenizer_dir

    p = Path(run_or_model)
    if (p / "final").is_dir():
        p = p / "final"
    path = str(p) if p.is_dir() else resolve_model_path(run_or_model)
    model = load_model(path)
    model.eval()
    return model, load_tokenizer(tokenizer_dir(path)), model_fingerprint(path)
