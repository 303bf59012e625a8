"""Inference for evaluation: closed-set answers scored by log-likelihood, free text generated.

**What is scored.** An allowed answer is scored as the complete assistant reply exactly as training
tokenises it (chat template, answer text, end-of-turn token; see ``train/tokenize.answer_ids``).
Including the end-of-turn token is what makes "no" and "not sure" comparable: "no" cannot win by
being a prefix of "not sure", because "no<end>" must also say the reply ends there. The score of an
answer is the sum of its tokens' log-probs (no length normalisation: each candidate is a whole
reply, and the sum is its probability under the model); the reported probabilities are the softmax
of those sums over the allowed answers.

**How it is computed.** Per item, the prompt and all its allowed answers are packed in ONE sequence
``[prompt | answer 1 | answer 2 | ...]``: each answer's position ids continue from the prompt, and a
4D attention mask lets an answer see the prompt and its own earlier tokens only. So the prompt is
encoded once, however many answers there are, and the result equals one full forward per
prompt + answer. The vocabulary is projected only at the positions that predict answer tokens (a
boolean ``logits_to_keep``), never ``[batch, sequence, vocab]``. Items are batched (right padding,
explicit position ids) after sorting by length, so little is spent on padding. It all goes through
the model's ordinary ``forward``, so a plain model, a peft (LoRA) model and merged weights behave alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch

from clinalign.errors import TaskError
from clinalign.models.layers import PrefixCache
from clinalign.progress import progress
from clinalign.tasks.base import Task
from clinalign.train.packing import answer_logps, pack
from clinalign.train.tokenize import answer_ids, fit_prompt, prompt_ids

Mode = Literal["score", "generate"]


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _prompt(tokenizer: Any, prompt: str, max_prompt_tokens: int | None) -> tuple[list[int], bool]:
    """Prompt ids (chat template applied), cut from the left like training does when too long."""
    ids = prompt_ids(tokenizer, prompt)
    if max_prompt_tokens is None:
        return ids, False
    kept, truncated = fit_prompt(tokenizer, ids, 0, max_prompt_tokens, "left")
    return (kept if kept is not None else ids[-max_prompt_tokens:]), truncated


Variant = Callable[[], AbstractContextManager[Any]]


@torch.inference_mode()
def choice_logliks(model: Any, tokenizer: Any, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                   batch_size: int = 8, max_prompt_tokens: int | None = None) -> list[list[float]]:
    """Per prompt, the summed log-probability of each allowed answer (answer + end-of-turn token)."""
    return shared_choice_logliks(model, {"": nullcontext}, tokenizer, prompts, choices, batch_size,
                                 max_prompt_tokens)[""]


@torch.inference_mode()
def shared_choice_logliks(model: Any, variants: Mapping[str, Variant], tokenizer: Any, prompts: Sequence[str],
                          choices: Sequence[Sequence[str]], batch_size: int = 8,
                          max_prompt_tokens: int | None = None, start_layer: int = 0
                          ) -> dict[str, list[list[float]]]:
    """:func:`choice_logliks` for several variants of one model (``variants[name]()`` is a context that
    sets it up: an adapter switched on, or all switched off for the base model) that differ only from
    decoder layer ``start_layer`` on. Layers below it run once per item (``models/layers.PrefixCache``,
    forgotten after each batch) and their output is reused by every variant: base, SFT and DPO with
    LoRA on the last k layers cost one full pass plus k layers each, instead of three full passes.
    Equal to separate passes (tested)."""
    if len(prompts) != len(choices):
        raise ValueError(f"{len(prompts)} prompts but {len(choices)} choice lists")
    items = []
    for prompt, opts in zip(prompts, choices, strict=True):
        if not opts:
            raise TaskError(f"no allowed answers to score for the prompt {prompt[:60]!r}")
        full = prompt_ids(tokenizer, prompt)
        p, _ = _prompt(tokenizer, prompt, max_prompt_tokens)
        items.append((p, [answer_ids(tokenizer, prompt, full, c) for c in opts]))
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(items)), key=lambda j: -(len(items[j][0]) + sum(map(len, items[j][1]))))
    out: dict[str, list[list[float]]] = {name: [[] for _ in items] for name in variants}
    shared = PrefixCache(model, start_layer) if start_layer else model  # the layers every variant shares, once
    with progress(f"label scoring ({len(variants)} model(s)): items", len(order)) as bar:
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            batch = pack([items[j] for j in chunk], pad).to(device)
            for name, variant in variants.items():
                with variant():
                    sums = answer_logps(shared, batch).tolist()
                for j in chunk:
                    k = len(items[j][1])
                    out[name][j], sums = sums[:k], sums[k:]
            if start_layer:
                shared.clear()
            bar.update(advance=len(chunk))
    return out


def answer_probs(logliks: Sequence[float]) -> list[float]:
    """The probability of each allowed answer: the softmax of their log-likelihoods."""
    top = max(logliks)
    e = [math.exp(x - top) for x in logliks]
    z = sum(e)
    return [x / z for x in e]


def predict_closed_set(task: Task, model: Any, tokenizer: Any, records: Sequence[Any], batch_size: int = 8,
                       mode: Mode = "score", max_prompt_tokens: int | None = None,
                       max_new_tokens: int | None = None) -> list[dict[str, Any]]:
    """Rows {id, gold, pred, probs, logliks}: the most likely allowed answer, never unparseable.

    ``mode="generate"`` instead generates a reply and parses it (rows as :func:`predict_generation`),
    to measure how the model does when it must produce the answer itself.
    """
    if mode == "generate":
        return predict_generation(task, model, tokenizer, records, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens or task.max_new_tokens,
                                  max_prompt_tokens=max_prompt_tokens)
    if mode != "score":
        raise TaskError(f"unknown prediction mode {mode!r}; choose 'score' or 'generate'")
    opts = [tuple(task.choices_for(r) or ()) for r in records]
    prompts = [task.prompt(r) for r in records]
    logliks = choice_logliks(model, tokenizer, prompts, opts, batch_size, max_prompt_tokens)
    return closed_set_rows(task, records, logliks, tokenizer, max_prompt_tokens)


def closed_set_rows(task: Task, records: Sequence[Any], logliks: Sequence[Sequence[float]], tokenizer: Any,
                    max_prompt_tokens: int | None) -> list[dict[str, Any]]:
    """Prediction rows from each record's allowed-answer log-likelihoods (in ``choices_for`` order)."""
    opts = [tuple(task.choices_for(r) or ()) for r in records]
    prompts = [task.prompt(r) for r in records]
    rows = []
    for r, o, ll in zip(records, opts, logliks, strict=True):
        probs = dict(zip(o, answer_probs(ll), strict=True))
        rows.append({"id": r.id, "gold": task.answer(r), "pred": o[max(range(len(o)), key=ll.__getitem__)],
                     "probs": probs, "logliks": dict(zip(o, ll, strict=True))})
    return _mark_cut(rows, tokenizer, prompts, max_prompt_tokens)


