"""Shared-prompt packing and answer log-probs: the hot path of training, the reference pass and scoring.

Clinical data is long prompts and short answers, so two things dominate the cost and both are
handled here:

1. **Shared prompt.** One prompt and its k answers are packed as ONE sequence
   ``[prompt | answer 1 | ... | answer k]``. Each answer's position ids continue from the prompt, and
   a 4D attention mask lets an answer's tokens see the prompt and that answer's earlier tokens, never
   another answer. The prompt is encoded once however many answers there are, and the log-probs equal
   those of one forward per prompt + answer. A preference pair is the case k = 2 (chosen, rejected);
   label scoring packs every allowed answer of a closed-set item.
2. **Answer-only vocabulary projection.** The model is called with a boolean ``logits_to_keep`` so
   ``lm_head`` runs only at the positions that predict an answer token; ``[batch, seq, vocab]``
   logits are never built for prompt tokens.

Both go through the model's ordinary ``forward``, so the same code works for a plain Hugging Face
model, a peft model, DDP- or FSDP2-wrapped modules, and a model whose frozen first layers are cached
(``models/layers.PrefixCache``): batches are plain token ids whatever runs them.

SFT batches keep the usual right-padded HF shape (:func:`collate_sft`): one answer, nothing to share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clinalign.errors import ConfigError
from clinalign.models.layers import unwrap
from clinalign.train.losses import sft_loss
from clinalign.train.tokenize import IGNORE, PairExample, SFTExample

#: one item to pack: (prompt ids, [answer ids, ...])
Item = tuple[Sequence[int], Sequence[Sequence[int]]]


# ---------------------------------------------------------------- packing


@dataclass
class PackedBatch:
    """Items packed as right-padded rows ``[prompt | answer 1 | ... | answer k | pad]``.

    ``logits_mask`` marks the positions whose hidden state predicts an answer token (the last prompt
    token predicts the first token of every answer). The model's answer-only logits come out flat,
    one row per True in ``logits_mask`` in row-major order; ``index`` picks the row that predicts each
    answer token, ``targets`` is that token and ``owner`` its answer (numbered item-major).
    """

    input_ids: Tensor  # [B, S]
    attention_mask: Tensor  # [B, 1, S, S] bool, True = may attend
    position_ids: Tensor  # [B, S]
    logits_mask: Tensor  # [B, S] bool
    index: Tensor  # [N]
    targets: Tensor  # [N]
    owner: Tensor  # [N]
    answer_lengths: Tensor  # [A]
    prompt_lengths: Tensor  # [B]
    answers: list[int]  # answers per item (A = sum)
    examples: list[PairExample] = field(default_factory=list, repr=False)  # the pairs, for collate_pairs
    pad_id: int = 0

    def __len__(self) -> int:
        return self.input_ids.size(0)

    def to(self, device: Any) -> PackedBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens in the packed batch: what the forward actually has to compute."""
        return int(self.prompt_lengths.sum() + self.answer_lengths.sum())

    @property
    def chosen_lengths(self) -> Tensor:
        """Of a batch of pairs (two answers per item): the first answer's token counts [B]."""
        return self.answer_lengths[0::2]

    @property
    def rejected_lengths(self) -> Tensor:
        return self.answer_lengths[1::2]


#: a batch of preference pairs: two answers per item, chosen then rejected
PairBatch = PackedBatch


def pack(items: Sequence[Item], pad_id: int) -> PackedBatch:
    """Pack each (prompt, answers) as one sequence with a shared prompt (see the module docstring)."""
    b = len(items)
    width = max(len(p) + sum(len(a) for a in answers) for p, answers in items)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    seg = torch.full((b, width), -1, dtype=torch.long)  # 0 prompt, k answer k, -1 pad
    keep = torch.zeros((b, width), dtype=torch.bool)
    index: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    lengths: list[int] = []
    row = 0  # rows of the flat answer-only logits emitted so far
    for i, (p, answers) in enumerate(items):
        n = len(p)
        if n < 1 or not answers or any(len(a) < 1 for a in answers):
            raise ConfigError("packing needs a non-empty prompt and non-empty answers")
        ids[i, :n] = torch.tensor(p)
        pos[i, :n] = torch.arange(n)
        seg[i, :n] = 0
        keep[i, n - 1] = True  # the last prompt token predicts every answer's first token
        first, row, start = row, row + 1, n
        for k, a in enumerate(answers, start=1):
            end = start + len(a)
            ids[i, start:end] = torch.tensor(a)
            pos[i, start:end] = torch.arange(n, n + len(a))
            seg[i, start:end] = k
            keep[i, start : end - 1] = True  # each answer token but the last predicts the next one
            index += [first, *range(row, row + len(a) - 1)]
            row += len(a) - 1
            targets += a
            owner += [len(lengths)] * len(a)
            lengths.append(len(a))
            start = end
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    # a key is visible if it is earlier and in the prompt or in the query's own answer; pads see pads
    allowed = causal & (((k == 0) & (q >= 0)) | (k == q))
    t = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(input_ids=ids, attention_mask=allowed[:, None], position_ids=pos, logits_mask=keep,
                       index=t(index), targets=t(targets), owner=t(owner), answer_lengths=t(lengths),
                       prompt_lengths=t([len(p) for p, _ in items]), answers=[len(a) for _, a in items],
                       pad_id=pad_id)


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> PairBatch:
    """Pairs packed by :func:`pack` as two answers (chosen, rejected) sharing their prompt."""
    batch = pack([(e.prompt_ids, (e.chosen_ids, e.rejected_ids)) for e in examples], pad_id)
    batch.examples = list(examples)
    return batch


