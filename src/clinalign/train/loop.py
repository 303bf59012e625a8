"""What SFT and DPO share: seeding, the policy model (LoRA or full, optionally from a previous run),
optimizer and schedule, the output folder, and the training loop with its progress bar, metrics,
TensorBoard events and checkpoints. The recipes (``sft.py``, ``dpo.py``) only say what one step is.

Data order is a pure function of (seed, epoch, number of processes): ``DistributedSampler`` shuffles
with the seed and deals the examples out to the processes, so process r of N sees examples
r, r+N, ... of the same permutation, and a global batch holds the same examples whatever N is.
Resuming skips the micro-batches already done in the current epoch.

Faults a shared cluster has end in a clear message and no lost work: a non-finite loss or gradient
stops training at that step before the update is applied (``skip_nonfinite`` allows skipping a bounded
number of such batches); a run that diverges stops with ``DIVERGED`` (train/divergence.py); SIGTERM
(Slurm's warning before preemption) makes the loop finish the step, write a checkpoint and exit with
``RESUMABLE`` (train/preempt.py: the other phases of a run); ``--resume`` uses the newest checkpoint
that matches its manifest (checkpoint.py), saying which damaged ones it passed over. Everything about
a run's length and resume point that can fail is judged by :func:`plan`, before the recipe writes
anything.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clinalign.data.io import read_jsonl, write_text_atomic
from clinalign.errors import DIVERGED, RESUMABLE, ConfigError, TrainingStopped
from clinalign.progress import progress
from clinalign.train import checkpoint, distributed, preempt, prefix
from clinalign.train.config import TrainConfig
from clinalign.train.distributed import DistInfo
from clinalign.train.divergence import Divergence


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


def load_tokenizer(cfg: TrainConfig, model_path: str) -> Any:
    """The run's tokenizer: ``init_from``'s own (a previous run's ``final/`` holds it; an adapter saved
    without one uses its base model's), else the model's. ``init_from`` and the tokenizer are checked
    here, before the data is read or anything written: a problem is one ``ConfigError`` naming the folder."""
    from clinalign.models.loading import is_adapter, tokenizer_dir
    from clinalign.models.loading import load_tokenizer as load

    if cfg.init_from:
        p = Path(cfg.init_from)
        if not p.is_dir():
            raise ConfigError(f"init_from {p} is not a directory (expected a previous run's final/)")
        if not is_adapter(p) and not (p / "config.json").is_file():
            raise ConfigError(f"init_from {p} holds neither a LoRA adapter (adapter_config.json) nor a model "
                              "(config.json): expected a previous run's final/")
    source = tokenizer_dir(cfg.init_from) if cfg.init_from else Path(model_path)
    try:
        return load(source)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = next(iter(str(e).strip().splitlines()), type(e).__name__)
        raise ConfigError(f"{source}: its tokenizer does not load ({first[:200]})") from None


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
        from safetensors import SafetensorError

        try:
            model = PeftModel.from_pretrained(model, cfg.init_from, is_trainable=cfg.lora, config=saved)
        except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as e:  # another base's, damaged
            first = next(iter(str(e).strip().splitlines()), type(e).__name__)
            raise ConfigError(f"init_from {cfg.init_from}: this adapter does not load onto {model_path}: "
                              f"{first[:300]}") from None
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


@dataclass(frozen=True)
class Validation:
    """Scores of the live model on held-out data, computed at every evaluation (each epoch by default).

    ``scores(model, tokenizer)`` returns ``{name: value}`` (the model is in eval mode, without
    gradients). ``higher_is_better`` gives each score's direction, so the best weights and early
    stopping follow it: a loss falls, an F1 rises. ``primary`` is the score that picks the best weights
    unless ``early_stopping_metric`` names another. ``report(evaluation, scores)`` hears every
    evaluation (1, 2, ...; a resumed run first replays those before its checkpoint) and returns True to
    stop training there, with the best weights so far as ``final/``: a search's pruner listens here.
    The recipes validate their own loss this way; a caller (the study) adds the task's metric.
    """

    scores: Callable[[torch.nn.Module, Any], dict[str, float]]
    higher_is_better: Mapping[str, bool]
    primary: str | None = None
    report: Callable[[int, dict[str, float]], bool] | None = None


def _grad_norm(model: torch.nn.Module, max_norm: float | None) -> float:
    """The total gradient norm (clipped to ``max_norm`` when set); inf or nan when a gradient is."""
    params = [p for p in model.parameters() if p.requires_grad]
    if max_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=False)
    return _scalar(norm)


def _weight_norm(model: torch.nn.Module) -> float:
    """The norm of the trainable weights (what divergence.py watches grow)."""
    return _scalar(torch.nn.utils.get_total_norm([p.detach() for p in model.parameters() if p.requires_grad],
                                                 foreach=False))


def _scalar(norm: torch.Tensor) -> float:
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2: a DTensor


def _restore_metrics(path: Path, step: int, write: bool = True) -> list[dict[str, Any]]:
    """After a resume, the metric rows written up to the checkpoint; those after it (they will be redone)
    are dropped from the file when ``write`` (rank 0)."""
    if not path.is_file():
        return []
    kept = [r for r in read_jsonl(path) if r["step"] <= step]
    if write:
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


@dataclass
class Reduced:
    """One optimizer step summed over every process. A single all-reduce carries it, laid out in one
    float64 tensor by field name, with what every process must agree on: whether a gradient was
    non-finite anywhere, and whether SIGTERM arrived anywhere."""

    loss_sum: float
    count: float
    tokens: float
    examples: float
    nonfinite_grads: float  # processes whose gradient norm was not finite
    sigterms: float  # processes SIGTERM reached
    sums: dict[str, float]  # the recipe's extra metrics, per-example sums

    def all_reduce(self) -> Reduced:
        names = [f.name for f in fields(self) if f.name != "sums"]
        flat = {**{n: float(getattr(self, n)) for n in names}, **{f"sums.{k}": v for k, v in self.sums.items()}}
        summed = distributed.all_reduce_sum(torch.tensor(list(flat.values()), dtype=torch.float64)).tolist()
        total = dict(zip(flat, summed, strict=True))
        return Reduced(**{n: total[n] for n in names}, sums={k: total[f"sums.{k}"] for k in self.sums})

    def nonfinite(self) -> str | None:
        """What was not finite on some process ("loss" or "gradient"): the update must not be applied."""
        if not math.isfinite(self.loss_sum):
            return "loss"
        return "gradient" if self.nonfinite_grads > 0 else None

    def row(self, step: int, epoch: float, lr: float, seconds: float) -> dict[str, Any]:
        """The metrics.jsonl row: means over the global batch."""
        return {"step": step, "epoch": epoch, "loss": self.loss_sum / self.count, "lr": lr,
                "tokens_per_s": self.tokens / max(seconds, 1e-9),
                **{k: v / self.examples for k, v in self.sums.items()}}


@dataclass
class _Position:
    """Where training is (kept in every checkpoint's ``state.json``)."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # optimizer steps done in this epoch
    nonfinite_skipped: int = 0  # batches skipped without an update so far


class _Log:
    """What rank 0 writes as training goes (other ranks write nothing): ``metrics.jsonl`` and
    ``val_metrics.jsonl`` rows and TensorBoard scalars. A resumed run first drops the rows written
    after its checkpoint, which will be redone."""

    def __init__(self, info: DistInfo, out: Path, step: int, resumed: bool) -> None:
        self.out, self.writer = out, None
        #: the validation rows up to the checkpoint (every rank reads them: each replays them, see _Run)
        self.val_rows = _restore_metrics(out / "val_metrics.jsonl", step, write=info.is_main) if resumed else []
        if info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            _restore_metrics(out / "metrics.jsonl", step)
            if not resumed:
                (out / "val_metrics.jsonl").unlink(missing_ok=True)
            self.writer = SummaryWriter(str(out / "tb"), purge_step=step if resumed else None)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.out / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def train(self, row: dict[str, Any]) -> None:
        if self.writer is not None:
            self._append("metrics.jsonl", row)
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(f"train/{k}", v, row["step"])

    def val(self, step: int, scores: dict[str, float], improved: bool) -> None:
        if self.writer is not None:
            self._append("val_metrics.jsonl", {"step": step, **scores, "best": improved})
            for k, v in scores.items():
                self.writer.add_scalar(f"val/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass(frozen=True)
class Start:
    """Where a run starts, judged before anything is written (:func:`plan`): its length, its
    early-stopping guard, and with ``resume`` the checkpoint it continues from with that checkpoint's
    ``state.json`` (read once; the guard is restored from it)."""

    n_examples: int
    per_epoch: int
    total: int
    guard: _Guard
    checkpoint: Path | None = None
    saved: dict[str, Any] | None = None


def _warn(info: DistInfo, message: str) -> None:
    if info.is_main:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def plan(cfg: TrainConfig, info: DistInfo, out: Path, n_examples: int,
         validations: Sequence[Validation] = ()) -> Start:
    """The run's steps (too few examples for one step is an error), with ``resume`` the newest intact
    checkpoint, which must come from the same launch and data, and an ``early_stopping_metric`` that
    ``validations`` compute. Called before the recipe writes anything, so a run refused here leaves
    ``OUT`` as it was."""
    guard = _Guard.for_run(cfg, validations)  # raises for a metric no validation computes
    per_epoch = steps_per_epoch(n_examples, cfg, info.world)
    total = per_epoch * cfg.epochs if cfg.max_steps is None else cfg.max_steps  # max_steps overrides epochs (transformers' rule)
    last = checkpoint.latest(out, warn=lambda m: _warn(info, m)) if cfg.resume else None
    if cfg.resume and last is None and any((out / "checkpoints").glob("step-*")):
        _warn(info, "no intact checkpoint left; training starts again from step 0")
    if last is None:
        return Start(n_examples, per_epoch, total, guard)
    saved = checkpoint.read_state(last)
    if (saved["world"], saved["batch_size"], saved["examples"]) != (info.world, cfg.batch_size, n_examples):
        raise ConfigError(
            f"cannot resume {last}: it was made with {saved['world']} process(es), batch_size "
            f"{saved['batch_size']} and {saved['examples']} examples; resume with the same launch and data"
        )
    guard.restore(saved)
    return Start(n_examples, per_epoch, total, guard, last, saved)


class _Run:
    """What one training run holds between its steps, and the steps' mechanics: resume, update (or
    skip a non-finite batch, or stop a diverging run), evaluate, checkpoint, stop, finish."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, out: Path, model: torch.nn.Module, tokenizer: Any,
                 start: Start, validations: Sequence[Validation] = ()) -> None:
        self.cfg, self.info, self.out, self.model, self.tokenizer = cfg, info, out, model, tokenizer
        self.n_examples, self.validations = start.n_examples, tuple(validations)
        self.optimizer, self.scheduler = optimizer_and_schedule(model, cfg, start.total)
        saved = start.saved
        if start.checkpoint is not None:  # weights, optimizer, scheduler and RNG as they were
            checkpoint.load(start.checkpoint, info, model, self.optimizer, self.scheduler, cfg.parallel)
        self.at = _Position(saved["step"], saved["epoch"], saved["position"],
                            int(saved.get("nonfinite_skipped", 0))) if saved else _Position()
        self.guard = start.guard
        self.divergence = Divergence.from_state(cfg.stop_on_divergence, saved)
        self.divergence.norm = _weight_norm(model)
        self.log = _Log(info, out, self.at.step, resumed=saved is not None)
        self.evaluations = len(self.log.val_rows)
        for k, row in enumerate(self.log.val_rows, 1):  # listeners hear the whole history again
            scores = {n: v for n, v in row.items() if n not in ("step", "best")}
            for v in self.validations:
                if v.report is not None:
                    v.report(k, scores)

    def warn(self, message: str) -> None:
        _warn(self.info, message)

    def step(self, step_fn: StepFn, micro: list[list[int]], sigterm: threading.Event) -> Reduced:
        """The recipe's forward and backward over ``micro``, summed over the processes, with whether
        SIGTERM has arrived (also during this step)."""
        stats = step_fn(micro)
        norm = _grad_norm(self.model, self.cfg.max_grad_norm)
        return Reduced(stats.loss_sum, stats.count, stats.tokens, stats.examples, float(not math.isfinite(norm)),
                       float(sigterm.is_set()), stats.sums).all_reduce()

    def update(self, result: Reduced) -> bool:
        """Apply the step's update; or, when something was not finite, skip the batch (within
        ``skip_nonfinite``) or stop training. Returns whether the update was applied."""
        what = result.nonfinite()
        if what is None:
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            return True
        self.optimizer.zero_grad(set_to_none=True)  # the update is not applied
        at, limit = self.at, self.cfg.skip_nonfinite
        at.nonfinite_skipped += 1
        if at.nonfinite_skipped > limit:
            prev = checkpoint.latest(self.out)
            raise TrainingStopped(
                f"non-finite {what} at step {at.step}: training stopped, final/ not written; last good "
                f"checkpoint: {prev or 'none (none was written yet)'}. Lower lr, use float32, or "
                f"skip such batches with skip_nonfinite=N (used {at.nonfinite_skipped - 1} of {limit})")
        self.warn(f"non-finite {what} at step {at.step}: batch skipped without an update "
                  f"({at.nonfinite_skipped} of skip_nonfinite={limit})")
        self.scheduler.step()
        return False

    def stop_if_diverged(self, row: dict[str, Any]) -> None:
        """After an applied (and logged) update: stop with ``DIVERGED``, writing nothing more, when
        divergence.py's rules fire."""
        d = self.divergence.check(self.at.step, row["loss"], _weight_norm(self.model))
        if d is None:
            return
        good = [p for p in (self.out / "checkpoints").glob("step-*") if int(p.name[5:]) <= d.last_good]
        kept = max(good, key=lambda p: int(p.name[5:]), default=None)
        self.log.close()
        raise TrainingStopped(
            f"diverged at step {d.step} (loss {d.loss:.4g}, started at {d.start:.4g}): lower lr (was {self.cfg.lr:g}). "
            f"At step {d.step} {d.reason}; training stopped, final/ not written; last good checkpoint: "
            f"{kept or 'none'} (stop_on_divergence=false turns this check off)", exit_code=DIVERGED)

    def save(self) -> Path:
        cfg, at = self.cfg, self.at
        return checkpoint.save(self.out, self.info, self.model, self.optimizer, self.scheduler, cfg.parallel,
                               {"step": at.step, "epoch": at.epoch, "position": at.position, "seed": cfg.seed,
                                "world": self.info.world, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                                "examples": self.n_examples, "guard": self.guard.state(),
                                "nonfinite_skipped": at.nonfinite_skipped, "divergence": self.divergence.state()})

    def stop_on_sigterm(self) -> None:
        path = self.save()
        self.log.close()
        raise TrainingStopped(f"SIGTERM at step {self.at.step}: checkpoint {path} written; run the same "
                              f"command with --resume to continue", exit_code=RESUMABLE)

    def evaluate(self) -> bool:
        """Every validation at this step, the best weights kept in ``best/``; True when training should stop
        (early stopping, or a listener's ``report`` said so)."""
        self.model.eval()
        try:
            with torch.no_grad():
                scores = {k: x for v in self.validations for k, x in v.scores(self.model, self.tokenizer).items()}
        finally:
            self.model.train()
        improved = self.guard.update(scores)
        self.log.val(self.at.step, scores, improved)
        if improved:
            checkpoint.save_final(self.out, self.info, self.model, self.tokenizer, self.cfg.parallel, name="best")
        self.evaluations += 1
        stop = [v.report(self.evaluations, scores) for v in self.validations if v.report is not None]
        return self.guard.should_stop() or any(stop)

    def finish(self, restore_best: bool, sigterm: threading.Event) -> Path:
        """The last checkpoint and ``final/`` (the best evaluated weights instead, with ``restore_best``).
        SIGTERM meanwhile lets the writes complete, then stops the run as resumable all the same."""
        path = self.save()
        self.log.close()
        final = checkpoint.save_final(self.out, self.info, self.model, self.tokenizer, self.cfg.parallel)
        if restore_best and (self.out / "best").is_dir() and self.info.is_main:
            shutil.rmtree(final)
            shutil.copytree(self.out / "best", final)
        distributed.barrier()
        if float(distributed.all_reduce_sum(torch.tensor(float(sigterm.is_set())))) > 0:
            raise TrainingStopped(f"SIGTERM while final/ was written: {final} was completed, with checkpoint "
                                  f"{path}; the run is finished (--resume only writes final/ again)",
                                  exit_code=RESUMABLE)
        return final


def _bar_text(row: dict[str, Any], shown: Sequence[str]) -> str:
    return "  ".join(f"{k} {row[k]:.4f}" for k in ("loss", *shown)) + f"  {row['tokens_per_s']:.0f} tok/s"


def train(
    cfg: TrainConfig,
    info: DistInfo,
    out: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    start: Start,
    step_fn: StepFn,
    shown: Sequence[str] = (),
    validations: Sequence[Validation] = (),
) -> Path:
    """Run the optimizer steps, log, checkpoint; write ``final/``. Returns the final directory.

    ``start`` is :func:`plan`'s verdict on the run's length and resume point. ``step_fn`` runs one
    optimizer step's micro-batches; every metric it sums is logged, and the progress bar shows the loss
    and the ``shown`` ones. With ``validations``, the model is evaluated every ``eval_every`` steps
    (default once per epoch) and the scores logged to ``val_metrics.jsonl``; the best evaluation's
    weights (by ``early_stopping_metric``, in its declared direction) are kept in ``best/`` and, with
    ``restore_best``, become ``final/``; ``early_stopping_patience`` evaluations without improvement,
    or a validation's ``report``, end training early.
    """
    per_epoch, total, n_examples = start.per_epoch, start.total, start.n_examples
    with preempt.deferred("training") as term:
        run = _Run(cfg, info, out, model, tokenizer, start, validations)
        at, every = run.at, cfg.eval_every or per_epoch
        with progress(f"{cfg.stage.upper()} step", total, completed=at.step,
                      enabled=info.is_main and cfg.progress) as bar:
            while at.step < total:
                batches = epoch_batches(n_examples, cfg, info, at.epoch)
                while at.position < per_epoch and at.step < total:
                    t0 = time.perf_counter()
                    micro = batches[at.position * cfg.grad_accum : (at.position + 1) * cfg.grad_accum]
                    result = run.step(step_fn, micro, term)
                    lr = run.scheduler.get_last_lr()[0]
                    at.step, at.position = at.step + 1, at.position + 1
                    if run.update(result):
                        row = result.row(at.step, at.epoch + at.position / per_epoch, lr, time.perf_counter() - t0)
                        if at.step % cfg.log_every == 0:
                            run.log.train(row)
                        bar.update(at.step, stats=_bar_text(row, shown))
                        run.stop_if_diverged(row)
                    if result.sigterms > 0:
                        run.stop_on_sigterm()
                    stop = bool(validations) and (at.step % every == 0 or at.step == total) and run.evaluate()
                    if cfg.save_every and at.step % cfg.save_every == 0 and at.step < total:
                        run.save()
                    if stop:
                        total = at.step  # early stopping: this is the last step
                        bar.update(total=total)
                if at.position == per_epoch:
                    at.epoch, at.position = at.epoch + 1, 0
        final = run.finish(restore_best=bool(validations) and cfg.restore_best, sigterm=term)
    preempt.phase("the end of the run", kept=f"{final} is complete")
    return final


@dataclass
class _Guard:
    """Best validation score so far and evaluations since it improved (kept in checkpoints); the score's
    direction is the one its validation declared."""

    metric: str
    higher_is_better: bool
    patience: int | None
    best: float | None = None
    bad: int = 0

    @classmethod
    def for_run(cls, cfg: TrainConfig, validations: Sequence[Validation]) -> _Guard:
        """The fresh guard of a run validated by ``validations``. Its score: ``early_stopping_metric``,
        else the first validation's ``primary``, else ``val_loss``; one no validation computes is an
        error before any step."""
        directions = {k: up for v in validations for k, up in v.higher_is_better.items()}
        metric = cfg.early_stopping_metric or next((v.primary for v in validations if v.primary), "val_loss")
        if validations and metric not in directions:
            raise ConfigError(f"early_stopping_metric {metric!r} is not one of {', '.join(directions)}")
        return cls(metric, directions.get(metric, False), cfg.early_stopping_patience)

    def restore(self, saved: dict[str, Any]) -> None:
        """Best score and evaluations since, as a checkpoint's ``state.json`` left them."""
        state = saved.get("guard") or {}
        self.best, self.bad = state.get("best"), state.get("bad", 0)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def update(self, scores: dict[str, float]) -> bool:
        v = scores[self.metric]
        if self.best is None or (v > self.best if self.higher_is_better else v < self.best):
            self.best, self.bad = v, 0
            return True
        self.bad += 1
        return False

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience


def prepare_out(cfg: TrainConfig, info: DistInfo, out: Path, notes: dict[str, Any]) -> None:
    """Create the output folder and save the config actually used (rank 0): the first write of a run,
    after every check (inputs, model, :func:`plan`) has passed."""
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", cfg.dump())
        write_text_atomic(out / "data_summary.json", json.dumps(notes, indent=2) + "\n")
    preempt.phase("the start of training", kept=f"{out / 'config.yaml'} is written, no step was run")
    distributed.barrier()
