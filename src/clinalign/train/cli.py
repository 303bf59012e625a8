"""`clinalign train sft|dpo`: a YAML config, ``key=value`` overrides, and the common flags directly.

Precedence: config file < ``key=value`` overrides < flags. Launch with ``torchrun`` for several
processes (see docs/distributed.md); the command is the same.
"""

from __future__ import annotations

from pathlib import Path

import typer

from clinalign.data.io import MAX_RECORD_BYTES, record_limit
from clinalign.errors import DIVERGED, RESUMABLE, ClinalignError

app = typer.Typer(no_args_is_help=True)

#: shown under each command's --help (errors.py, train/divergence.py, train/preempt.py)
EXIT_CODES = (f"Exit codes: 0 done; {ClinalignError.exit_code} bad input or config (nothing written), or a fault "
              f"that stopped training (the message says what was kept); {DIVERGED} diverged: start again with a "
              f"lower lr; {RESUMABLE} stopped by SIGTERM: run the same command with --resume.")

_Over = typer.Argument(None, help="key=value overrides of config keys (e.g. lora_rank=8 parallel=ddp)")
_MaxRecord = typer.Option(MAX_RECORD_BYTES, "--max-record-bytes", min=1,
                          help="refuse a data record over this many bytes before reading its text (bounded memory)")


def _config_help(example: str) -> str:
    """--config's help names the built-in defaults, so nobody mistakes the example file for them."""
    from clinalign.train.config import DEFAULT_EPOCHS, DEFAULT_LR

    lrs = ", ".join(f"{'LoRA' if lora else 'full'} {stage.upper()} {lr:g}" for (stage, lora), lr in DEFAULT_LR.items())
    epochs = ", ".join(f"{stage.upper()} {n}" for stage, n in DEFAULT_EPOCHS.items())
    return (f"training YAML of TrainConfig keys; {example} is an example, not the defaults. Without it the "
            f"built-in defaults apply (train/config.py): epochs {epochs}; lr {lrs}")


def _loss_help() -> str:
    """--loss's help lists the registered losses (train/losses.py) with the knobs each adds."""
    from clinalign.train.losses import LOSSES, Loss

    shared = Loss.knobs()
    names = [f"{name} ({', '.join(k for k in cls.knobs() if k not in shared)})" if len(cls.knobs()) > len(shared)
             else name for name, cls in LOSSES.items()]
    return (f"preference loss: {', '.join(names)}. Set a knob with loss.KNOB=VALUE; every loss also takes "
            f"{' and '.join(shared)}")


def _run(stage: str, config: Path | None, overrides: list[str] | None, max_record_bytes: int,
         **flags: object) -> None:
    from clinalign.train.api import run
    from clinalign.train.config import build_config
    from clinalign.train.distributed import rank_world

    cfg = build_config(config, overrides, {"stage": stage, **flags})
    with record_limit(max_record_bytes):  # every data file the run reads
        final = run(cfg)
    if rank_world()[0] == 0:
        typer.echo(f"{stage}: final weights in {final}")


@app.command(epilog=EXIT_CODES)
def sft(
    overrides: list[str] | None = _Over,
    config: Path | None = typer.Option(None, "--config", "-c", help=_config_help("configs/train_sft.yaml")),
    model: str | None = typer.Option(None, help="local HF model directory, or 'default'"),
    data: str | None = typer.Option(None, help="prompt/completion JSONL/CSV (or task records with --task)"),
    task: str | None = typer.Option(None, help="task id or task YAML: --data holds its records"),
    out: str | None = typer.Option(None, help="output directory"),
    max_steps: int | None = typer.Option(None, help="stop after this many optimizer steps"),
    epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None, help="examples per process per micro-batch"),
    grad_accum: int | None = typer.Option(None, help="micro-batches per optimizer step"),
    lr: float | None = typer.Option(None),
    lora: bool | None = typer.Option(None, "--lora/--no-lora", help="LoRA adapters or full fine-tuning"),
    seed: int | None = typer.Option(None),
    save_every: int | None = typer.Option(None, help="checkpoint every N optimizer steps"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest intact (checksummed) checkpoint in --out"),
    init_from: str | None = typer.Option(None, help="start from a previous run's final/ (adapter or model)"),
    max_record_bytes: int = _MaxRecord,
) -> None:
    """Supervised fine-tuning on (prompt, completion); loss on the answer tokens only."""
    _run("sft", config, overrides, max_record_bytes, model=model, data=data, task=task, out=out, max_steps=max_steps,
         epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, lora=lora, seed=seed,
         save_every=save_every, resume=resume or None, init_from=init_from)


@app.command(epilog=EXIT_CODES)
def dpo(
    overrides: list[str] | None = _Over,
    config: Path | None = typer.Option(None, "--config", "-c", help=_config_help("configs/train_dpo.yaml")),
    model: str | None = typer.Option(None, help="local HF model directory, or 'default'"),
    data: str | None = typer.Option(None, help="prompt/chosen/rejected JSONL/CSV (or task records with --task)"),
    task: str | None = typer.Option(None, help="task id or task YAML: --data holds its records"),
    out: str | None = typer.Option(None, help="output directory"),
    max_steps: int | None = typer.Option(None, help="stop after this many optimizer steps"),
    epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None, help="pairs per process per micro-batch"),
    grad_accum: int | None = typer.Option(None, help="micro-batches per optimizer step"),
    lr: float | None = typer.Option(None),
    lora: bool | None = typer.Option(None, "--lora/--no-lora", help="LoRA adapters or full fine-tuning"),
    beta: float | None = typer.Option(None, help="DPO temperature"),
    loss: str | None = typer.Option(None, help=_loss_help()),
    seed: int | None = typer.Option(None),
    save_every: int | None = typer.Option(None, help="checkpoint every N optimizer steps"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest intact (checksummed) checkpoint in --out"),
    init_from: str | None = typer.Option(None, help="start from an SFT run's final/ (adapter or model)"),
    max_record_bytes: int = _MaxRecord,
) -> None:
    """Direct preference optimisation on (prompt, chosen, rejected), from the base or an SFT output."""
    _run("dpo", config, overrides, max_record_bytes, model=model, data=data, task=task, out=out, max_steps=max_steps,
         epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, lora=lora, beta=beta, loss=loss,
         seed=seed, save_every=save_every, resume=resume or None, init_from=init_from)
