"""torch.distributed set-up for runs launched by ``torchrun`` (one process per device).

Without torchrun (no ``WORLD_SIZE`` in the environment) everything here is a no-op on one process, so
the same recipe runs on one CPU, one GPU, or many GPUs on many nodes. ``parallel`` picks how the model
is wrapped: DDP (a full copy per process, gradients all-reduced) or FSDP2 (``fully_shard`` on every
decoder layer and the root: parameters, gradients and optimizer state sharded across processes).
Both average gradients over processes, so with a per-example mean loss, N processes x batch b equals
one process x batch N*b.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from clinalign.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_users = 0  # nested init()s sharing the group this module created: a study's, then each training stage's
_created = False  # this process created a process group (it is a torchrun worker)


def init(parallel: str, backend: str = "auto", device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (nccl on CUDA, gloo on CPU).

    Nested calls (a study's group, then each training stage inside it) share one group; the matching
    :func:`shutdown` of the outermost call destroys it."""
    global _users, _created
    rank, world = rank_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    from clinalign.models.device import resolve

    dev = resolve(device).device  # cuda:LOCAL_RANK on a GPU
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and parallel == "none":
        raise ConfigError(f"launched with {world} processes but parallel is 'none'; set parallel=ddp or fsdp2")
    if parallel != "none" and not dist.is_initialized():
        # imported first: its functions' defaults are ``group.WORLD`` evaluated at import, so imported
        # after the group exists (DDP imports torch._dynamo, which imports it) they hold the group past
        # destroy_process_group, gloo's threads outlive the interpreter and a worker aborts at exit
        importlib.import_module("torch.distributed.nn.functional")

        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
        _users, _created = 1, True
    elif parallel != "none" and _users:
        _users += 1
    return DistInfo(rank, world, local_rank, dev)


@contextmanager
def held(parallel: str, backend: str = "auto", device: str = "auto") -> Iterator[None]:
    """The process group held around a whole training run, so the recipe's own init/shutdown nest
    inside it and its DDP model is freed while the group still exists. Freed after the group, the
    model's Reducer would drop the group's last reference, and gloo's destructor waits for a work whose
    release needs the GIL that destructor holds: a hang at the end of a run (pytorch/pytorch#56297). An
    exception's frames (holding the model) are cleared before the group goes, for the same reason."""
    init(parallel, backend, device)
    try:
        yield
    except BaseException as e:
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        shutdown()


def shutdown() -> None:
    """Leave what :func:`init` joined; the group itself goes when its outermost user leaves."""
    global _users
    if _users > 1:
        _users -= 1
        return
    _users = 0
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_worker(code: int) -> None:
    """End a process that created a process group with ``code``, skipping interpreter finalization.

    torch can keep a destroyed group alive (FSDP2's DTensor specs, held by torch's C++ after the model
    and optimizer are gone, keep its device mesh and so the group), and then gloo's threads outlive the
    interpreter: one that releases a finished collective's tensors during finalization needs the GIL,
    cannot have it, and the worker aborts ("terminate called without an active exception", exit -6)
    after its outputs are written. The exit functions run first, with the interpreter intact, and
    stdout/stderr are flushed; a process that created no group returns and exits normally."""
    if not _created:
        return
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def rank_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): the process group's once one is up, else what
    torchrun put in the environment (``RANK``, ``WORLD_SIZE``), else (0, 1) for a plain launch."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    """Whether a process group of more than one process is up (collectives then have peers)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a copy; identity on one process)."""
    t = t.detach().clone()
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` on one process."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(model: torch.nn.Module, parallel: str, info: DistInfo) -> torch.nn.Module:
    """DDP or FSDP2 around the model; unchanged for ``parallel="none"``."""
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if parallel == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        from clinalign.models.layers import decoder_stack

        for layer in decoder_stack(model).layers:  # the transformer blocks: FSDP2's sharding unit
            fully_shard(layer)
        fully_shard(model)
    return model