def collate_sft(examples: Sequence[SFTExample], pad_id: int) -> dict[str, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (the usual HF shape: ``model(**batch)``
    works too, at the price of full logits)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------- the 4D mask in the model's dialect


def attn_implementation(model: Any) -> str:
    config = getattr(unwrap(model), "config", None)
    return str(getattr(config, "_attn_implementation", None) or "sdpa")


def model_mask(model: Any, allowed: Tensor) -> Tensor:
    """The 4D mask in the form the attention implementation reads: boolean for SDPA, additive for eager."""
    impl = attn_implementation(model)
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        return torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(torch.float32).min
        )
    raise ConfigError(
        f"shared-prompt packing needs attn_implementation 'sdpa' or 'eager' (the model uses {impl!r}); "
        "load the model with attn_implementation='sdpa'"
    )


# ---------------------------------------------------------------- log-probs


def token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per row, in float32 whatever the model's dtype."""
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def answer_logps(model: Any, batch: PackedBatch) -> Tensor:
    """Summed log-prob of every packed answer [A] (item-major), shared prompt, answer-only projection."""
    logits = model(input_ids=batch.input_ids, attention_mask=model_mask(model, batch.attention_mask),
                   position_ids=batch.position_ids, logits_to_keep=batch.logits_mask, use_cache=False).logits
    tok = token_logps(logits[batch.index], batch.targets)  # logits: [N, V], one row per predicting position
    return torch.zeros(batch.answer_lengths.numel(), dtype=tok.dtype, device=tok.device).index_add(0, batch.owner, tok)


def pair_logps(model: Any, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Summed answer log-probs of each pair (:func:`answer_logps` with two answers per item).

    Returns ``(chosen_logps [B], rejected_logps [B], chosen_nll [B])`` where ``chosen_nll`` is the mean
    per-token negative log-likelihood of the chosen answer (for RPO).
    """
    if any(k != 2 for k in batch.answers):
        raise ValueError("pair_logps needs two answers (chosen, rejected) per item")
    sums = answer_logps(model, batch)
    chosen, rejected = sums[0::2], sums[1::2]
    return chosen, rejected, -chosen / batch.chosen_lengths.to(chosen.device)


def pair_logps_concat(model: Any, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
    """The plain computation :func:`pair_logps` must equal: chosen and rejected as two separate full
    sequences, full logits over every position (what TRL does). The tests' oracle and the benchmark's
    baseline; training never runs it."""
    device = batch.input_ids.device
    seqs = [e.prompt_ids + e.chosen_ids for e in batch.examples] + [
        e.prompt_ids + e.rejected_ids for e in batch.examples
    ]
    answers = [len(e.chosen_ids) for e in batch.examples] + [len(e.rejected_ids) for e in batch.examples]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), batch.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for i, (s, a) in enumerate(zip(seqs, answers, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, len(s) - a : len(s)] = torch.tensor(s[len(s) - a :])
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    labels = labels[:, 1:]
    tok = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    logps = (tok * (labels != IGNORE)).sum(-1)
    chosen, rejected = logps.chunk(2)
    return chosen, rejected, -chosen / batch.chosen_lengths.to(device)


def sft_answer_logits(model: Any, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Answer-only logits [N, V], their targets [N] and example ids [N] for a :func:`collate_sft` batch."""
    labels = batch["labels"]
    predicts = F.pad(labels[:, 1:] != IGNORE, (0, 1), value=False)  # position t predicts token t+1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=predicts,
                use_cache=False)
    rows = torch.arange(labels.size(0), device=labels.device)[:, None].expand_as(labels)
    return out.logits, labels[:, 1:][predicts[:, :-1]], rows[predicts]


def sft_forward(model: Any, batch: dict[str, Tensor], reduction: str = "mean") -> Tensor:
    """Token-mean cross-entropy over the answer tokens, projecting the vocabulary only there."""
    logits, targets, _ = sft_answer_logits(model, batch)
    return sft_loss(logits, targets, reduction=reduction)
