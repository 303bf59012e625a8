"""What SFT and DPO share: seeding, the policy model (LoRA or full, optionally from a previous run),
optimizer and schedule, the output folder, and the training loop with its progress bar, metrics,
TensorBoard events and checkpoints. The recipes (``sft.py``, ``dpo.py``) only say what one step is.

Data order is a pure function of (seed, epoch, number of processes): ``DistributedSampler`` shuffles
with the seed and deals the examples out to the processes, so process r of N sees examples
r, r+N, ... of the same permutation, and a global batch holds the same examples whatever N is.
Resuming skips the micro-batches already done in the current epoch.

Faults a shared cluster has end in a clear message and no lost work: a non-finite loss or gradient
stops training at that step before the update is applied (``skip_nonfinite`` allows skipping a bounded
number of such batches); SIGTERM (Slurm's warning before preemption) makes the loop finish the step,
write a checkpoint and exit with ``RESUMABLE``; ``--resume`` uses the newest checkpoint that matches
its manifest (checkpoint.py), saying which damaged ones it passed over.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinalign.data.io import read_jsonl, write_text_atomic
from clinalign.errors import RESUMABLE, ConfigError, TrainingStopped
from clinalign.train import checkpoint, distributed, prefix
from clinalign.train.config import TrainConfig
from clinalign.train.distributed import DistInfo


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def check_out(cfg: TrainConfig) -> Path:
    """Refuse to overwrite a previous run unless resuming (checked before anything is written)."""
    if not cfg.out:
        raise ConfigError("no output directory: give --out or out: in the config")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    if not cfg.resume and ((out / "checkpoints").exists() or (out / "final").exists()):
        raise ConfigError(f"{out} already holds a training run; use --resume to continue it or another --out")
    return out


# ---------------------------------------------------------------- model


def load_policy(cfg: TrainConfig, model_path: str) -> torch.nn.Module:
    """The model to train.

    - ``init_from`` a peft adapter + LoRA: the base with that adapter, which keeps training (the result
      is one adapter on the original base, loadable on its own).
    - ``init_from`` a peft adapter + full fine-tuning: the adapter merged into the base, then all weights train.
    - ``init_from`` a full model directory: that model instead of ``model``, then LoRA or full as configured.
    Adapter initialisation draws from the seeded RNG, so every process builds the same adapter. With
    ``prefix_cache``, the model comes behind the cache of its frozen leading layers (train/prefix.py).
    """
    from clinalign.models.loading import is_adapter, load_model

    if cfg.init_from and not Path(cfg.init_from).is_dir():
        raise ConfigError(f"init_from {cfg.init_from} is not a directory (expected a previous run's final/)")
    if cfg.init_from and not is_adapter(cfg.init_from):
        model_path = cfg.init_from
    model = load_model(model_path, dtype=cfg.dtype, device=cfg.device, load_in_4bit=cfg.load_in_4bit)
    if cfg.gradient_checkpointing:  # before peft wraps it; non-reentrant works with frozen embeddings
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if is_adapter(cfg.init_from):
        from peft import PeftConfig, PeftModel

        # the adapter's shape (rank, alpha, layers) is the saved one; its dropout is this stage's own
        # setting (a regulariser of training, not part of the weights), so a DPO stage's is not ignored
        saved = PeftConfig.from_pretrained(cfg.init_from)
        if hasattr(saved, "lora_dropout"):
            saved.lora_dropout = cfg.lora_dropout
        model = PeftModel.from_pretrained(model, cfg.init_from, is_trainable=cfg.lora, config=saved)
        if not cfg.lora:
            model = model.merge_and_unload()
    elif cfg.lora:
        from peft import LoraConfig, get_peft_model

        layers, targets = None, cfg.lora_target_modules
        if cfg.lora_layers:
            if targets == "all-linear":  # peft needs explicit names with layers_to_transform
                targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            n = model.config.num_hidden_layers
            layers = list(range(max(0, n - cfg.lora_layers), n))
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, layers_to_transform=layers,
                          task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    model.config.use_cache = False
    model.train()
    return prefix.cached(cfg, model)


def optimizer_and_schedule(model: torch.nn.Module, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel is ~6x faster than the per-tensor loop on CPU (AdamW was a fifth of a step);
    # FSDP2's sharded DTensor parameters keep the per-tensor implementation.
    plain = all(type(p.data) is torch.Tensor for p in params)
    kind = {"fused": True} if plain else {"foreach": False}
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kind)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - frac)
        if cfg.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------- data order


def epoch_batches(n: int, cfg: TrainConfig, info: DistInfo, epoch: int) -> list[list[int]]:
    """This process's micro-batches of example indices for one epoch (incomplete ones dropped)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=info.world, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i : i + cfg.batch_size] for i in range(0, len(idx) - cfg.batch_size + 1, cfg.batch_size)]


