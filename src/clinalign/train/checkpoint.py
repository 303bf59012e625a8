"""Checkpoints that make a killed run resumable with the same result as one that never stopped.

``OUT/checkpoints/step-N/`` holds the trainable weights (``model.safetensors``: the LoRA adapter, or
every weight for full fine-tuning), the optimizer and scheduler state, each process's RNG states
(python, numpy, torch, cuda) and ``state.json`` (step, epoch, position in the epoch, the data order's
seed and shape). A checkpoint is written into ``.tmp-step-N`` and renamed when complete, so a kill
leaves either a whole checkpoint or a temporary directory that is ignored and replaced.

Under FSDP2 the sharded weights and optimizer state are gathered into full, CPU-resident state dicts
(``torch.distributed.checkpoint.state_dict``) and rank 0 writes them; on resume every process reads
the full state and keeps its own shard.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clinalign.train import distributed
from clinalign.train.distributed import DistInfo, unwrap

_STEP = re.compile(r"^step-(\d+)$")


def _dcp_options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kw)


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in unwrap(model).named_parameters() if p.requires_grad}


def full_state_dict(model: torch.nn.Module, parallel: str) -> dict[str, torch.Tensor]:
    """The whole model's state dict as full CPU tensors (a collective under FSDP2: call on every rank)."""
    if parallel == "fsdp2":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_dcp_options(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def _trainable_state(model: torch.nn.Module, parallel: str) -> dict[str, torch.Tensor]:
    keep = trainable_names(model)
    return {k: v.clone().contiguous() for k, v in full_state_dict(model, parallel).items() if k in keep}


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint (temporary directories of a killed save are not complete)."""
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name))]
    steps = [(n, p) for n, p in steps if (p / "state.json").is_file()]
    return max(steps)[1] if steps else None


def save(out: Path, info: DistInfo, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, parallel: str, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-N`` atomically; every process must call this (collectives, RNG)."""
    step = int(state["step"])
    final, tmp = out / "checkpoints" / f"step-{step}", out / "checkpoints" / f".tmp-step-{step}"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier()
    weights = _trainable_state(model, parallel)
    if parallel == "fsdp2":
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optim = get_optimizer_state_dict(model, optimizer, options=_dcp_options(full_state_dict=True,
                                                                                 cpu_offload=True))
    else:
        optim = optimizer.state_dict()
    torch.save(_rng_state(), tmp / f"rng-rank{info.rank}.pt")
    if info.is_main:
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(optim, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    distributed.barrier()
    if info.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    distributed.barrier()
    return final


def load(path: Path, info: DistInfo, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, parallel: str) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; returns ``state.json``."""
    weights = load_file(str(path / "model.safetensors"))
    optim = torch.load(path / "optimizer.pt", weights_only=False)
    if parallel == "fsdp2":
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, weights, options=_dcp_options(full_state_dict=True, strict=False))
        set_optimizer_state_dict(model, optimizer, optim, options=_dcp_options(full_state_dict=True))
    else:
        missing = set(weights) - set(unwrap(model).state_dict())
        if missing:
            raise RuntimeError(f"checkpoint {path} does not match the model ({sorted(missing)[0]} ...)")
        unwrap(model).load_state_dict(weights, strict=False)
        optimizer.load_state_dict(optim)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng = path / f"rng-rank{info.rank}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((path / "state.json").read_text())


def save_final(out: Path, info: DistInfo, model: torch.nn.Module, tokenizer: Any, parallel: str,
               name: str = "final") -> Path:
    """``OUT/final``: a peft adapter directory or a full HF model directory, plus the tokenizer."""
    state = full_state_dict(model, parallel)
    if parallel == "fsdp2":  # gathered copies of tied weights no longer share storage: keep one name
        own = {n for n, _ in unwrap(model).named_parameters()} | {n for n, _ in unwrap(model).named_buffers()}
        state = {k: v for k, v in state.items() if k in own}
    final, tmp = out / name, out / f".tmp-{name}"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        unwrap(model).save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    distributed.barrier()
    return final
