"""The DPO family and SFT, written from the papers' equations.

Every loss takes *summed* answer-token log-probs (one number per example) and knows nothing about
models or data, so it is unit-tested on plain tensors (and against TRL's implementation).

Notation: for a prompt x with chosen answer y_w and rejected answer y_l,

    h = beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ]

``chosen_rewards = beta * (log pi(y_w|x) - log ref(y_w|x))`` and likewise for rejected: the implicit
rewards that DPO's progress bar reports (margin = chosen - rejected, accuracy = margin > 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clinalign.errors import ConfigError

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "conservative")


class DPOOutput(NamedTuple):
    losses: Tensor  # [B] per-pair loss; the training loss is losses.mean()
    chosen_rewards: Tensor  # [B] beta * log-ratio of the chosen answer (detached)
    rejected_rewards: Tensor  # [B] beta * log-ratio of the rejected answer (detached)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    rpo_alpha: float | None = None,
    chosen_nll: Tensor | None = None,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> DPOOutput:
    """Per-pair preference loss.

    - ``sigmoid`` (DPO, Rafailov et al. 2023, eq. 7):  L = -log sigma(h)
    - ``conservative`` (cDPO, Mitchell 2023; labels flipped with probability eps = label_smoothing):
      L = -(1 - eps) log sigma(h) - eps log sigma(-h).  ``sigmoid`` with label_smoothing > 0 is the same.
    - ``hinge`` (SLiC, Zhao et al. 2023):  L = max(0, 1 - h)
    - ``ipo`` (Azar et al. 2023, eq. 17, tau = beta):  L = (d - 1 / (2 tau))^2 with
      d = log-ratio difference *without* beta. When ``chosen_lengths``/``rejected_lengths`` (answer token
      counts) are given, each log-ratio is averaged per token first, as TRL does (the IPO authors'
      normalisation); without them, the paper's sequence-level form.
    - RPO (Pang et al. 2024): any of the above + ``rpo_alpha * chosen_nll``, where ``chosen_nll`` is the
      per-example mean negative log-likelihood of the chosen answer's tokens. (TRL averages the NLL over
      all chosen tokens of the batch instead; the two agree when chosen answers have equal lengths.)
    """
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"unknown DPO loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ConfigError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = beta * (chosen_logratios - rejected_logratios)

    if loss_type in ("sigmoid", "conservative"):
        eps = label_smoothing
        losses = -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - h)
    else:  # ipo
        if chosen_lengths is not None and rejected_lengths is not None:
            chosen_logratios = chosen_logratios / chosen_lengths.clamp(min=1)
            rejected_logratios = rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (chosen_logratios - rejected_logratios - 1 / (2 * beta)) ** 2

    if rpo_alpha is not None:
        if chosen_nll is None:
            raise ConfigError("rpo_alpha is set but no chosen_nll was given")
        losses = losses + rpo_alpha * chosen_nll

    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return DPOOutput(losses, chosen_rewards, rejected_rewards)


class DPOLoss(nn.Module):
    """torchtune-style module around :func:`dpo_loss`; holds the hyper-parameters from the config."""

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        rpo_alpha: float | None = None,
    ):
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"unknown DPO loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
        self.beta, self.loss_type = beta, loss_type
        self.label_smoothing, self.rpo_alpha = label_smoothing, rpo_alpha

    def forward(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor,
        ref_rejected_logps: Tensor,
        chosen_nll: Tensor | None = None,
        chosen_lengths: Tensor | None = None,
        rejected_lengths: Tensor | None = None,
    ) -> DPOOutput:
        return dpo_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            rpo_alpha=self.rpo_alpha,
            chosen_nll=chosen_nll,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
        )


def sft_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """L = -(1/N) sum_t log p(y_t | y_<t, x) over the N answer tokens (labels != ignore_index).

    ``logits`` [..., V] and ``labels`` [...] are already aligned (logit i predicts label i).
    ``reduction="sum"`` lets a distributed loop divide by the global token count itself.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction=reduction,
    )
