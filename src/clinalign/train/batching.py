"""Tokenisation, collation and answer log-probs: the training hot path.

Clinical data is long prompts and short answers, so two things dominate the cost and both are
handled here:

1. **Shared prompt.** A preference pair is packed as ONE sequence ``[prompt | chosen | rejected]``.
   Position ids restart after the chosen answer, so both answers continue the prompt, and a 4D
   attention mask lets chosen tokens see the prompt and earlier chosen tokens, and rejected tokens
   see the prompt and earlier rejected tokens but never the chosen ones. The prompt is encoded once
   instead of twice; the log-probs equal those of two separate forwards.
2. **Answer-only vocabulary projection.** The model is called with a boolean ``logits_to_keep`` so
   ``lm_head`` runs only at the positions that predict an answer token; ``[batch, seq, vocab]``
   logits are never built for prompt tokens.

Both go through the model's ordinary ``forward``, so the same code works for a plain Hugging Face
model, a peft model, and DDP- or FSDP2-wrapped modules. The one exception is opt-in: examples that
carry a frozen-prefix cache (``train/prefix.py``) enter the model as ``inputs_embeds`` at the first
trainable layer, with the decoder's layer list cut to the layers after it for that call.

Over-long examples follow an explicit policy (``truncation=``): ``"left"`` drops tokens from the
start of the prompt and keeps the answers whole (``example.truncated`` is True); ``"drop"`` returns
None so the caller counts and reports the drop. An example whose answer alone does not fit is
dropped under either policy. ``max_length`` bounds prompt + the longer answer (what each of the two
sequences of a pair would be on its own, TRL's meaning); the packed pair is prompt + both answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clinalign.errors import ConfigError
from clinalign.train.losses import sft_loss

TRUNCATION_POLICIES = ("left", "drop")
IGNORE = -100

Prompt = str | list[dict[str, Any]]
Answer = str | list[dict[str, Any]]


#: (first layer to run, hidden states entering it [tokens, hidden]): see train/prefix.py
Prefix = tuple[int, Tensor]


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens
    truncated: bool = False
    prefix: Prefix | None = field(default=None, repr=False, compare=False)


@dataclass
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False
    prefix: Prefix | None = field(default=None, repr=False, compare=False)


# ---------------------------------------------------------------- tokenisation


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _ids(enc: Any) -> list[int]:
    ids = enc["input_ids"] if not isinstance(enc, list) else enc
    return list(ids)


def _as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _text(x: Prompt | Answer) -> str:
    return x if isinstance(x, str) else "\n".join(str(m["content"]) for m in x)


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token: answers could not be terminated")
    return int(tokenizer.eos_token_id)


def _prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    if _has_template(tokenizer):
        return _ids(
            tokenizer.apply_chat_template(_as_messages(prompt), add_generation_prompt=True, tokenize=True)
        )
    return _ids(tokenizer(_text(prompt), add_special_tokens=True))


def _answer_ids(tokenizer: Any, prompt: Prompt, prompt_ids: list[int], answer: Answer) -> list[int]:
    """Answer text + end-of-turn token, as the chat template renders it after the prompt."""
    eos = _eos_id(tokenizer)
    if _has_template(tokenizer):
        reply = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
        full = _ids(tokenizer.apply_chat_template(_as_messages(prompt) + reply, tokenize=True))
        if full[: len(prompt_ids)] == prompt_ids and eos in full[len(prompt_ids) :]:
            ids = full[len(prompt_ids) :]
            last = len(ids) - 1 - ids[::-1].index(eos)
            return ids[: last + 1]  # templates add a newline after the end-of-turn token: not trained on
    return _ids(tokenizer(_text(answer), add_special_tokens=False)) + [eos]


def _fit_prompt(
    tokenizer: Any, prompt_ids: list[int], answer_len: int, max_length: int, truncation: str
) -> tuple[list[int] | None, bool]:
    """Apply the over-long policy; returns (prompt ids or None when dropped, truncated?)."""
    if truncation not in TRUNCATION_POLICIES:
        raise ConfigError(
            f"unknown truncation policy {truncation!r}; choose one of {', '.join(TRUNCATION_POLICIES)}"
        )
    if len(prompt_ids) + answer_len <= max_length:
        return prompt_ids, False
    if truncation == "drop":
        return None, True
    keep = max_length - answer_len
    bos = getattr(tokenizer, "bos_token_id", None)
    head = [prompt_ids[0]] if bos is not None and prompt_ids and prompt_ids[0] == bos else []
    keep -= len(head)
    if keep < 1:
        return None, True  # the answer alone does not fit
    return head + prompt_ids[-keep:], True


def tokenize_sft(
    tokenizer: Any, prompt: Prompt, completion: Answer, max_length: int, truncation: str = "left"
) -> SFTExample | None:
    """One SFT example; loss only on the answer tokens. None when dropped by the truncation policy."""
    p = _prompt_ids(tokenizer, prompt)
    a = _answer_ids(tokenizer, prompt, p, completion)
    p2, truncated = _fit_prompt(tokenizer, p, len(a), max_length, truncation)
    if p2 is None:
        return None
    return SFTExample(p2 + a, [IGNORE] * len(p2) + a, truncated)


def tokenize_pair(
    tokenizer: Any,
    prompt: Prompt,
    chosen: Answer,
    rejected: Answer,
    max_length: int,
    truncation: str = "left",
) -> PairExample | None:
    """One preference pair as token ids. None when dropped by the truncation policy."""
    p = _prompt_ids(tokenizer, prompt)
    c = _answer_ids(tokenizer, prompt, p, chosen)
    r = _answer_ids(tokenizer, prompt, p, rejected)
    p2, truncated = _fit_prompt(tokenizer, p, max(len(c), len(r)), max_length, truncation)
    if p2 is None:
        return None
    return PairExample(p2, c, r, truncated)


# ---------------------------------------------------------------- collation


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
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    cached = stack_prefixes(examples, width)
    if cached is not None:
        out["prefix_start"], out["inputs_embeds"] = torch.tensor(cached[0]), cached[1]
    return out


def stack_prefixes(examples: Sequence[SFTExample] | Sequence[PairExample], width: int) -> Prefix | None:
    """The examples' cached prefixes, right-padded with zeros to ``width``; None unless all have one."""
    if not examples or any(e.prefix is None for e in examples):
        return None
    start, first = examples[0].prefix  # type: ignore[misc]
    out = first.new_zeros((len(examples), width, first.size(-1)))
    for i, e in enumerate(examples):
        out[i, : e.prefix[1].size(0)] = e.prefix[1]  # type: ignore[index]
    return start, out


