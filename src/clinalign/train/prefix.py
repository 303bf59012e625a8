"""Frozen-prefix cache for training: compute the untouched first layers once per example.

With LoRA on the last k decoder layers only (``lora_layers: k``), the first L-k layers never change
during training, so what they output for an example is the same in every epoch, in DPO's reference
pass and in the policy's. Computed once per example without gradients, it turns every later forward
into a k-layer one. On CPU, where a 135M model trains at a few hundred tokens/s, a step (forward of L
layers, backward of k) then costs about 3k/(L + 2k) of a plain one: 0.43 with k = 6 of 30.

The cache sits behind the model (``models/layers.PrefixCache``): examples and batches stay plain token
ids, and the recipes run the policy they are given. Exact up to float rounding (tests compare with
the plain forward). Off by default (``prefix_cache: true``): it holds one ``[tokens, hidden]`` tensor
per example in host memory, and it needs the layers unsharded, so not with FSDP2.
"""

from __future__ import annotations

import torch

from clinalign.errors import ConfigError
from clinalign.models.layers import PrefixCache, frozen_layers
from clinalign.train.config import TrainConfig, prefix_cache_problem


def cached(cfg: TrainConfig, policy: torch.nn.Module) -> torch.nn.Module:
    """The policy behind a cache of its frozen leading layers when ``cfg.prefix_cache`` is on; checked
    here, on the built model (an ``init_from`` adapter brings its own adapted layers), before the
    recipe writes anything. Build it before DDP wraps the model."""
    if not cfg.prefix_cache:
        return policy
    start = frozen_layers(policy)
    problem = prefix_cache_problem(cfg, frozen=start)
    if problem:
        raise ConfigError(problem)
    return PrefixCache(policy, start)