def steps_per_epoch(n: int, cfg: TrainConfig, world: int) -> int:
    steps = (n // world) // cfg.batch_size // cfg.grad_accum
    if steps < 1:
        raise ConfigError(
            f"{n} examples are too few for one step of batch_size={cfg.batch_size} x grad_accum="
            f"{cfg.grad_accum} x {world} process(es)"
        )
    return steps


# ---------------------------------------------------------------- the loop


@dataclass
class StepStats:
    """Sums over this process's examples of one optimizer step; the loop all-reduces and divides."""

    loss_sum: float
    count: float  # examples (DPO) or answer tokens (SFT): what ``loss_sum`` is a sum over
    tokens: int  # tokens run through the model (for tokens/s)
    sums: dict[str, float]  # per-example sums of extra metrics (divided by ``examples``)
    examples: int


StepFn = Callable[[list[list[int]]], StepStats]


class _LineProgress:
    """Progress for a pipe or log file: a rich bar redrawn with carriage returns is mangled there, so a
    plain line at most every ``every_s`` seconds (and at the last step), the same fields as the bar."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self.tasks, self.last = every_s, {}, -math.inf

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int, completed: int = 0, stats: str = "") -> str:
        self.tasks[description] = {"total": total, "completed": completed}
        return description

    def update(self, task: str, completed: int | None = None, total: int | None = None, stats: str = "") -> None:
        t = self.tasks[task]
        t.update({k: v for k, v in (("completed", completed), ("total", total)) if v is not None})
        now = time.monotonic()
        if completed is not None and (now - self.last >= self.every_s or t["completed"] >= t["total"]):
            self.last = now
            print(f"{task} step {t['completed']}/{t['total']}  {stats}".rstrip(), flush=True)


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if enabled and not sys.stdout.isatty():
        return _LineProgress()
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"), disable=not enabled, transient=False,
    )


@contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
    """An event set by SIGTERM while training runs (the previous handler is restored afterwards)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals reach only the main thread
        return
    old = signal.signal(signal.SIGTERM, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def _grad_norm(model: torch.nn.Module, max_norm: float | None) -> float:
    """The total gradient norm (clipped to ``max_norm`` when set); inf or nan when a gradient is."""
    params = [p for p in model.parameters() if p.requires_grad]
    if max_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=False)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a DTensor
    return float(norm)


def _restore_metrics(path: Path, step: int) -> None:
    """After a resume, drop metric rows written after the checkpoint (they will be redone)."""
    if not path.is_file():
        return
    rows = read_jsonl(path)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))


