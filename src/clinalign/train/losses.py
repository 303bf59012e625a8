"""The DPO family and SFT, written from the papers' equations.

Every loss takes *summed* answer-token log-probs (one number per example) and knows nothing about
models or data, so it is unit-tested on plain tensors (and against TRL's implementation).

Notation: for a prompt x with chosen answer y_w and rejected answer y_l,

    h = beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ]

``chosen_rewards = beta * (log pi(y_w|x) - log ref(y_w|x))`` and likewise for rejected: the implicit
rewards that DPO's progress bar reports (margin = chosen - rejected, accuracy = margin > 0).

Each loss is one class below, registered in :data:`LOSSES` under the names its ``type`` allows: its
fields are its knobs (what a config's ``loss: {type: NAME, KNOB: VALUE}`` may set, checked when the
config is loaded) and :meth:`Loss.terms` is its equation. Adding a loss is that class and one test.
Class flags say whether the loss needs reference log-probs (SimPO and ORPO do not: the recipe then
skips the reference pass) and whether it trains on unpaired labelled answers (KTO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from clinalign.errors import ConfigError


class DPOOutput(NamedTuple):
    losses: Tensor  # [B] per-pair loss; the training loss is losses.mean()
    chosen_rewards: Tensor  # [B] beta * log-ratio of the chosen answer (detached)
    rejected_rewards: Tensor  # [B] beta * log-ratio of the rejected answer (detached)


@dataclass(frozen=True)
class LogProbs:
    """What a loss may use; the recipe fills every field it has (``None`` where it has none)."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_lengths: Tensor | None = None  # answer token counts
    rejected_lengths: Tensor | None = None
    labels: Tensor | None = None  # KTO: True = desirable answer (the "chosen" slot)

    def logratios(self) -> tuple[Tensor, Tensor]:
        return self.policy_chosen - self.ref_chosen, self.policy_rejected - self.ref_rejected

    def mean_logps(self) -> tuple[Tensor, Tensor]:
        """Per-token average log-probs (SimPO's and ORPO's length normalisation)."""
        if self.chosen_lengths is None or self.rejected_lengths is None:
            raise ConfigError("this loss averages log-probs per token: chosen_lengths/rejected_lengths are required")
        return (self.policy_chosen / self.chosen_lengths.clamp(min=1),
                self.policy_rejected / self.rejected_lengths.clamp(min=1))


class Loss(BaseModel):
    """A preference loss and its knobs, checked when built; called on log-probs every step.

    RPO (Pang et al. 2024) applies to any loss: ``rpo_alpha`` adds ``rpo_alpha * chosen_nll``, the
    per-example mean negative log-likelihood of the chosen answer's tokens. (TRL averages the NLL over
    all chosen tokens of the batch instead; the two agree when chosen answers have equal lengths.)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the name the loss was chosen by (a subclass narrows it to its own names)
    type: str
    #: the temperature beta of the notation above (ORPO: the weight of its odds-ratio term); a training
    #: config sets it from its own ``beta`` key
    beta: float = Field(0.1, gt=0)
    #: > 0: add rpo_alpha x the chosen answer's NLL (RPO), to any loss
    rpo_alpha: float | None = None

    #: needs reference log-probs
    reference: ClassVar[bool] = True
    #: trains on ``{prompt, completion, label}`` rows (the chosen slot holds the completion)
    unpaired: ClassVar[bool] = False

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        """What a config may set for this loss (``beta`` included)."""
        return tuple(k for k in cls.model_fields if k != "type")

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        """The loss's equation: (per-pair losses, chosen rewards, rejected rewards), each [B]."""
        raise NotImplementedError

    def __call__(self, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
                 ref_chosen_logps: Tensor | None = None, ref_rejected_logps: Tensor | None = None, *,
                 chosen_nll: Tensor | None = None, chosen_lengths: Tensor | None = None,
                 rejected_lengths: Tensor | None = None, labels: Tensor | None = None) -> DPOOutput:
        if self.reference and (ref_chosen_logps is None or ref_rejected_logps is None):
            raise ConfigError(f"the {self.type} loss needs reference log-probs")
        losses, chosen_rewards, rejected_rewards = self.terms(LogProbs(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_lengths,
            rejected_lengths, labels))
        if self.rpo_alpha is not None:
            if chosen_nll is None:
                raise ConfigError("rpo_alpha is set but no chosen_nll was given")
            losses = losses + self.rpo_alpha * chosen_nll
        return DPOOutput(losses, chosen_rewards, rejected_rewards)

    def _dpo_rewards(self, x: LogProbs) -> tuple[Tensor, Tensor]:
        c, r = x.logratios()
        return self.beta * c.detach(), self.beta * r.detach()


LOSSES: dict[str, type[Loss]] = {}


def register(cls: type[Loss]) -> type[Loss]:
    """Add a loss under every name its ``type`` field allows."""
    for name in get_args(cls.model_fields["type"].annotation):
        LOSSES[name] = cls
    return cls


class _Smoothed(Loss):
    """A loss on -log sigma(h) with conservative label smoothing (cDPO, Mitchell 2023: labels flipped
    with probability eps): L = -(1 - eps) log sigma(h) - eps log sigma(-h)."""

    #: eps, the assumed probability that a preference label is flipped
    label_smoothing: float = 0.0

    @field_validator("label_smoothing")
    @classmethod
    def _below_half(cls, v: float) -> float:
        if not 0.0 <= v < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {v}")
        return v

    def _smoothed(self, h: Tensor) -> Tensor:
        eps = self.label_smoothing
        return -(1 - eps) * F.logsigmoid(h) - eps * F.logsigmoid(-h)


