"""Reference log-probs for DPO: where they come from, and the on-disk cache of the precomputed ones.

The reference policy never changes during DPO, so its log-probs are a pure function of (reference
weights, tokenised pairs, tokenisation settings). By default we compute them once (shard-parallel
when torch.distributed is up) and store them under a key made of those three fingerprints, so a
second run, a resumed run, or another process reads them instead of running a second model every
step.

A :class:`Reference` says where a step's reference log-probs come from; the DPO recipe picks one:
:class:`Precomputed` (the cache above), or :class:`Live`, a model run at every step - a frozen copy
(full fine-tuning), or the policy itself with its LoRA adapters switched off (:func:`adapters_off`:
one copy of the weights). :func:`compute_reference_logps` runs the model it is given exactly as it is;
the caller decides which network that is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from clinalign.data.io import atomic_path
from clinalign.models.layers import unwrap
from clinalign.progress import progress as progress_of
from clinalign.train.distributed import rank_world
from clinalign.train.packing import PairBatch, collate_pairs, pair_logps
from clinalign.train.tokenize import PairExample


def fingerprint_pairs(pairs: Sequence[PairExample]) -> str:
    """Hash of the tokenised pairs, in order (tokens, so chat template and truncation are covered)."""
    h = hashlib.sha256()
    for e in pairs:
        h.update(json.dumps([e.prompt_ids, e.chosen_ids, e.rejected_ids]).encode())
    return h.hexdigest()[:16]


def cache_key(model_fp: str, data_fp: str, settings: dict[str, Any] | None = None) -> str:
    blob = json.dumps({"model": model_fp, "data": data_fp, "settings": settings or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextlib.contextmanager
def adapters_off(model: Any) -> Iterator[Any]:
    """For the duration, a peft model (also under DDP) runs with every adapter disabled: its base network."""
    inner = unwrap(model)
    if not (hasattr(inner, "disable_adapter") and hasattr(inner, "peft_config")):
        raise ValueError(f"{type(inner).__name__} has no peft adapters to switch off")
    with inner.disable_adapter():
        yield model


class Reference(Protocol):
    """Where a step's reference log-probs come from (chosen once, by the DPO recipe)."""

    def logps(self, idx: Sequence[int], batch: PairBatch) -> tuple[Tensor, Tensor]:
        """(chosen [B], rejected [B]) reference log-probs of the pairs ``idx``, packed as ``batch``."""
        ...


@dataclass(frozen=True)
class Precomputed:
    """Log-probs computed before training (:func:`cached_reference_logps`), looked up by pair index."""

    chosen: Tensor
    rejected: Tensor

    def logps(self, idx: Sequence[int], batch: PairBatch) -> tuple[Tensor, Tensor]:
        device = batch.input_ids.device
        return self.chosen[list(idx)].to(device), self.rejected[list(idx)].to(device)


@dataclass(frozen=True)
class Live:
    """A model run at every step, without gradients: a frozen copy, or (``no_adapters``) the policy
    itself with its adapters switched off."""

    model: Any
    no_adapters: bool = False

    @torch.no_grad()
    def logps(self, idx: Sequence[int], batch: PairBatch) -> tuple[Tensor, Tensor]:
        with adapters_off(self.model) if self.no_adapters else contextlib.nullcontext():
            chosen, rejected, _ = pair_logps(self.model, batch)
        return chosen, rejected


def _batches(
    pairs: Sequence[PairExample], order: list[int], batch_size: int, pad_id: int
) -> Iterator[PairBatch]:
    for i in range(0, len(order), batch_size):
        yield collate_pairs([pairs[j] for j in order[i : i + batch_size]], pad_id)


