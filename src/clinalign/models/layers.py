"""Layer surgery: reach the decoder's layer list through the wrappers, run only a slice of it, and
remember what the frozen first layers compute (:class:`PrefixCache`).

Used by training with ``prefix_cache`` (train/prefix.py: the frozen first layers run once per example),
by evaluation (``eval/inference.py``: layers shared by base, SFT and DPO run once per batch) and by
FSDP2, which shards the model layer by layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from clinalign.errors import ConfigError


def unwrap(model: Any) -> Any:
    """The module under DDP and :class:`PrefixCache` (``.module``); peft and FSDP2 forward attribute
    access themselves."""
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, PrefixCache)):
        model = model.module
    return model


def decoder_stack(model: Any) -> Any:
    """The decoder (``LlamaModel`` and kin: ``.layers``, ``.norm``) under DDP, peft and the LM head."""
    m = unwrap(model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    dec = getattr(m, "model", None)
    if not isinstance(getattr(dec, "layers", None), torch.nn.ModuleList) or not hasattr(dec, "norm"):
        raise ConfigError(f"{type(m).__name__} keeps no decoder layers at model.layers with model.norm (as Llama, "
                          "Mistral, Qwen and Gemma do): prefix_cache and parallel: fsdp2 need them; turn those off")
    return dec


def frozen_layers(model: Any) -> int:
    """How many leading decoder layers no gradient ever reaches (0 when the first one trains)."""
    trainable = [any(p.requires_grad for p in layer.parameters()) for layer in decoder_stack(model).layers]
    return trainable.index(True) if True in trainable else len(trainable)


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


def hidden_before(model: Any, start: int, input_ids: Tensor, attention_mask: Tensor,
                  position_ids: Tensor | None = None) -> Tensor:
    """Hidden states entering decoder layer ``start`` [B, S, H]: the layers below it, no final norm.
    ``attention_mask`` is in the form the model reads (2D, or 4D as ``train/packing.model_mask`` makes)."""
    with only_layers(model, 0, start, final_norm=False):
        return decoder_stack(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state


def real_lengths(attention_mask: Tensor) -> list[int]:
    """Tokens before the padding in each row of a right-padded batch: the ones of a 2D mask; in a 4D
    mask (True, or 0 when additive, = may attend) the queries that see the first token, as every real
    token of a packed row does and padding does not (``train/packing.pack``)."""
    if attention_mask.dim() == 2:
        return attention_mask.ne(0).sum(-1).tolist()
    sees_first = attention_mask[:, 0, :, 0]
    return (sees_first if sees_first.dtype == torch.bool else sees_first.eq(0)).sum(-1).tolist()


class PrefixCache(torch.nn.Module):
    """``model`` whose first ``start`` decoder layers run once per distinct input row: their output is
    remembered and the model runs from layer ``start`` on it.

    Those layers must get no gradient (the caller checks; :func:`frozen_layers`), so what they output
    for a row never changes: in every epoch, in DPO's reference pass, and for every adapter of a model
    that adapts only later layers. A row is known by its content (real tokens, their positions and the
    attention among them) and computed alone, without the batch's padding, so a row gives the same
    numbers whichever batch it comes in: a resumed run matches one that never stopped. Rows are kept on
    the CPU, one ``[tokens, hidden]`` tensor each, until :meth:`clear`. Batches must be right-padded.
    """

    def __init__(self, model: torch.nn.Module, start: int) -> None:
        super().__init__()
        self.module, self.start = model, start
        self.rows: dict[bytes, Tensor] = {}

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None,
                **kwargs: Any) -> Any:
        hidden = self.hidden(input_ids, attention_mask, position_ids)
        with only_layers(self.module, self.start):
            return self.module(inputs_embeds=hidden, attention_mask=attention_mask, position_ids=position_ids,
                               **kwargs)

    @torch.no_grad()
    def hidden(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None) -> Tensor:
        """The hidden states entering layer ``start`` of each row [B, S, H], zero on padding."""
        rows = []
        for i, n in enumerate(real_lengths(attention_mask)):
            mask = attention_mask[i : i + 1, :n] if attention_mask.dim() == 2 else attention_mask[i : i + 1, :, :n, :n]
            row = (input_ids[i : i + 1, :n], mask, None if position_ids is None else position_ids[i : i + 1, :n])
            key = _content_key(*row)
            if key not in self.rows:
                dec = decoder_stack(self.module)
                was_training = dec.training
                dec.eval()
                self.rows[key] = hidden_before(self.module, self.start, *row)[0].to("cpu")
                dec.train(was_training)
            rows.append(self.rows[key])
        out = rows[0].new_zeros((len(rows), input_ids.size(1), rows[0].size(-1)))
        for i, h in enumerate(rows):
            out[i, : h.size(0)] = h
        return out.to(input_ids.device)

    def clear(self) -> None:
        self.rows.clear()


def _content_key(*tensors: Tensor | None) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if t is not None:
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().cpu().numpy().tobytes())
    return h.digest()