@dataclass
class PairBatch:
    """A batch of pairs, each packed as one right-padded sequence ``[prompt | chosen | rejected | pad]``.

    ``logits_mask`` marks the positions whose hidden state predicts an answer token (the last prompt
    token predicts the first token of both answers). The model's answer-only logits come out flat,
    one row per True in ``logits_mask`` in row-major order; ``chosen_index``/``rejected_index`` pick
    the row that predicts each answer token, ``*_targets`` is that token and ``*_pair`` its pair.
    """

    input_ids: Tensor  # [B, S]
    attention_mask: Tensor  # [B, 1, S, S] bool, True = may attend
    position_ids: Tensor  # [B, S]
    logits_mask: Tensor  # [B, S] bool
    chosen_index: Tensor  # [Nc]
    chosen_targets: Tensor  # [Nc]
    chosen_pair: Tensor  # [Nc]
    rejected_index: Tensor  # [Nr]
    rejected_targets: Tensor  # [Nr]
    rejected_pair: Tensor  # [Nr]
    chosen_lengths: Tensor  # [B]
    rejected_lengths: Tensor  # [B]
    prompt_lengths: Tensor  # [B]
    examples: list[PairExample] = field(repr=False)
    pad_id: int = 0
    inputs_embeds: Tensor | None = field(default=None, repr=False)  # [B, S, H] frozen-prefix output
    prefix_start: int = 0

    def __len__(self) -> int:
        return self.input_ids.size(0)

    def to(self, device: Any) -> PairBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return PairBatch(**moved)

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens in the packed batch: what the forward actually has to compute."""
        return int((self.prompt_lengths + self.chosen_lengths + self.rejected_lengths).sum())


def collate_pairs(examples: Sequence[PairExample], pad_id: int) -> PairBatch:
    """Pack each pair as one sequence with a shared prompt (see the module docstring)."""
    b = len(examples)
    width = max(len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    seg = torch.full((b, width), -1, dtype=torch.long)  # 0 prompt, 1 chosen, 2 rejected, -1 pad
    keep = torch.zeros((b, width), dtype=torch.bool)
    c_idx, c_tgt, c_pair, r_idx, r_tgt, r_pair = [], [], [], [], [], []
    offset = 0  # rows of the flat answer-only logits emitted by earlier pairs
    for i, e in enumerate(examples):
        p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
        if p < 1 or c < 1 or r < 1:
            raise ConfigError("a pair needs a non-empty prompt, chosen and rejected answer")
        ids[i, : p + c + r] = torch.tensor(e.prompt_ids + e.chosen_ids + e.rejected_ids)
        pos[i, :p] = torch.arange(p)
        pos[i, p : p + c] = torch.arange(p, p + c)
        pos[i, p + c : p + c + r] = torch.arange(p, p + r)
        seg[i, :p], seg[i, p : p + c], seg[i, p + c : p + c + r] = 0, 1, 2
        # predicting positions: p-1 (first token of both answers), then each answer token but its last
        keep[i, p - 1 : p + c - 1] = True
        keep[i, p + c : p + c + r - 1] = True
        c_idx += range(offset, offset + c)
        r_idx += [offset] + list(range(offset + c, offset + c + r - 1))
        c_tgt += e.chosen_ids
        r_tgt += e.rejected_ids
        c_pair += [i] * c
        r_pair += [i] * r
        offset += c + r - 1
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    # a key is visible if it is earlier and in the prompt or in the query's own answer; pads see pads
    allowed = causal & (((k == 0) & (q >= 0)) | (k == q))
    t = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    cached = stack_prefixes(examples, width)
    return PairBatch(
        input_ids=ids,
        attention_mask=allowed[:, None],
        position_ids=pos,
        logits_mask=keep,
        chosen_index=t(c_idx),
        chosen_targets=t(c_tgt),
        chosen_pair=t(c_pair),
        rejected_index=t(r_idx),
        rejected_targets=t(r_tgt),
        rejected_pair=t(r_pair),
        chosen_lengths=t([len(e.chosen_ids) for e in examples]),
        rejected_lengths=t([len(e.rejected_ids) for e in examples]),
        prompt_lengths=t([len(e.prompt_ids) for e in examples]),
        examples=list(examples),
        pad_id=pad_id,
        inputs_embeds=cached[1] if cached else None,
        prefix_start=cached[0] if cached else 0,
    )


def bucket_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, window: int = 50
) -> list[list[int]]:
    """Batches of example indices that waste little on padding, still shuffled.

    Shuffle, cut into windows of ``window * batch_size`` examples, sort each window by length, split
    it into batches, shuffle the batches (seeded, so a resumed run sees the same order). Examples of
    similar length share a batch, so right-padding costs little, while each epoch's order stays random.
    """
    import random

    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = window * batch_size
    batches = []
    for i in range(0, len(order), span):
        chunk = sorted(order[i : i + span], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pair_length(e: PairExample) -> int:
    """Tokens in the packed sequence of a pair (what :func:`bucket_batches` should sort by)."""
    return len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids)


# ---------------------------------------------------------------- log-probs


def _unwrap(model: Any) -> Any:
    """The module under DDP (``.module``); peft and FSDP2 forward attribute access themselves."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def decoder_stack(model: Any) -> Any:
    """The decoder (``LlamaModel`` and kin: ``.layers``, ``.norm``) under DDP, wrappers, peft and the LM head."""
    m = _unwrap(model)
    m = getattr(m, "inner", m)  # the DPO recipe's as-is reference wrapper
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    dec = getattr(m, "model", None)
    if not isinstance(getattr(dec, "layers", None), torch.nn.ModuleList) or not hasattr(dec, "norm"):
        raise ConfigError(f"prefix_cache needs a decoder with model.layers and model.norm "
                          f"({type(m).__name__} has none); set prefix_cache: false")
    return dec


