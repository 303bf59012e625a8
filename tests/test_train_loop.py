"""The loop's step results travel by field name: one all-reduce sums every field over the processes,
and the metrics row divides each sum by what it is a sum over."""

from __future__ import annotations

import math

import pytest

from clinalign.train.loop import Reduced


def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        mine = Reduced(loss_sum=1.0 + rank, count=2.0, tokens=10.0 * (rank + 1), examples=2.0,
                       nonfinite_grads=float(rank == 1), sigterms=0.0,
                       sums={"tokens": 3.0 * (rank + 1), "reward_margin": 0.5 + rank})
        torch.save(mine.all_reduce(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_sum_every_field_by_name(tmp_path):
    """A metric named like a field ("tokens") stays the recipe's metric; a non-finite gradient on one
    process is seen by both."""
    import torch
    import torch.multiprocessing as mp

    out = str(tmp_path / "reduced")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'pg'}", out), nprocs=2, join=True)
    for rank in range(2):
        total = torch.load(f"{out}.{rank}", weights_only=False)
        assert total == Reduced(loss_sum=3.0, count=4.0, tokens=30.0, examples=4.0, nonfinite_grads=1.0,
                                sigterms=0.0, sums={"tokens": 9.0, "reward_margin": 2.0})
        assert total.nonfinite() == "gradient"


def test_one_process_row_and_what_was_not_finite():
    step = Reduced(loss_sum=3.0, count=4.0, tokens=200.0, examples=2.0, nonfinite_grads=0.0, sigterms=0.0,
                   sums={"reward_margin": 1.0, "reward_accuracy": 2.0}).all_reduce()
    assert step.nonfinite() is None
    row = step.row(step=7, epoch=1.5, lr=1e-4, seconds=2.0)
    assert row == {"step": 7, "epoch": 1.5, "loss": 0.75, "lr": 1e-4, "tokens_per_s": 100.0,
                   "reward_margin": 0.5, "reward_accuracy": 1.0}
    assert list(row) == ["step", "epoch", "loss", "lr", "tokens_per_s", "reward_margin", "reward_accuracy"]
    bad = Reduced(math.nan, 4.0, 1.0, 2.0, 1.0, 0.0, {})
    assert bad.nonfinite() == "loss"  # a non-finite loss is named before a gradient


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_the_recipe_says_what_the_progress_bar_shows(stage):
    """The loop shows the loss, the metrics the recipe names and tokens/s; it filters nothing by name."""
    from clinalign.train import dpo
    from clinalign.train.loop import _bar_text

    row = {"step": 1, "epoch": 0.5, "loss": 0.5, "lr": 1e-4, "tokens_per_s": 99.6, "reward_margin": 0.25,
           "reward_accuracy": 0.75, "chosen_reward": 0.1, "rejected_reward": -0.15}
    shown = dpo.SHOWN if stage == "dpo" else ()
    want = ("loss 0.5000  reward_margin 0.2500  reward_accuracy 0.7500  100 tok/s" if stage == "dpo"
            else "loss 0.5000  100 tok/s")
    assert _bar_text(row, shown) == want
