"""Frozen-prefix cache: compute the untouched first layers once per example.

With LoRA on the last k decoder layers only (``lora_layers: k``), the first L-k layers never change
during training, so what they output for an example is the same in every epoch, in DPO's reference
pass and in the policy's. Computed once per example without gradients, it turns every later forward
into a k-layer one. On CPU, where a 135M model trains at a few hundred tokens/s, a step (forward of L
layers, backward of k) then costs about 3k/(L + 2k) of a plain one: 0.43 with k = 6 of 30.

Exact up to float rounding (tests compare with the plain forward). Off by default
(``prefix_cache: true``): it holds one ``[tokens, hidden]`` tensor per example in host memory, and it
needs the layers unsharded, so not with FSDP2. A decoder whose ``model.layers`` and ``model.norm`` are
not where Llama, Mistral, Qwen and Gemma keep them is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clinalign.errors import ConfigError
from clinalign.models.layers import decoder_stack, only_layers
from clinalign.train.config import prefix_cache_problem
from clinalign.train.packing import collate_pairs, collate_sft, hidden_before
from clinalign.train.tokenize import PairExample, SFTExample


def frozen_layers(model: Any) -> int:
    """How many leading decoder layers no gradient ever reaches (0 when the first one trains)."""
    trainable = [any(p.requires_grad for p in layer.parameters()) for layer in decoder_stack(model).layers]
    return trainable.index(True) if True in trainable else len(trainable)


def fill(model: Any, examples: Sequence[SFTExample] | Sequence[PairExample], start: int, pad_id: int,
         device: Any) -> None:
    """Set ``example.prefix`` to the hidden states entering layer ``start``: one forward per example,
    so no padding enters the cache. Examples that already hold it (a resumed run) are skipped."""
    dec = decoder_stack(model)
    was_training = dec.training
    dec.eval()
    with torch.no_grad():
        for e in examples:
            if e.prefix is not None and e.prefix[0] == start:
                continue
            if isinstance(e, PairExample):
                hidden = hidden_before(model, collate_pairs([e], pad_id).to(device), start)
            else:
                sb = collate_sft([e], pad_id)
                with only_layers(model, 0, start, final_norm=False):
                    hidden = dec(input_ids=sb["input_ids"].to(device), attention_mask=sb["attention_mask"].to(device),
                                 use_cache=False).last_hidden_state
            e.prefix = (start, hidden[0].detach().to("cpu"))
    dec.train(was_training)


def prepare(cfg: Any, model: Any, example_sets: Sequence[Sequence[SFTExample] | Sequence[PairExample]],
            pad_id: int, device: Any) -> None:
    """Fill the cache of every example set when ``cfg.prefix_cache`` is on (before DDP wraps the model)."""
    if not cfg.prefix_cache:
        return
    start = frozen_layers(model)
    problem = prefix_cache_problem(cfg, frozen=start)  # checked before OUT was written, but for an
    if problem:  # init_from adapter, whose layers only the loaded model shows
        raise ConfigError(problem)
    for examples in example_sets:
        fill(model, examples, start, pad_id, device)
