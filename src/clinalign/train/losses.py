"""The DPO family and SFT, written from the papers' equations.

Every loss takes *summed* answer-token log-probs (one number per example) and knows nothing about
models or data, so it is unit-tested on plain tensors (and against TRL's implementation).

Notation: for a prompt x with chosen answer y_w and rejected answer y_l,

    h = beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ]

``chosen_rewards = beta * (log pi(y_w|x) - log ref(y_w|x))`` and likewise for rejected: the implicit
rewards that DPO's progress bar reports (margin = chosen - rejected, accuracy = margin > 0).

Losses live in a small registry (:data:`LOSSES`): adding one is one function under ``@_loss(...)`` and
one test. A spec says whether the loss needs reference log-probs (SimPO and ORPO do not: the recipe
then skips the reference pass) and whether it trains on unpaired labelled answers (KTO).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clinalign.errors import ConfigError


class DPOOutput(NamedTuple):
    losses: Tensor  # [B] per-pair loss; the training loss is losses.mean()
    chosen_rewards: Tensor  # [B] beta * log-ratio of the chosen answer (detached)
    rejected_rewards: Tensor  # [B] beta * log-ratio of the rejected answer (detached)


@dataclass(frozen=True)
class LossInputs:
    """What a loss may use; the recipe fills every field it has (``None`` where it has none)."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_lengths: Tensor | None = None  # answer token counts
    rejected_lengths: Tensor | None = None
    labels: Tensor | None = None  # KTO: True = desirable answer (the "chosen" slot)
    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def logratios(self) -> tuple[Tensor, Tensor]:
        return self.policy_chosen - self.ref_chosen, self.policy_rejected - self.ref_rejected

    def mean_logps(self) -> tuple[Tensor, Tensor]:
        """Per-token average log-probs (SimPO's and ORPO's length normalisation)."""
        if self.chosen_lengths is None or self.rejected_lengths is None:
            raise ConfigError("this loss averages log-probs per token: chosen_lengths/rejected_lengths are required")
        return (self.policy_chosen / self.chosen_lengths.clamp(min=1),
                self.policy_rejected / self.rejected_lengths.clamp(min=1))


@dataclass(frozen=True)
class LossSpec:
    fn: Callable[[LossInputs], tuple[Tensor, Tensor, Tensor]]  # -> (losses, chosen_rewards, rejected_rewards)
    reference: bool = True  # needs reference log-probs
    unpaired: bool = False  # trains on {prompt, completion, label} rows (chosen slot = completion)


LOSSES: dict[str, LossSpec] = {}


def _loss(*names: str, reference: bool = True, unpaired: bool = False):  # noqa: ANN202
    def register(fn):  # noqa: ANN001, ANN202
        for n in names:
            LOSSES[n] = LossSpec(fn, reference, unpaired)
        return fn
    return register


def _dpo_rewards(x: LossInputs) -> tuple[Tensor, Tensor]:
    c, r = x.logratios()
    return x.beta * c.detach(), x.beta * r.detach()