@torch.no_grad()
def compute_reference_logps(
    model: Any,
    pairs: Sequence[PairExample] | Iterable[PairBatch],
    *,
    pad_id: int = 0,
    batch_size: int = 8,
    device: Any = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Summed log-probs (chosen [N], rejected [N]) of ``model`` exactly as it is, in the order of ``pairs``.

    ``pairs`` is the training pairs (preferred: processed shortest-first so little is spent on
    padding, and split across ranks when torch.distributed is initialised - every rank runs the same
    number of batches, which FSDP2's collectives need) or an iterable of ready ``PairBatch``es.
    The model runs in eval mode; its train/eval mode is restored afterwards. With ``progress``, the
    pass over ``pairs`` shows its progress (clinalign/progress.py: elapsed, ETA).
    """
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        if not isinstance(pairs, Sequence) or (len(pairs) and isinstance(pairs[0], PairBatch)):
            outs = [pair_logps(model, b if device is None else b.to(device))[:2] for b in pairs]
            return torch.cat([o[0] for o in outs]).cpu(), torch.cat([o[1] for o in outs]).cpu()
        return _sharded(model, pairs, pad_id=pad_id, batch_size=batch_size, device=device, show=progress)
    finally:
        model.train(was_training)


def _sharded(model: Any, pairs: Sequence[PairExample], *, pad_id: int, batch_size: int, device: Any, show: bool):
    n = len(pairs)
    rank, world = rank_world()
    per_rank = -(-n // world)
    mine = [(rank + world * k) % n for k in range(per_rank)]  # wraps round so every rank has per_rank
    mine.sort(key=lambda j: len(pairs[j].prompt_ids) + len(pairs[j].chosen_ids) + len(pairs[j].rejected_ids))
    chosen, rejected = torch.empty(per_rank), torch.empty(per_rank)
    done = 0
    with progress_of("reference pass: pairs", per_rank, enabled=show) as bar:  # this process's share
        for b in _batches(pairs, mine, batch_size, pad_id):
            c, r, _ = pair_logps(model, b if device is None else b.to(device))
            chosen[done : done + len(b)], rejected[done : done + len(b)] = c.float().cpu(), r.float().cpu()
            done += len(b)
            bar.update(done)
    index = torch.tensor(mine)
    if world > 1:
        import torch.distributed as dist

        dev = device if device is not None else "cpu"
        local = torch.stack([index.double(), chosen.double(), rejected.double()]).to(dev)
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        allv = torch.cat([g.cpu() for g in gathered], dim=1)
        index, chosen, rejected = allv[0].long(), allv[1].float(), allv[2].float()
    out_c, out_r = torch.empty(n), torch.empty(n)
    out_c[index], out_r[index] = chosen, rejected
    return out_c, out_r


def cached_reference_logps(
    model: Any,
    pairs: Sequence[PairExample],
    cache_dir: str | Path,
    *,
    model_fingerprint: str,
    settings: dict[str, Any] | None = None,
    pad_id: int = 0,
    batch_size: int = 8,
    device: Any = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, bool]:
    """Load reference log-probs from ``cache_dir`` or compute and store them.

    Returns ``(chosen [N], rejected [N], hit)``. The file name is the cache key of (model fingerprint,
    data fingerprint, ``settings`` - e.g. max_length, truncation, dtype); it is written atomically by
    rank 0, so a crashed run never leaves a half-written cache that a later run would trust.
    """
    from safetensors.torch import load_file, save

    key = cache_key(model_fingerprint, fingerprint_pairs(pairs), settings)
    path = Path(cache_dir) / f"ref-logps-{key}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        if t["chosen"].numel() == len(pairs):
            return t["chosen"], t["rejected"], True
    chosen, rejected = compute_reference_logps(
        model, pairs, pad_id=pad_id, batch_size=batch_size, device=device, progress=progress
    )
    rank, world = rank_world()
    if rank == 0:
        with atomic_path(path, suffix=".safetensors") as tmp:
            # bytes written by Python: a full disk is an OSError, which atomic_path reports with the path
            tmp.write_bytes(save({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return chosen, rejected, False
