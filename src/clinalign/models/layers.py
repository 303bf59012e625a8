"""Layer surgery: reach the decoder's layer list through the wrappers, and run only a slice of it.

Used by the frozen-prefix cache (``train/prefix.py``: the frozen first layers run once per example)
and by evaluation (``eval/inference.py``: layers shared by base, SFT and DPO run once per batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from clinalign.errors import ConfigError


def unwrap(model: Any) -> Any:
    """The module under DDP (``.module``); peft and FSDP2 forward attribute access themselves."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def decoder_stack(model: Any) -> Any:
    """The decoder (``LlamaModel`` and kin: ``.layers``, ``.norm``) under DDP, peft and the LM head."""
    m = unwrap(model)
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
