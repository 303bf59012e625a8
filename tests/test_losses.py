"""The DPO family against TRL 1.16 on the same log-probs.

TRL 1.16 computes its losses inline in ``DPOTrainer._compute_loss`` (no standalone loss function), so
we run that very method, bound to a namespace that carries the trainer's settings, with a stub model
whose per-token log-probs sum to the log-probs under test and precomputed reference log-probs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clinalign.errors import ConfigError
from clinalign.train.losses import LOSS_TYPES, DPOLoss, dpo_loss, sft_loss

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")

B, T = 6, 4  # pairs, answer tokens per sequence in the stub


class _Accel:
    device = torch.device("cpu")

    def gather_for_metrics(self, x):
        return x if isinstance(x, torch.Tensor) and x.dim() else torch.as_tensor(x).reshape(1)

    gather = gather_for_metrics


def _trl_loss(
    pc, pr, rc, rr, lengths_c, lengths_r, *, beta, loss_types, loss_weights=None, label_smoothing=0.0
):
    """Run TRL's ``_compute_loss`` on given summed log-probs; returns (loss, TRL's logged metrics)."""
    n = pc.numel()
    width = T + 2
    completion_mask = torch.zeros(2 * n, width, dtype=torch.long)
    log_probs = torch.zeros(2 * n, width - 1, dtype=torch.float64)
    for i, (logp, length) in enumerate(
        zip(torch.cat([pc, pr]), torch.cat([lengths_c, lengths_r]), strict=True)
    ):
        k = int(length)
        completion_mask[i, width - k :] = 1
        log_probs[i, width - 1 - k :] = logp / k  # k tokens summing to the sequence log-prob
    outputs = SimpleNamespace(
        log_probs=log_probs,
        entropy=torch.zeros_like(log_probs),
        mean_logits=torch.zeros_like(log_probs),
        is_top1=torch.zeros_like(log_probs, dtype=torch.bool),
    )
    model = lambda **kw: outputs  # noqa: E731
    model.training = True
    trainer = SimpleNamespace(
        model=model,
        accelerator=_Accel(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * n, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * n, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, trainer._metrics["train"]


def _logps(seed: int):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-(torch.rand(B, generator=g, dtype=torch.float64) * 20 + 0.5) for _ in range(4))
    lengths_c = torch.randint(1, T + 1, (B,), generator=g)
    lengths_r = torch.randint(1, T + 1, (B,), generator=g)
    return pc, pr, rc, rr, lengths_c, lengths_r


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_matches_trl_per_pair(loss_type, beta):
    pc, pr, rc, rr, lc, lr = _logps(seed=int(beta * 10))
    ours = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, chosen_lengths=lc, rejected_lengths=lr)
    for i in range(B):  # TRL returns the batch mean: compare pair by pair
        s = slice(i, i + 1)
        trl, metrics = _trl_loss(pc[s], pr[s], rc[s], rr[s], lc[s], lr[s], beta=beta, loss_types=[loss_type])
        assert abs(float(ours.losses[i]) - float(trl)) < 1e-6
        assert abs(float(ours.chosen_rewards[i]) - metrics["rewards/chosen"][0]) < 1e-6
        assert abs(float(ours.rejected_rewards[i]) - metrics["rewards/rejected"][0]) < 1e-6
    trl_mean, _ = _trl_loss(pc, pr, rc, rr, lc, lr, beta=beta, loss_types=[loss_type])
    assert abs(float(ours.losses.mean()) - float(trl_mean)) < 1e-6


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_conservative_matches_trl(eps):
    """TRL 1.16 dropped label smoothing from its sigmoid loss; its ``aot`` loss applies exactly the cDPO
    formula -(1-eps) log sigma(h) - eps log sigma(-h) to sorted log-ratios, and for a batch of one
    sorting is the identity, so per pair it is TRL's cDPO. Also checked against the closed form."""
    pc, pr, rc, rr, lc, lr = _logps(seed=3)
    ours = dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="conservative", label_smoothing=eps)
    same = dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="sigmoid", label_smoothing=eps)
    torch.testing.assert_close(ours.losses, same.losses, rtol=0, atol=0)
    for i in range(B):
        s = slice(i, i + 1)
        trl, _ = _trl_loss(
            pc[s], pr[s], rc[s], rr[s], lc[s], lr[s], beta=0.2, loss_types=["aot"], label_smoothing=eps
        )
        assert abs(float(ours.losses[i]) - float(trl)) < 1e-6
    h = 0.2 * ((pc - rc) - (pr - rr))
    closed = [
        -(1 - eps) * math.log(1 / (1 + math.exp(-x))) - eps * math.log(1 / (1 + math.exp(x))) for x in h
    ]
    assert max(abs(a - b) for a, b in zip(ours.losses.tolist(), closed, strict=True)) < 1e-9


def test_rpo_matches_trl_sigmoid_plus_weighted_sft():
    """RPO = DPO + alpha * NLL(chosen). TRL 1.16 spells it loss_type=["sigmoid", "sft"] with weights
    [1, alpha]; its NLL is the token mean over the batch's chosen answers, equal to our per-example
    mean when the chosen answers have the same length (as here)."""
    pc, pr, rc, rr, _, lr = _logps(seed=5)
    lc = torch.full((B,), 3)
    alpha = 0.7
    ours = dpo_loss(pc, pr, rc, rr, beta=0.1, rpo_alpha=alpha, chosen_nll=-pc / lc)
    trl, _ = _trl_loss(
        pc, pr, rc, rr, lc, lr, beta=0.1, loss_types=["sigmoid", "sft"], loss_weights=[1.0, alpha]
    )
    assert abs(float(ours.losses.mean()) - float(trl)) < 1e-6
    plain = dpo_loss(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(ours.losses - plain.losses, alpha * (-pc / lc))


def test_ipo_without_lengths_is_the_papers_sequence_form():
    pc, pr, rc, rr, _, _ = _logps(seed=7)
    out = dpo_loss(pc, pr, rc, rr, beta=0.25, loss_type="ipo")
    torch.testing.assert_close(out.losses, ((pc - rc) - (pr - rr) - 2.0) ** 2)


def test_gradient_pushes_chosen_up_and_rejected_down():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    for loss_type in LOSS_TYPES:
        pc.grad = pr.grad = None
        dpo_loss(
            pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), loss_type=loss_type
        ).losses.sum().backward()
        assert pc.grad.item() < 0 < pr.grad.item(), loss_type


def test_module_wrapper_and_errors():
    pc, pr, rc, rr, _, _ = _logps(seed=9)
    mod = DPOLoss(beta=0.3, loss_type="hinge")
    torch.testing.assert_close(
        mod(pc, pr, rc, rr).losses, dpo_loss(pc, pr, rc, rr, beta=0.3, loss_type="hinge").losses
    )
    with pytest.raises(ConfigError, match="unknown DPO loss_type 'kto'"):
        dpo_loss(pc, pr, rc, rr, loss_type="kto")
    with pytest.raises(ConfigError):
        DPOLoss(loss_type="nope")
    with pytest.raises(ConfigError, match="chosen_nll"):
        dpo_loss(pc, pr, rc, rr, rpo_alpha=1.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.5)


def test_sft_loss_is_token_mean_cross_entropy_on_answer_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 7, 1, 2, 9]])
    keep = labels != -100
    expected = -F.log_softmax(logits, -1)[keep].gather(-1, labels[keep][:, None]).mean()
    torch.testing.assert_close(sft_loss(logits, labels), expected)
    torch.testing.assert_close(sft_loss(logits, labels, reduction="sum"), expected * keep.sum())
