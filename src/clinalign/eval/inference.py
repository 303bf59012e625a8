"""Inference for evaluation: closed-set answers scored by log-likelihood, free text generated.

Scoring uses exactly the tokenisation training uses (chat template, answer + end-of-turn token), so
"yes" is scored as the complete reply "yes<end>" and cannot win by being a prefix of "yes, but...".
The prompt is encoded once per item; every allowed answer continues from its key/value cache, and
the vocabulary is projected only at the positions that predict answer tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from clinalign.tasks.base import Task
from clinalign.train.batching import _answer_ids, _prompt_ids


def _expand_cache(cache: Any, k: int) -> Any:
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(k)
        return cache
    return tuple(tuple(t.repeat_interleave(k, dim=0) for t in layer) for layer in cache)


@torch.inference_mode()
def choice_logliks(model: Any, tokenizer: Any, prompt: str, choices: Sequence[str]) -> list[float]:
    """Summed log-probability of each complete answer given the prompt (one prompt forward)."""
    p_ids = _prompt_ids(tokenizer, prompt)
    answers = [_answer_ids(tokenizer, prompt, p_ids, c) for c in choices]
    device = next(model.parameters()).device
    prompt_t = torch.tensor([p_ids], device=device)
    out = model(input_ids=prompt_t, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each answer's first token
    k, longest = len(answers), max(len(a) for a in answers)
    scores = [float(first[a[0]]) for a in answers]
    if longest == 1:
        return scores
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rest = torch.full((k, longest - 1), pad, device=device)
    mask = torch.zeros((k, longest - 1), dtype=torch.long, device=device)
    for i, a in enumerate(answers):  # feed all but the last answer token; they predict the next ones
        rest[i, : len(a) - 1] = torch.tensor(a[:-1], device=device)
        mask[i, : len(a) - 1] = 1
    cache = _expand_cache(out.past_key_values, k)
    attn = torch.cat([torch.ones((k, len(p_ids)), dtype=torch.long, device=device), mask], dim=1)
    pos = torch.arange(len(p_ids), len(p_ids) + longest - 1, device=device).expand(k, -1)
    logits = model(input_ids=rest, past_key_values=cache, attention_mask=attn, position_ids=pos,
                   use_cache=False).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    for i, a in enumerate(answers):
        for j in range(1, len(a)):
            scores[i] += float(logp[i, j - 1, a[j]])
    return scores


def score_choices(model: Any, tokenizer: Any, prompts: Sequence[str],
                  choices: Sequence[Sequence[str]]) -> list[dict[str, float]]:
    """Per prompt, a probability per allowed answer (softmax over the answers' log-likelihoods)."""
    out = []
    for prompt, opts in zip(prompts, choices, strict=True):
        ll = choice_logliks(model, tokenizer, prompt, opts)
        top = max(ll)
        z = sum(math.exp(x - top) for x in ll)
        out.append({c: math.exp(x - top) / z for c, x in zip(opts, ll, strict=True)})
    return out


def predict_closed_set(task: Task, model: Any, tokenizer: Any, records: Sequence[Any],
                       batch_size: int = 8) -> list[dict[str, Any]]:
    """Rows {id, gold, pred, probs}: the most likely allowed answer, never unparseable."""
    probs = score_choices(model, tokenizer, [task.prompt(r) for r in records],
                          [task.choices_for(r) or () for r in records])
    return [{"id": r.id, "gold": task.answer(r), "pred": max(p, key=p.get), "probs": p}
            for r, p in zip(records, probs, strict=True)]


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                     batch_size: int = 8, greedy: bool = True, temperature: float = 1.0,
                     seed: int = 0) -> list[str]:
    """Batched generation with left padding; returns only the new text of each prompt."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = [t for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
            if isinstance(t, int) and t >= 0]
    texts: list[str] = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        ids = [_prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        attn = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        gen = model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                             do_sample=not greedy, temperature=temperature if not greedy else None,
                             top_p=None, top_k=None, eos_token_id=stop, pad_token_id=pad)
        for row in gen[:, width:]:
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


def predict_generation(task: Task, model: Any, tokenizer: Any, records: Sequence[Any], batch_size: int = 8,
                       max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """Rows {id, gold, pred, text}: pred is the task's parse of the text, None when unparseable."""
    texts = generate_answers(model, tokenizer, [task.prompt(r) for r in records], max_new_tokens, batch_size)
    return [{"id": r.id, "gold": task.answer(r), "pred": task.parse(t), "text": t}
            for r, t in zip(records, texts, strict=True)]
