"""Checkpoints that make a killed run resumable with the same result as one that never stopped.

``OUT/checkpoints/step-N/`` holds the trainable weights (``model.safetensors``: the LoRA adapter, or
every weight for full fine-tuning), the optimizer and scheduler state, each process's RNG states
(python, numpy, torch, cuda) and ``state.json`` (step, epoch, position in the epoch, the data order's
seed and shape). A checkpoint is written into ``.tmp-step-N`` and renamed when complete, so a kill
leaves either a whole checkpoint or a temporary directory that is ignored and replaced.

``manifest.json``, written last, lists every file's size and SHA-256 (each file fsynced first). A
checkpoint counts only when it matches its manifest, so one truncated or corrupted on its way to disk
(a filesystem without atomic rename, a kill by the OOM killer, a bad disk) is reported and the one
before it is used. A checkpoint whose weights are not finite is never written, and a write that fails
(disk full) removes its temporary directory and names the file: earlier checkpoints are left as they were.

Under FSDP2 the sharded weights and optimizer state are gathered into full, CPU-resident state dicts
(``torch.distributed.checkpoint.state_dict``) and rank 0 writes them; on resume every process reads
the full state and keeps its own shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clinalign.errors import TrainingStopped
from clinalign.models.layers import unwrap
from clinalign.train import distributed
from clinalign.train.distributed import DistInfo

_STEP = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
_REQUIRED = ("model.safetensors", "optimizer.pt", "scheduler.pt", "state.json")


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


def _sha256(path: Path, sync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if sync:  # delayed allocation can report a full disk only here
            os.fsync(f.fileno())
    return h.hexdigest()


def _write_manifest(tmp: Path) -> None:
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p, sync=True)}
             for p in sorted(tmp.iterdir()) if p.is_file() and p.name != MANIFEST}
    with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
        f.write(json.dumps({"files": files}, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())


def verify(path: Path) -> str | None:
    """None when the checkpoint holds every file its manifest lists, with that size and checksum;
    otherwise what is wrong, in a few words."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        wanted = {name: (int(v["bytes"]), str(v["sha256"])) for name, v in files.items()}
    except FileNotFoundError:
        return f"no {MANIFEST} (incomplete, or written by an older clinalign)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is damaged"
    missing = [n for n in _REQUIRED if n not in wanted]
    if missing:
        return f"{MANIFEST} does not list {missing[0]}"
    for name, (size, digest) in wanted.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} is {f.stat().st_size} bytes, the manifest says {size}"
        if _sha256(f) != digest:
            return f"{name} does not match its checksum"
    return None


def latest(out: Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The newest checkpoint that matches its manifest. Temporary directories of a killed save are not
    checkpoints; a damaged one is reported through ``warn`` and the one before it is tried."""
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    steps = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name))), reverse=True)
    for _, path in steps:
        problem = verify(path)
        if problem is None:
            return path
        if warn is not None:
            warn(f"checkpoint {path} is damaged ({problem}); falling back to the one before it")
    return None


def _nonfinite(weights: dict[str, torch.Tensor]) -> str | None:
    return next((k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)


class _WriteFailed(Exception):
    def __init__(self, path: Path, error: BaseException):
        self.path, self.error = path, error


def _write(path: Path, write: Callable[[str], Any]) -> None:
    """Run one file write, so that a failure (disk full: OSError from Python, RuntimeError from
    torch.save, SafetensorError) names the file it was writing."""
    try:
        write(str(path))
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise _WriteFailed(path, e) from e


def _write_error(what: Path, error: BaseException, out: Path) -> TrainingStopped:
    reason = getattr(error, "strerror", None) or next(iter(str(error).strip().splitlines()), "")
    prev = latest(out)
    kept = f"the last good checkpoint {prev} is intact" if prev else "there is no earlier checkpoint"
    return TrainingStopped(f"could not write {what}: {reason or type(error).__name__}; {kept}. Free space "
                           f"(or fix the disk) and rerun with --resume")


def save(out: Path, info: DistInfo, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, parallel: str, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-N`` atomically, with its manifest; every process must call this
    (collectives, RNG). Raises TrainingStopped, leaving earlier checkpoints as they were, when the
    weights are not finite or a file cannot be written."""
    step = int(state["step"])
    final, tmp = out / "checkpoints" / f"step-{step}", out / "checkpoints" / f".tmp-step-{step}"
    weights = _trainable_state(model, parallel)
    if parallel == "fsdp2":
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optim = get_optimizer_state_dict(model, optimizer, options=_dcp_options(full_state_dict=True,
                                                                                 cpu_offload=True))
    else:
        optim = optimizer.state_dict()
    bad = _nonfinite(weights)
    if bad is not None:
        prev = latest(out)
        raise TrainingStopped(f"not writing checkpoint {final}: weight {bad} is not finite (training diverged); "
                              f"last good checkpoint: {prev or 'none'}")
    try:
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            _write(tmp, lambda p: Path(p).mkdir(parents=True))
        distributed.barrier()
        _write(tmp / f"rng-rank{info.rank}.pt", lambda p: torch.save(_rng_state(), p))
        if info.is_main:
            _write(tmp / "model.safetensors", lambda p: save_file(weights, p))
            _write(tmp / "optimizer.pt", lambda p: torch.save(optim, p))
            _write(tmp / "scheduler.pt", lambda p: torch.save(scheduler.state_dict(), p))
            _write(tmp / "state.json", lambda p: Path(p).write_text(json.dumps(state, indent=2) + "\n"))
        distributed.barrier()
        if info.is_main:
            _write(tmp / MANIFEST, lambda _: _write_manifest(tmp))
            shutil.rmtree(final, ignore_errors=True)
            _write(final, lambda p: tmp.rename(p))
    except _WriteFailed as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(e.path, e.error, out) from None
    distributed.barrier()
    return final


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``: where training was (step, epoch, position) and the run's shape."""
    return json.loads((path / "state.json").read_text())


def load(path: Path, info: DistInfo, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, parallel: str) -> None:
    """Restore weights, optimizer, scheduler and this process's RNG."""
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


def save_final(out: Path, info: DistInfo, model: torch.nn.Module, tokenizer: Any, parallel: str,
               name: str = "final") -> Path:
    """``OUT/final``: a peft adapter directory or a full HF model directory, plus the tokenizer."""
    state = full_state_dict(model, parallel)
    if parallel == "fsdp2":  # gathered copies of tied weights no longer share storage: keep one name
        own = {n for n, _ in unwrap(model).named_parameters()} | {n for n, _ in unwrap(model).named_buffers()}
        state = {k: v for k, v in state.items() if k in own}
    final, tmp = out / name, out / f".tmp-{name}"
    bad = _nonfinite({k: state[k] for k in trainable_names(model) if k in state})
    if bad is not None:
        raise TrainingStopped(f"not writing {final}: weight {bad} is not finite (training diverged); last good "
                              f"checkpoint: {latest(out) or 'none'}")
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write(tmp, lambda p: unwrap(model).save_pretrained(p, state_dict=state, safe_serialization=True))
            _write(tmp, lambda p: tokenizer.save_pretrained(p))
        except _WriteFailed as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(Path(getattr(e.error, "filename", None) or e.path), e.error, out) from None
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    distributed.barrier()
    return final