@register
class Sigmoid(_Smoothed):
    """DPO (Rafailov et al. 2023, eq. 7): L = -log sigma(h); ``conservative`` names it with smoothing."""

    type: Literal["sigmoid", "conservative"] = "sigmoid"

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        c, r = x.logratios()
        return (self._smoothed(self.beta * (c - r)), *self._dpo_rewards(x))


@register
class Hinge(Loss):
    """SLiC (Zhao et al. 2023): L = max(0, 1 - h)."""

    type: Literal["hinge"] = "hinge"

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        c, r = x.logratios()
        return (torch.relu(1 - self.beta * (c - r)), *self._dpo_rewards(x))


@register
class IPO(Loss):
    """IPO (Azar et al. 2023, eq. 17, tau = beta): L = (d - 1 / (2 tau))^2, d = log-ratio difference
    *without* beta. With answer lengths each log-ratio is averaged per token first, as TRL does (the IPO
    authors' normalisation); without them, the paper's sequence-level form."""

    type: Literal["ipo"] = "ipo"

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        c, r = x.logratios()
        if x.chosen_lengths is not None and x.rejected_lengths is not None:
            c, r = c / x.chosen_lengths.clamp(min=1), r / x.rejected_lengths.clamp(min=1)
        return ((c - r - 1 / (2 * self.beta)) ** 2, *self._dpo_rewards(x))


@register
class SimPO(_Smoothed):
    """SimPO (Meng et al. 2024, eq. 6), no reference model; the reward is the length-normalised
    log-prob:  L = -log sigma( beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma ).
    Label smoothing applies as in cDPO (TRL's CPO trainer does the same)."""

    type: Literal["simpo"] = "simpo"
    #: the target reward margin gamma
    gamma: float = 0.5

    reference: ClassVar[bool] = False

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        c, r = x.mean_logps()
        return (self._smoothed(self.beta * (c - r) - self.gamma), self.beta * c.detach(), self.beta * r.detach())


def _log1mexp(v: Tensor) -> Tensor:
    """log(1 - exp(v)) for v < 0, stable on both sides of -ln 2."""
    return torch.where(v < -0.6931471805599453, torch.log1p(-torch.exp(v)), torch.log(-torch.expm1(v)))


@register
class ORPO(Loss):
    """ORPO (Hong et al. 2024, eqs. 4-7), no reference model: SFT on the chosen answer plus an
    odds-ratio penalty, with P = per-token mean log-prob and odds(y) = P(y) / (1 - P(y)):
    L = -log P(y_w|x) - beta * log sigma( log odds(y_w|x) - log odds(y_l|x) )   (beta = the paper's lambda).
    The NLL is per example (TRL averages over the batch's chosen tokens: equal for equal lengths)."""

    type: Literal["orpo"] = "orpo"

    reference: ClassVar[bool] = False

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        c, r = x.mean_logps()
        log_odds = (c - r) - (_log1mexp(c) - _log1mexp(r))
        return (-c - self.beta * F.logsigmoid(log_odds), self.beta * c.detach(), self.beta * r.detach())


def _global_mean(v: Tensor) -> Tensor:
    """Mean over the rows of every process (the global batch; TRL gathers KTO's KL estimate the same
    way), so 2 processes with batch b give the z0 of 1 process with batch 2b; the local mean on one."""
    from clinalign.train.distributed import all_reduce_sum

    total = all_reduce_sum(torch.stack([v.sum(), v.new_tensor(float(v.numel()))]))
    return total[0] / total[1]


@register
class KTO(Loss):
    """KTO (Ethayarajh et al. 2024, eq. 7) on unpaired answers: r = log pi(y|x) - log ref(y|x),
    z0 = max(0, mean over the global batch of [log pi(y'|x) - log ref(y'|x)]) with y' another row's answer
    (the KL estimate; the recipe puts it in the rejected slot; all-reduced across processes),
    L = lambda_D (1 - sigma(beta (r - z0))) for desirable y, lambda_U (1 - sigma(beta (z0 - r))) otherwise.
    Rewards are reported as (better side, worse side): (beta r, beta z0) for desirable rows and
    (beta z0, beta r) for undesirable ones, so margin > 0 means the row is on its right side of z0."""

    type: Literal["kto"] = "kto"
    #: lambda_D and lambda_U; raise the scarcer side's weight when labels are unbalanced
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    unpaired: ClassVar[bool] = True

    def terms(self, x: LogProbs) -> tuple[Tensor, Tensor, Tensor]:
        if x.labels is None:
            raise ConfigError("the kto loss needs labels (True = desirable answer)")
        r, kl = x.logratios()
        z0 = _global_mean(kl.detach()).clamp(min=0)
        good = x.labels.bool()
        losses = torch.where(good, self.desirable_weight * (1 - torch.sigmoid(self.beta * (r - z0))),
                             self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z0 - r))))
        rew, ref_point = self.beta * r.detach(), (self.beta * z0).expand_as(r)
        return losses, torch.where(good, rew, ref_point), torch.where(good, ref_point, rew)


LOSS_TYPES = tuple(LOSSES)


def loss_class(name: str, key: str = "loss") -> type[Loss]:
    """The registered loss ``name``: the one place a loss name is checked (``key`` names the setting)."""
    if name not in LOSSES:
        raise ConfigError(f"unknown {key} {name!r}; choose one of {', '.join(LOSS_TYPES)}")
    return LOSSES[name]


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