def train(
    cfg: TrainConfig,
    info: DistInfo,
    out: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    n_examples: int,
    step_fn: StepFn,
    metric_names: Sequence[str] = (),
    eval_fn: Callable[[], dict[str, float]] | None = None,
) -> Path:
    """Run the optimizer steps, log, checkpoint; write ``final/``. Returns the final directory.

    With ``eval_fn`` (a validation set), it is evaluated every ``eval_every`` steps (default once per
    epoch); the best evaluation's weights are kept in ``best/`` and, with ``restore_best``, become
    ``final/``; ``early_stopping_patience`` evaluations without improvement end training early.
    """
    per_epoch = steps_per_epoch(n_examples, cfg, info.world)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else cfg.max_steps  # max_steps overrides epochs (transformers' rule)
    optimizer, scheduler = optimizer_and_schedule(model, cfg, total)
    step, epoch, pos, skipped = 0, 0, 0, 0

    def warn(message: str) -> None:
        if info.is_main:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    last = checkpoint.latest(out, warn=warn) if cfg.resume else None
    if cfg.resume and last is None and any((out / "checkpoints").glob("step-*")):
        warn("no intact checkpoint left; training starts again from step 0")
    if last is not None:
        saved = json.loads((last / "state.json").read_text())
        if (saved["world"], saved["batch_size"], saved["examples"]) != (info.world, cfg.batch_size, n_examples):
            raise ConfigError(
                f"cannot resume {last}: it was made with {saved['world']} process(es), batch_size "
                f"{saved['batch_size']} and {saved['examples']} examples; resume with the same launch and data"
            )
        state = checkpoint.load(last, info, model, optimizer, scheduler, cfg.parallel)
        step, epoch, pos = state["step"], state["epoch"], state["position"]
        skipped = int(state.get("nonfinite_skipped", 0))
    guard = _Guard.from_state(cfg, last)

    writer = None
    metrics_path = out / "metrics.jsonl"
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        _restore_metrics(metrics_path, step)
        writer = SummaryWriter(str(out / "tb"), purge_step=step if last is not None else None)

    def save() -> Path:
        return checkpoint.save(out, info, model, optimizer, scheduler, cfg.parallel,
                               {"step": step, "epoch": epoch, "position": pos, "seed": cfg.seed, "world": info.world,
                                "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                                "examples": n_examples, "guard": guard.state(), "nonfinite_skipped": skipped})

    every = cfg.eval_every or per_epoch

    def evaluate() -> bool:
        """Validation at this step; True when training should stop early."""
        scores = eval_fn()  # type: ignore[misc]
        improved = guard.update(scores)
        if info.is_main:
            with open(out / "val_metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **scores, "best": improved}) + "\n")
            for k, v in scores.items():
                writer.add_scalar(f"val/{k}", v, step)  # type: ignore[union-attr]
        if improved:
            checkpoint.save_final(out, info, model, tokenizer, cfg.parallel, name="best")
        return guard.should_stop()

    with _sigterm_flag() as term, _progress(info.is_main and cfg.progress) as bar:
        task = bar.add_task(cfg.stage.upper(), total=total, completed=step, stats="")
        while step < total:
            batches = epoch_batches(n_examples, cfg, info, epoch)
            while pos < per_epoch and step < total:
                t0 = time.perf_counter()
                stats = step_fn(batches[pos * cfg.grad_accum : (pos + 1) * cfg.grad_accum])
                norm = _grad_norm(model, cfg.max_grad_norm)
                names = list(metric_names)
                # one all-reduce carries the step's sums and what every process must agree on: whether a
                # gradient was non-finite somewhere, and whether SIGTERM arrived anywhere
                vec = torch.tensor([stats.loss_sum, stats.count, stats.tokens, stats.examples,
                                    float(not math.isfinite(norm)), float(term.is_set())]
                                   + [stats.sums[k] for k in names], dtype=torch.float64)
                vec = distributed.all_reduce_sum(vec)
                lr = scheduler.get_last_lr()[0]
                step, pos = step + 1, pos + 1
                if vec[4] > 0 or not math.isfinite(float(vec[0])):
                    optimizer.zero_grad(set_to_none=True)  # the update is not applied
                    skipped += 1
                    what = "loss" if not math.isfinite(float(vec[0])) else "gradient"
                    if skipped > cfg.skip_nonfinite:
                        prev = checkpoint.latest(out)
                        raise TrainingStopped(
                            f"non-finite {what} at step {step}: training stopped, final/ not written; last good "
                            f"checkpoint: {prev or 'none (none was written yet)'}. Lower lr, use float32, or "
                            f"skip such batches with skip_nonfinite=N (used {skipped - 1} of {cfg.skip_nonfinite})")
                    warn(f"non-finite {what} at step {step}: batch skipped without an update "
                         f"({skipped} of skip_nonfinite={cfg.skip_nonfinite})")
                    scheduler.step()
                else:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    dt = time.perf_counter() - t0
                    row = {"step": step, "epoch": epoch + pos / per_epoch, "loss": float(vec[0] / vec[1]),
                           "lr": lr, "tokens_per_s": float(vec[2]) / max(dt, 1e-9)}
                    row.update({k: float(vec[6 + i] / vec[3]) for i, k in enumerate(names)})
                    if info.is_main and step % cfg.log_every == 0:
                        with open(metrics_path, "a", encoding="utf-8") as f:
                            f.write(json.dumps(row) + "\n")
                        for k, v in row.items():
                            if k != "step":
                                writer.add_scalar(f"train/{k}", v, step)  # type: ignore[union-attr]
                    shown = {"loss": row["loss"], **{k: row[k] for k in names if k != "chosen_reward"
                                                     and k != "rejected_reward"}}
                    bar.update(task, completed=step, stats="  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                               + f"  {row['tokens_per_s']:.0f} tok/s")
                if vec[5] > 0:
                    path = save()
                    if writer is not None:
                        writer.close()
                    raise TrainingStopped(f"SIGTERM at step {step}: checkpoint {path} written; run the same "
                                          f"command with --resume to continue", exit_code=RESUMABLE)
                stop = eval_fn is not None and (step % every == 0 or step == total) and evaluate()
                if cfg.save_every and step % cfg.save_every == 0 and step < total:
                    save()
                if stop:
                    total = step  # early stopping: this is the last step
                    bar.update(task, total=total)
            if pos == per_epoch:
                epoch, pos = epoch + 1, 0
    save()
    if writer is not None:
        writer.close()
    final = checkpoint.save_final(out, info, model, tokenizer, cfg.parallel)
    if eval_fn is not None and cfg.restore_best and (out / "best").is_dir() and info.is_main:
        shutil.rmtree(final)
        shutil.copytree(out / "best", final)
    distributed.barrier()
    return final


@dataclass
class _Guard:
    """Best validation score so far and evaluations since it improved (kept in checkpoints)."""

    metric: str
    patience: int | None
    best: float | None = None
    bad: int = 0

    @classmethod
    def from_state(cls, cfg: TrainConfig, last: Path | None) -> _Guard:
        g = cls(cfg.early_stopping_metric, cfg.early_stopping_patience)
        if last is not None:
            saved = json.loads((last / "state.json").read_text()).get("guard") or {}
            g.best, g.bad = saved.get("best"), saved.get("bad", 0)
        return g

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def update(self, scores: dict[str, float]) -> bool:
        if self.metric not in scores:
            raise ConfigError(f"early_stopping_metric {self.metric!r} is not one of {', '.join(scores)}")
        v = scores[self.metric]
        lower = self.metric.endswith("loss")
        if self.best is None or (v < self.best if lower else v > self.best):
            self.best, self.bad = v, 0
            return True
        self.bad += 1
        return False

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience


def prepare_out(cfg: TrainConfig, info: DistInfo, out: Path, notes: dict[str, Any]) -> None:
    """Create the output folder and save the config actually used (rank 0), after inputs were checked."""
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", cfg.dump())
        write_text_atomic(out / "data_summary.json", json.dumps(notes, indent=2) + "\n")
    distributed.barrier()
