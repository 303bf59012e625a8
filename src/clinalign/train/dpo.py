"""DPO recipe (and its variants: IPO, hinge, conservative, RPO, SimPO, ORPO, KTO; train/losses.py):
raise the policy's log-likelihood margin of the chosen over the rejected answer, relative to a frozen
reference. Reference-free losses (SimPO, ORPO) skip the reference pass entirely. KTO trains on unpaired
``{prompt, completion, label}`` rows (or pairs split in two), each packed as a pair with another row's
answer, whose log-ratio is KTO's KL estimate (train/data.py:kto_as_pairs).

The reference is the policy as it was before training: the base model (fresh LoRA, whose adapters
start at zero, or full fine-tuning) or the SFT model (``init_from`` a previous run). By default its
log-probs are computed once before training and cached in ``OUT/ref_logps/`` (one forward per pair in
all, not one per step). With ``precompute_ref: false`` they are computed each step: with LoRA from
the same network with its adapters disabled (one copy of the weights), with full fine-tuning from a
frozen copy.

The loss is the mean over the pairs of the *global* batch: each process divides its pairs' summed
loss by (batch_size x grad_accum), and DDP/FSDP average the gradients over processes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clinalign.errors import ConfigError
from clinalign.hashing import model_fingerprint
from clinalign.models.device import resolve
from clinalign.models.loading import is_adapter
from clinalign.train import distributed, loop, preempt
from clinalign.train.config import TrainConfig, continued_adapter
from clinalign.train.data import kto_as_pairs, load_kto_rows, load_rows, tokenize_rows
from clinalign.train.losses import DPOOutput
from clinalign.train.packing import PairBatch, collate_pairs, pair_logps
from clinalign.train.ref_cache import (
    Live,
    Precomputed,
    Reference,
    cached_reference_logps,
    compute_reference_logps,
)
from clinalign.train.tokenize import PairExample

#: what a step sums over its pairs (all in metrics.jsonl); the progress bar shows the first two
METRICS = ("reward_margin", "reward_accuracy", "chosen_reward", "rejected_reward")
SHOWN = METRICS[:2]
#: the validation scores of held-out pairs (``_evaluate``) and which way each improves
VAL_SCORES = {"val_loss": False, "val_reward_accuracy": True, "val_reward_margin": True}

#: (pair indices, their packed batch, where their reference log-probs come from, KTO labels) -> the loss
Forward = Callable[[list[int], PairBatch, Reference | None, torch.Tensor | None], DPOOutput]


def run(cfg: TrainConfig, validation: loop.Validation | None = None) -> Path:
    """Train; ``validation`` (a caller's held-out scores, e.g. the study's task metric) is evaluated
    beside the loss and reward accuracy/margin of ``val_data``."""
    from clinalign.models.loading import resolve_model_path

    # 1. inputs, all checked before anything is written
    out = loop.check_out(cfg)
    if not cfg.data:
        raise ConfigError("no training data: give --data FILE (prompt/chosen/rejected, or records with --task)")
    loss_fn = cfg.loss  # with its knobs, checked when the config was loaded
    if loss_fn.reference and not cfg.precompute_ref and cfg.lora and is_adapter(cfg.init_from):
        raise ConfigError("precompute_ref: false with LoRA init_from an adapter is not supported "
                          "(the reference would be the base, not the SFT model); use precompute_ref: true")
    model_path = resolve_model_path(cfg.model)
    tokenizer = loop.load_tokenizer(cfg, model_path)  # init_from checked here
    cfg = continued_adapter(cfg)  # init_from an adapter: its rank, alpha, layers (another value is refused)
    pairs = _Pairs.load(cfg, cfg.data, tokenizer)
    val = _Pairs.load(cfg, cfg.val_data, tokenizer) if cfg.val_data else None
    pad = tokenizer.pad_token_id
    info = distributed.init(cfg.parallel, cfg.backend, cfg.device)
    try:
        # 2. policy and the run's length and resume point (checked before anything is written); then OUT
        loop.seed_everything(cfg.seed)
        policy = loop.load_policy(cfg, model_path).to(info.device)
        # validation (optional), against the same reference (the initial policy; val_ref and forward are
        # bound below, before the first evaluation), and the caller's scores
        validations = [] if val is None else [loop.Validation(
            lambda *_: _evaluate(model, forward, val, val_ref, cfg.batch_size, pad, info.device), VAL_SCORES)]
        validations += [validation] if validation is not None else []
        start = loop.plan(cfg, info, out, len(pairs.examples), validations)
        loop.prepare_out(cfg, info, out, {"pairs": len(pairs.examples), **pairs.counts})
        # the reference (None for SimPO / ORPO: no reference pass, no cache, no copy); validation is
        # always against the initial policy, computed once before the first step
        preempt.phase("the reference pass", kept=f"{out / 'config.yaml'} is written; the reference log-probs "
                      f"are kept in {out / 'ref_logps'} only once the pass is complete (it is not checkpointed: "
                      "--resume starts an interrupted pass again from its first pair)")
        val_ref: Reference | None = None
        if val is not None and loss_fn.reference:
            val_ref = Precomputed(*compute_reference_logps(policy, val.examples, pad_id=pad, batch_size=cfg.batch_size,
                                                           device=info.device, progress=cfg.progress))
        reference = (_reference(cfg, out, policy, pairs.examples, pad, info.device, model_path)
                     if loss_fn.reference else None)
        model = distributed.wrap(policy, cfg.parallel, info)

        def forward(idx: list[int], batch: PairBatch, ref: Reference | None, labels: torch.Tensor | None) -> DPOOutput:
            """The policy's and the reference's log-probs of a batch, and its loss: every step and evaluation."""
            ref_c, ref_r = ref.logps(idx, batch) if ref is not None else (None, None)
            chosen, rejected, nll = pair_logps(model, batch)
            return loss_fn(chosen, rejected, ref_c, ref_r, chosen_nll=nll, chosen_lengths=batch.chosen_lengths,
                           rejected_lengths=batch.rejected_lengths, labels=labels)

        # 3. one optimizer step: grad_accum micro-batches, mean over the pairs of the global batch
        def step(micro: list[list[int]]) -> loop.StepStats:
            denom = cfg.batch_size * cfg.grad_accum
            loss_sum, tokens = 0.0, 0
            sums = dict.fromkeys(METRICS, 0.0)
            for idx in micro:
                batch, labels = pairs.batch(idx, pad, info.device)
                out_ = forward(idx, batch, reference, labels)
                (out_.losses.sum() / denom).backward()
                loss_sum += float(out_.losses.detach().sum())
                tokens += batch.num_tokens
                margin = out_.chosen_rewards - out_.rejected_rewards
                sums["reward_margin"] += float(margin.sum())
                sums["reward_accuracy"] += float((margin > 0).float().sum())
                sums["chosen_reward"] += float(out_.chosen_rewards.sum())
                sums["rejected_reward"] += float(out_.rejected_rewards.sum())
            n = sum(len(i) for i in micro)
            return loop.StepStats(loss_sum, float(n), tokens, sums, n)

        # 4. train
        return loop.train(cfg, info, out, model, tokenizer, start, step, SHOWN, validations=validations)
    finally:
        distributed.shutdown()


@dataclass
class _Pairs:
    """Tokenised pairs of a data file, with KTO's labels (True = desirable answer) for unpaired rows."""

    examples: list[PairExample]
    labels: torch.Tensor | None
    counts: dict[str, int]  # prompts truncated, examples dropped

    @classmethod
    def load(cls, cfg: TrainConfig, path: str, tokenizer: Any) -> _Pairs:
        if cfg.loss.unpaired:
            kto = load_kto_rows(path, task=cfg.task, pairs=cfg.pairs, seed=cfg.seed)
            tok = tokenize_rows("dpo", kto_as_pairs(kto), tokenizer, cfg.max_length, cfg.truncation)
            labels = torch.tensor([kto[i]["label"] for i in tok.kept])
        else:
            rows = load_rows("dpo", path, task=cfg.task, pairs=cfg.pairs, seed=cfg.seed)
            tok, labels = tokenize_rows("dpo", rows, tokenizer, cfg.max_length, cfg.truncation), None
        return cls(tok.examples, labels, {"truncated": tok.truncated, "dropped": tok.dropped})

    def batch(self, idx: Sequence[int], pad: int, device: Any) -> tuple[PairBatch, torch.Tensor | None]:
        """The pairs ``idx`` packed, and their labels, on ``device``."""
        labels = self.labels[list(idx)].to(device) if self.labels is not None else None
        return collate_pairs([self.examples[i] for i in idx], pad).to(device), labels