def _mark_cut(rows: list[dict[str, Any]], tokenizer: Any, prompts: Sequence[str],
              max_prompt_tokens: int | None) -> list[dict[str, Any]]:
    """Flag the rows whose prompt lost its start to ``max_prompt_tokens`` (``prompt_truncated``), by the
    same rule that cut it, so no number rests on a silently shortened note."""
    if max_prompt_tokens is not None:
        for row, prompt in zip(rows, prompts, strict=True):
            if _prompt(tokenizer, prompt, max_prompt_tokens)[1]:
                row["prompt_truncated"] = True
    return rows


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence and end-of-turn ids: the tokenizer's eos, the model's generation eos (a list for
    Llama-3), and the usual chat end-of-turn tokens where the vocabulary has them."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update([gen_eos] if isinstance(gen_eos, int) else (gen_eos or []))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>") if t in vocab)
    return sorted(ids)


@torch.inference_mode()
def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                     batch_size: int = 8, greedy: bool = True, temperature: float = 1.0, seed: int = 0,
                     max_prompt_tokens: int | None = None, description: str = "generation: prompts") -> list[str]:
    """Batched generation (left padding, prompts sorted by length); the new text of each prompt, in order.

    Greedy by default, so a prediction file is reproducible; sampling uses ``temperature`` alone (no
    top-k/top-p) under ``seed``, without touching the caller's random state. Progress is shown under
    ``description`` (clinalign/progress.py).
    """
    device = _device(model)
    stop = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    encoded = [_prompt(tokenizer, p, max_prompt_tokens)[0] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda j: -len(encoded[j]))
    # explicit values override the model's generation_config (Llama-3 ships do_sample with top_p=0.9)
    sampling = (
        {"temperature": None, "top_k": None, "top_p": None}
        if greedy
        else {"temperature": temperature, "top_k": 0, "top_p": 1.0}
    )
    texts = [""] * len(prompts)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            progress(description, len(order)) as bar:
        torch.manual_seed(seed)
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            ids = [encoded[j] for j in chunk]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
            attn = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
            gen = model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                                 do_sample=not greedy, eos_token_id=stop, pad_token_id=pad, **sampling)
            for j, row in zip(chunk, gen[:, width:], strict=True):
                texts[j] = tokenizer.decode(row, skip_special_tokens=True).strip()
            bar.update(advance=len(chunk))
    return texts


def predict_generation(task: Task, model: Any, tokenizer: Any, records: Sequence[Any], batch_size: int = 8,
                       max_new_tokens: int = 64, greedy: bool = True, temperature: float = 1.0,
                       seed: int = 0, max_prompt_tokens: int | None = None) -> list[dict[str, Any]]:
    """Rows {id, gold, pred, text}: pred is the task's parse of the text, None when unparseable
    (counted by the metrics and the report, never replaced by a guess)."""
    prompts = [task.prompt(r) for r in records]
    texts = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, greedy=greedy,
                             temperature=temperature, seed=seed, max_prompt_tokens=max_prompt_tokens)
    rows = [{"id": r.id, "gold": task.answer(r), "pred": task.parse(t), "text": t}
            for r, t in zip(records, texts, strict=True)]
    return _mark_cut(rows, tokenizer, prompts, max_prompt_tokens)

