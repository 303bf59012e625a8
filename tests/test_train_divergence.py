"""Divergence (train/divergence.py): a run whose learning rate is far too large stops with exit 3, the
message the user acts on, no final/, and the last good checkpoint named; a healthy run never stops."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from clinalign.cli import run
from clinalign.errors import DIVERGED
from clinalign.train.divergence import WINDOW, Divergence
from helpers import uti_stage_files


def _feed(d: Divergence, losses, norms=None):
    norms = norms or [10.0] * len(losses)
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True), start=1):
        hit = d.check(step, loss, norm)
        if hit is not None:
            return hit
    return None


def _fresh(norm: float = 10.0) -> Divergence:
    d = Divergence()
    d.norm = norm
    return d


def test_healthy_curves_never_stop():
    rng = random.Random(0)
    sft = [3.0 * math.exp(-s / 20) * rng.uniform(0.6, 1.4) + 0.05 for s in range(300)]  # noisy, falling
    dpo = [math.log(2)] * 5 + [0.69 - 0.001 * s * rng.uniform(0, 2) for s in range(300)]  # ln 2, then lower
    flat = [0.0] * 50  # lr 0: nothing moves
    for losses in (sft, dpo, flat):
        assert _feed(_fresh(), losses) is None
    # Adam-sized steps on the weights: a percent a step, for long, is growth, not divergence
    assert _feed(_fresh(), [1.0] * 100, [10.0 * 1.01**s for s in range(1, 101)]) is None


def test_the_loss_staying_above_its_start_stops_at_the_fifth_high_step():
    start = [2.0, 2.2, 1.8, 2.1, 1.9]  # mean 2.0: the limit is 2.0 + 1.0 * 2.0 = 4.0
    losses = [*start, 1.5, 1.4, 4.5, 1.3, 4.2, 4.9, 6.0, 7.0, 7.6]  # one high step (8) recovers; 10.. stay
    hit = _feed(_fresh(), losses)
    assert hit is not None and hit.step == 14 and hit.start == pytest.approx(2.0) and hit.loss == 7.6
    assert "stayed above 4 for 5 steps (from step 10)" in hit.reason
    assert hit.last_good == 8  # step 10's loss was made by the weights of step 9's update
    # a DPO start (ln 2): above 2 ln 2 = 1.386 five times stops; the demo's spikes to 1.15 never do
    assert _feed(_fresh(), [math.log(2)] * WINDOW + [1.4] * WINDOW).step == 10
    assert _feed(_fresh(), [math.log(2)] * WINDOW + [1.15, 0.9, 1.15, 1.15, 1.15, 1.15, 0.4] * 10) is None
    assert _feed(_fresh(), [math.log(2)] * WINDOW + [1.38] * 50) is None
    # the absolute floor (0.1) holds for a start near 0
    assert _feed(_fresh(), [0.01] * WINDOW + [0.12] * WINDOW) is not None
    assert _feed(_fresh(), [0.01] * WINDOW + [0.10] * 50) is None


def test_an_update_that_more_than_doubles_the_weights_stops_at_once():
    hit = _feed(_fresh(8.5), [2.3, 2.3], [8.6, 1.3e8])
    assert hit.step == 2 and hit.last_good == 1 and hit.start == pytest.approx(2.3)
    assert "multiplied the trainable weights' norm by 1.51e+07 (8.6 -> 1.3e+08)" in hit.reason
    assert _feed(_fresh(8.5), [2.3, 2.3], [8.6, 17.1]) is None  # just under twice


def test_state_round_trips_so_a_resumed_run_judges_the_same():
    losses = [2.0] * WINDOW + [4.5] * 3
    d = _fresh()
    _feed(d, losses)
    again = Divergence.from_state(True, {"divergence": json.loads(json.dumps(d.state()))})
    again.norm = d.norm
    assert again.check(9, 4.6, 10.0) is None and again.check(10, 4.6, 10.0).step == 10
    off = Divergence.from_state(False, None)
    off.norm = 1.0
    assert off.check(1, 1.0, 1e9) is None


# -- end to end on the tiny model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("diverge")
    uti_stage_files(d, 32, seed=5)
    return d


def _args(stage, model, files, out, *extra):
    return ["train", stage, "--model", str(model), "--data", str(files / f"{stage}.jsonl"), "--out", str(out),
            "--batch-size", "4", "--epochs", "2", "--save-every", "3", "max_length=256", "progress=false",
            "lora_rank=4", *extra]


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_lr_1e6_stops_with_the_message_and_exit_3(tiny_model_dir, files, tmp_path, capsys, stage):
    """The probe's case: `train sft|dpo --lr 1e6` exited 0 with final/ written and LoRA weights ~3e6."""
    out = tmp_path / "run"
    assert run(_args(stage, tiny_model_dir, files, out, "--lr", "1e6")) == DIVERGED == 3
    err = capsys.readouterr().err
    assert re.search(r"error: diverged at step 1 \(loss \d+\.\d+, started at \d+\.\d+\): lower lr \(was 1e\+06\)\. "
                     r"At step 1 its update multiplied the trainable weights' norm by [\d.e+]+", err), err
    assert "final/ not written; last good checkpoint: none" in err and "Traceback" not in err
    assert not (out / "final").exists() and not (out / "checkpoints").exists()
    # without the check the run "succeeds" with ruined weights: it is the check that stops it
    off = tmp_path / "off"
    assert run(_args(stage, tiny_model_dir, files, off, "--lr", "1e6", "--max-steps", "2",
                     "stop_on_divergence=false")) == 0
    from safetensors.torch import load_file

    assert max(float(v.abs().max()) for v in load_file(str(off / "final" / "adapter_model.safetensors")).values()) > 1e3


def test_a_climbing_loss_stops_and_names_the_checkpoint_from_before_it(tiny_model_dir, files, tmp_path, monkeypatch,
                                                                        capsys):
    """From step 8 on the loss is 10x what the model gives (the gradients too, which Adam absorbs, so the
    weights do not blow up: a slow divergence); the fifth high step, 12, stops the run. Step 8's loss was
    made by the weights of step 7's update, so the last good checkpoint is step-6, not step-9."""
    from clinalign.train import sft

    real, calls = sft.sft_forward, [0]

    def forward(*a, **kw):
        calls[0] += 1
        loss = real(*a, **kw)
        return loss * 10 if calls[0] >= 8 else loss

    monkeypatch.setattr(sft, "sft_forward", forward)
    out = tmp_path / "run"
    assert run(_args("sft", tiny_model_dir, files, out, "--lr", "1e-3")) == DIVERGED
    err = capsys.readouterr().err
    assert re.search(r"diverged at step 12 \(loss [\d.]+, started at [\d.]+\): lower lr \(was 0\.001\)\. At step 12 "
                     r"the loss stayed above [\d.]+ for 5 steps \(from step 8\)", err), err
    assert f"last good checkpoint: {out / 'checkpoints' / 'step-6'}" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-6", "step-9"]
    assert not (out / "final").exists()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 13))