@contextmanager
def only_layers(model: Any, start: int, stop: int | None = None, *, final_norm: bool = True) -> Iterator[None]:
    """For the duration, the model runs ``layers[start:stop]`` only (and the final norm, if asked)."""
    dec = decoder_stack(model)
    layers, norm = dec.layers, dec.norm
    dec.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        dec.norm = torch.nn.Identity()
    try:
        yield
    finally:
        dec.layers, dec.norm = layers, norm


def _inputs(model: Any, input_ids: Tensor, inputs_embeds: Tensor | None, start: int) -> tuple[dict[str, Tensor], Any]:
    """Model inputs and the layer context: token ids through every layer, or a cached prefix from ``start``."""
    if inputs_embeds is None:
        return {"input_ids": input_ids}, nullcontext()
    return {"inputs_embeds": inputs_embeds}, only_layers(model, start)


def _attn_implementation(model: Any) -> str:
    config = getattr(_unwrap(model), "config", None)
    return str(getattr(config, "_attn_implementation", None) or "sdpa")


def _model_mask(model: Any, allowed: Tensor) -> Tensor:
    """The 4D mask in the form the attention implementation reads: boolean for SDPA, additive for eager."""
    impl = _attn_implementation(model)
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


def _token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per row, in float32 whatever the model's dtype."""
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def pair_logps(model: Any, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Summed answer log-probs of each pair with the shared prompt and answer-only projection.

    Returns ``(chosen_logps [B], rejected_logps [B], chosen_nll [B])`` where ``chosen_nll`` is the mean
    per-token negative log-likelihood of the chosen answer (for RPO).
    """
    inputs, layers = _inputs(model, batch.input_ids, batch.inputs_embeds, batch.prefix_start)
    with layers:
        out = model(
            **inputs,
            attention_mask=_model_mask(model, batch.attention_mask),
            position_ids=batch.position_ids,
            logits_to_keep=batch.logits_mask,
            use_cache=False,
        )
    logits = out.logits  # [N, V]: one row per predicting position
    b = len(batch)
    c_tok = _token_logps(logits[batch.chosen_index], batch.chosen_targets)
    r_tok = _token_logps(logits[batch.rejected_index], batch.rejected_targets)
    chosen = torch.zeros(b, dtype=c_tok.dtype, device=c_tok.device).index_add(0, batch.chosen_pair, c_tok)
    rejected = torch.zeros(b, dtype=r_tok.dtype, device=r_tok.device).index_add(0, batch.rejected_pair, r_tok)
    return chosen, rejected, -chosen / batch.chosen_lengths.to(chosen.device)


def pair_logps_concat(model: Any, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
    """The plain reference computation: chosen and rejected as two separate full sequences, full
    logits over every position (what TRL does). Used by the tests and the benchmark."""
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


def _sft_logits(model: Any, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Answer-only logits [N, V], their targets [N] and example ids [N] for a ``collate_sft`` batch."""
    labels = batch["labels"]
    predicts = F.pad(labels[:, 1:] != IGNORE, (0, 1), value=False)  # position t predicts token t+1
    start = int(batch["prefix_start"]) if "prefix_start" in batch else 0
    inputs, layers = _inputs(model, batch["input_ids"], batch.get("inputs_embeds"), start)
    with layers:
        out = model(**inputs, attention_mask=batch["attention_mask"], logits_to_keep=predicts, use_cache=False)
    rows = torch.arange(labels.size(0), device=labels.device)[:, None].expand_as(labels)
    return out.logits, labels[:, 1:][predicts[:, :-1]], rows[predicts]


def sft_forward(model: Any, batch: dict[str, Tensor], reduction: str = "mean") -> Tensor:
    """Token-mean cross-entropy over the answer tokens, projecting the vocabulary only there."""
    logits, targets, _ = _sft_logits(model, batch)
    return sft_loss(logits, targets, reduction=reduction)


def sft_logps(model: Any, batch: dict[str, Tensor]) -> Tensor:
    """Summed answer log-prob of each example [B] (answer-only projection)."""
    logits, targets, rows = _sft_logits(model, batch)
    tok = _token_logps(logits, targets)
    return torch.zeros(batch["labels"].size(0), dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
