"""SFT recipe: maximise the log-likelihood of the gold answer given the prompt (loss on answer tokens
only). Reads top to bottom: check inputs, build the model, define one step, run the shared loop.

The loss is the mean over every answer token of the *global* batch: each process sums its tokens'
losses and divides by the global token count (all-reduced), times the number of processes because
DDP/FSDP average gradients. So 2 processes x batch b give the same update as 1 process x batch 2b.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clinalign.train import distributed, loop
from clinalign.train.config import TrainConfig, continued_adapter
from clinalign.train.data import load_rows, tokenize_rows
from clinalign.train.packing import collate_sft, sft_forward


def run(cfg: TrainConfig, validation: loop.Validation | None = None) -> Path:
    """Train; ``validation`` (a caller's held-out scores, e.g. the study's task metric) is evaluated
    beside the validation loss of ``val_data``."""
    from clinalign.models.loading import resolve_model_path

    # 1. inputs, all checked before anything is written
    out = loop.check_out(cfg)
    if not cfg.data:
        raise_no_data()
    model_path = resolve_model_path(cfg.model)
    tokenizer = loop.load_tokenizer(cfg, model_path)  # init_from checked here
    cfg = continued_adapter(cfg)  # init_from an adapter: its rank, alpha, layers (another value is refused)
    data = tokenize_rows("sft", load_rows("sft", cfg.data, task=cfg.task, seed=cfg.seed), tokenizer,
                         cfg.max_length, cfg.truncation)
    val = (tokenize_rows("sft", load_rows("sft", cfg.val_data, task=cfg.task, seed=cfg.seed), tokenizer,
                         cfg.max_length, cfg.truncation).examples if cfg.val_data else [])
    info = distributed.init(cfg.parallel, cfg.backend, cfg.device)
    try:
        # 2. model and the run's length and resume point, checked before anything is written; then OUT
        loop.seed_everything(cfg.seed)
        model = loop.load_policy(cfg, model_path).to(info.device)
        pad = tokenizer.pad_token_id

        # validation (optional): token-mean loss on held-out examples, and the caller's scores
        def val_loss(model: torch.nn.Module, _tokenizer: object) -> dict[str, float]:
            loss, count = 0.0, 0
            for i in range(0, len(val), cfg.batch_size):
                b = collate_sft(val[i : i + cfg.batch_size], pad)
                count += int((b["labels"][:, 1:] != -100).sum())
                loss += float(sft_forward(model, {k: v.to(info.device) for k, v in b.items()}, reduction="sum"))
            return {"val_loss": loss / max(count, 1)}

        validations = [loop.Validation(val_loss, {"val_loss": False})] if val else []
        validations += [validation] if validation is not None else []
        start = loop.plan(cfg, info, out, len(data.examples), validations)
        loop.prepare_out(cfg, info, out, {"examples": len(data.examples), "truncated": data.truncated,
                                          "dropped": data.dropped})
        model = distributed.wrap(model, cfg.parallel, info)

        # 3. one optimizer step: grad_accum micro-batches, token-mean over the global batch
        def step(micro: list[list[int]]) -> loop.StepStats:
            batches = [collate_sft([data.examples[i] for i in idx], pad) for idx in micro]
            counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
            global_tokens = float(distributed.all_reduce_sum(torch.tensor(float(sum(counts)))))
            loss_sum, tokens = 0.0, 0
            for b in batches:
                b = {k: v.to(info.device) for k, v in b.items()}
                loss = sft_forward(model, b, reduction="sum")
                (loss * info.world / global_tokens).backward()
                loss_sum += float(loss.detach())
                tokens += int(b["attention_mask"].sum())
            return loop.StepStats(loss_sum, float(sum(counts)), tokens, {}, sum(len(i) for i in micro))

        # 4. train
        return loop.train(cfg, info, out, model, tokenizer, start, step, validations=validations)
    finally:
        distributed.shutdown()


def raise_no_data() -> None:
    from clinalign.errors import ConfigError

    raise ConfigError("no training data: give --data FILE (and --task ID for task records)")