def _evaluate(model: torch.nn.Module, forward: Forward, val: _Pairs, ref: Reference | None, batch_size: int,
              pad: int, device: Any) -> dict[str, float]:
    """Loss, reward accuracy and reward margin on held-out pairs (the loop puts the model in eval mode)."""
    loss = acc = margin = 0.0
    for i in range(0, len(val.examples), batch_size):
        idx = list(range(i, min(i + batch_size, len(val.examples))))
        batch, labels = val.batch(idx, pad, device)
        o = forward(idx, batch, ref, labels)
        m = o.chosen_rewards - o.rejected_rewards
        loss, acc, margin = loss + float(o.losses.sum()), acc + float((m > 0).sum()), margin + float(m.sum())
    n = len(val.examples)
    return {"val_loss": loss / n, "val_reward_accuracy": acc / n, "val_reward_margin": margin / n}


def _reference(cfg: TrainConfig, out: Path, policy: torch.nn.Module, pairs: list, pad: int, device: torch.device,
               model_path: str) -> Reference:
    """Where the training steps' reference log-probs come from, decided once, before the policy is wrapped.

    - ``precompute_ref`` (default): the initial policy *as it is* - the base model, or the SFT model
      when ``init_from`` a previous run (adapter included) - run once over every pair and cached.
    - otherwise, with LoRA: the policy with its adapters switched off, at every step (one copy of the
      weights; refused above when ``init_from`` is an adapter, as the base would not be the start).
    - otherwise (full fine-tuning): a frozen copy of the initial policy, at every step.
    """
    if cfg.precompute_ref:
        fp = model_fingerprint(model_path) + (model_fingerprint(cfg.init_from) if cfg.init_from else "")
        chosen, rejected, _ = cached_reference_logps(
            policy, pairs, out / "ref_logps", model_fingerprint=fp, pad_id=pad, batch_size=cfg.batch_size,
            device=device, progress=cfg.progress, settings={"max_length": cfg.max_length, "truncation": cfg.truncation,
                                     "load_in_4bit": cfg.load_in_4bit,  # and resolved: auto is float32 on CPU, bf16 on GPU
                                     **resolve(cfg.device, cfg.dtype, cfg.load_in_4bit).identity()})
        return Precomputed(chosen, rejected)
    if cfg.lora:
        return Live(policy, no_adapters=True)  # under DDP the inner module: no gradients, no sync needed
    return Live(copy.deepcopy(policy).eval().requires_grad_(False))