@_loss("sigmoid", "conservative")
def _sigmoid(x: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """DPO (Rafailov et al. 2023, eq. 7): L = -log sigma(h). With eps = label_smoothing, cDPO
    (Mitchell 2023, labels flipped with probability eps): L = -(1 - eps) log sigma(h) - eps log sigma(-h)."""
    c, r = x.logratios()
    h, eps = x.beta * (c - r), x.label_smoothing
    return (-(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h), *_dpo_rewards(x))


@_loss("hinge")
def _hinge(x: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """SLiC (Zhao et al. 2023): L = max(0, 1 - h)."""
    c, r = x.logratios()
    return (torch.relu(1 - x.beta * (c - r)), *_dpo_rewards(x))


@_loss("ipo")
def _ipo(x: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """IPO (Azar et al. 2023, eq. 17, tau = beta): L = (d - 1 / (2 tau))^2, d = log-ratio difference
    *without* beta. With answer lengths each log-ratio is averaged per token first, as TRL does (the IPO
    authors' normalisation); without them, the paper's sequence-level form."""
    c, r = x.logratios()
    if x.chosen_lengths is not None and x.rejected_lengths is not None:
        c, r = c / x.chosen_lengths.clamp(min=1), r / x.rejected_lengths.clamp(min=1)
    return ((c - r - 1 / (2 * x.beta)) ** 2, *_dpo_rewards(x))


@_loss("simpo", reference=False)
def _simpo(x: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO (Meng et al. 2024, eq. 6), no reference model; the reward is the length-normalised
    log-prob:  L = -log sigma( beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma ),
    gamma = simpo_gamma. Label smoothing applies as in cDPO (TRL's CPO trainer does the same)."""
    c, r = x.mean_logps()
    h, eps = x.beta * (c - r) - x.simpo_gamma, x.label_smoothing
    return (-(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h), x.beta * c.detach(), x.beta * r.detach())


def _log1mexp(v: Tensor) -> Tensor:
    """log(1 - exp(v)) for v < 0, stable on both sides of -ln 2."""
    return torch.where(v < -0.6931471805599453, torch.log1p(-torch.exp(v)), torch.log(-torch.expm1(v)))


@_loss("orpo", reference=False)
def _orpo(x: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """ORPO (Hong et al. 2024, eqs. 4-7), no reference model: SFT on the chosen answer plus an
    odds-ratio penalty, with P = per-token mean log-prob and odds(y) = P(y) / (1 - P(y)):
    L = -log P(y_w|x) - beta * log sigma( log odds(y_w|x) - log odds(y_l|x) )   (beta = the paper's lambda).
    The NLL is per example (TRL averages over the batch's chosen tokens: equal for equal lengths)."""
    c, r = x.mean_logps()
    log_odds = (c - r) - (_log1mexp(c) - _log1mexp(r))
    return (-c - x.beta * F.logsigmoid(log_odds), x.beta * c.detach(), x.beta * r.detach())


def _global_mean(v: Tensor) -> Tensor:
    """Mean over the rows of every process (the global batch; TRL gathers KTO's KL estimate the same
    way), so 2 processes with batch b give the z0 of 1 process with batch 2b; the local mean on one."""
    from clinalign.train.distributed import all_reduce_sum

    total = all_reduce_sum(torch.stack([v.sum(), v.new_tensor(float(v.numel()))]))
    return total[0] / total[1]


@_loss("kto", unpaired=True)
def _kto(x: LossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """KTO (Ethayarajh et al. 2024, eq. 7) on unpaired answers: r = log pi(y|x) - log ref(y|x),
    z0 = max(0, mean over the global batch of [log pi(y'|x) - log ref(y'|x)]) with y' another row's answer
    (the KL estimate; the recipe puts it in the rejected slot; all-reduced across processes),
    L = lambda_D (1 - sigma(beta (r - z0))) for desirable y, lambda_U (1 - sigma(beta (z0 - r))) otherwise.
    Rewards are reported as (better side, worse side): (beta r, beta z0) for desirable rows and
    (beta z0, beta r) for undesirable ones, so margin > 0 means the row is on its right side of z0."""
    if x.labels is None:
        raise ConfigError("the kto loss needs labels (True = desirable answer)")
    r, kl = x.logratios()
    z0 = _global_mean(kl.detach()).clamp(min=0)
    good = x.labels.bool()
    losses = torch.where(good, x.desirable_weight * (1 - torch.sigmoid(x.beta * (r - z0))),
                         x.undesirable_weight * (1 - torch.sigmoid(x.beta * (z0 - r))))
    rew, ref_point = x.beta * r.detach(), (x.beta * z0).expand_as(r)
    return losses, torch.where(good, rew, ref_point), torch.where(good, ref_point, rew)


LOSS_TYPES = tuple(LOSSES)


def loss_spec(loss_type: str, key: str = "DPO loss_type") -> LossSpec:
    """The registered loss ``loss_type``: the one place a loss name is checked (the config calls it too,
    naming its own ``key``)."""
    if loss_type not in LOSSES:
        raise ConfigError(f"unknown {key} {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    return LOSSES[loss_type]


class DPOLoss(nn.Module):
    """Per-pair preference loss ``LOSSES[loss_type]`` with its hyper-parameters, checked once when built
    (see each loss function's docstring for its equation). A recipe builds it once from the config
    (:meth:`from_config`) and calls it every step.

    RPO (Pang et al. 2024): any loss + ``rpo_alpha * chosen_nll``, where ``chosen_nll`` is the
    per-example mean negative log-likelihood of the chosen answer's tokens. (TRL averages the NLL over
    all chosen tokens of the batch instead; the two agree when chosen answers have equal lengths.)
    """

    def __init__(self, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                 rpo_alpha: float | None = None, simpo_gamma: float = 0.5, desirable_weight: float = 1.0,
                 undesirable_weight: float = 1.0):
        super().__init__()
        self.spec = loss_spec(loss_type)
        if not 0.0 <= label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.loss_type, self.label_smoothing, self.rpo_alpha = beta, loss_type, label_smoothing, rpo_alpha
        self.simpo_gamma, self.desirable_weight, self.undesirable_weight = (simpo_gamma, desirable_weight,
                                                                            undesirable_weight)

    @classmethod
    def from_config(cls, cfg: Any) -> DPOLoss:
        """The loss a training config (``train/config.TrainConfig``) names, with its hyper-parameters."""
        return cls(beta=cfg.beta, loss_type=cfg.loss, label_smoothing=cfg.label_smoothing, rpo_alpha=cfg.rpo_alpha,
                   simpo_gamma=cfg.simpo_gamma, desirable_weight=cfg.desirable_weight,
                   undesirable_weight=cfg.undesirable_weight)

    def forward(self, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                ref_chosen_logps: Tensor | None = None, ref_rejected_logps: Tensor | None = None, *,
                chosen_nll: Tensor | None = None, chosen_lengths: Tensor | None = None,
                rejected_lengths: Tensor | None = None, labels: Tensor | None = None) -> DPOOutput:
        if self.spec.reference and (ref_chosen_logps is None or ref_rejected_logps is None):
            raise ConfigError(f"the {self.loss_type} loss needs reference log-probs")
        losses, chosen_rewards, rejected_rewards = self.spec.fn(LossInputs(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_lengths,
            rejected_lengths, labels, self.beta, self.label_smoothing, self.simpo_gamma, self.desirable_weight,
            self.undesirable_weight))
        if self.rpo_alpha is not None:
            if chosen_nll is None:
                raise ConfigError("rpo_alpha is set but no chosen_nll was given")
            losses = losses + self.rpo_alpha * chosen_nll
        return DPOOutput(losses, chosen_rewards, rejected_rewards)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    rpo_alpha: float | None = None,
    chosen_nll: Tensor | None = None,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    labels: Tensor | None = None,
    simpo_gamma: float = 0.5,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> DPOOutput:
    """:class:`DPOLoss` as one function call, for plain tensors (tests, benchmarks)."""
    loss = DPOLoss(beta, loss_type, label_smoothing, rpo_alpha, simpo_gamma, desirable_weight, undesirable_weight)
    return loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                chosen_nll=chosen_nll, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
                labels=labels)


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
