"""Divergence: a run whose learning rate is far too large stops with ``DIVERGED`` (exit 3) instead of
writing a ``final/`` of ruined weights.

The loop stops on a non-finite loss or gradient by itself; these rules catch a run that diverges with
finite numbers. Both are judged after each applied update, on numbers every process agrees on (the
all-reduced loss, the norm of the trainable weights), so every process stops at the same step:

1. **The weights blow up**: one update more than doubles the norm of the trainable weights. Adam moves
   each weight by about ``lr`` per step, so a healthy step changes that norm by a few percent at most
   (the default model at the demo's settings: at most 1.6% a step for LoRA SFT at lr 2e-3, where B
   starts at zero and grows fastest; 0.08% for DPO at 5e-4); an ``lr`` as large as the weights
   themselves doubles it at once (``--lr 1e6``: 1.6e7-fold). This is the rule that catches DPO, whose
   loss stays near ln 2 when the policy is ruined (both answers equally unlikely).
2. **The loss climbs and stays up**: ``WINDOW`` consecutive steps whose loss is above its starting
   value B by more than ``max(RISE * |B|, MIN_RISE)``, i.e. above twice B. B is measured, never
   assumed: the mean loss of the first ``WINDOW`` steps (SFT starts near the answer tokens' NLL;
   sigmoid DPO at ln 2, IPO at 1/(2 beta)^2, ...). A healthy run's loss falls; five steps in a row at
   twice the start mean the updates are making the model worse (SFT heads to the log of the vocabulary
   size, chance). Single batches do spike (the demo's DPO at batch 4 had a step at 1.15 = 1.7 B): one
   high step, or a few, never stops a run.

Both hold for LoRA and full fine-tuning alike (the first rule is relative to the weights being
trained; the second to the run's own start). The state is kept in every checkpoint, so a resumed run
judges exactly as one that never stopped. ``stop_on_divergence: false`` turns the rules off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WINDOW = 5  # steps whose mean loss is the start, and consecutive steps above the limit that stop the run
RISE, MIN_RISE = 1.0, 0.1  # how far above the start the loss must stay: relative, and at least this
GROWTH = 2.0  # an update that multiplies the trainable weights' norm by more than this


@dataclass
class Diverged:
    """Why a run diverged, and the last step whose weights were still good (for its checkpoint)."""

    step: int
    loss: float
    start: float
    reason: str
    last_good: int


@dataclass
class Divergence:
    """The two rules' memory: the first losses, the current run of high ones, the last weight norm."""

    enabled: bool = True
    first: list[float] = field(default_factory=list)  # losses of the first WINDOW steps
    high: list[int] = field(default_factory=list)  # consecutive steps (up to now) above the limit
    norm: float | None = None  # trainable weights' norm after the last update

    @classmethod
    def from_state(cls, enabled: bool, saved: dict[str, Any] | None) -> Divergence:
        state = (saved or {}).get("divergence") or {}
        return cls(enabled, list(state.get("first", [])), list(state.get("high", [])))

    def state(self) -> dict[str, Any]:
        return {"first": self.first, "high": self.high}

    @property
    def start(self) -> float | None:
        return sum(self.first) / len(self.first) if self.first else None

    def limit(self) -> float | None:
        """The loss above which a step counts as high (None until the start is known)."""
        if len(self.first) < WINDOW:
            return None
        b = sum(self.first) / WINDOW
        return b + max(RISE * abs(b), MIN_RISE)

    def check(self, step: int, loss: float, norm: float) -> Diverged | None:
        """Record step ``step`` (its loss, and the weights' norm after its update); a :class:`Diverged`
        when a rule fires. ``norm`` holds the norm the run starts from before the first call."""
        before, self.norm = self.norm, norm
        limit = self.limit()
        if limit is None:
            self.first.append(loss)
        self.high = [*self.high, step] if limit is not None and loss > limit else []
        if not self.enabled:
            return None
        start = self.start if self.start is not None else loss
        if before is not None and before > 0 and norm > GROWTH * before:
            return Diverged(step, loss, start, f"its update multiplied the trainable weights' norm by "
                            f"{norm / before:.3g} ({before:.4g} -> {norm:.4g})", last_good=step - 1)
        if len(self.high) >= WINDOW:
            return Diverged(step, loss, start, f"the loss stayed above {limit:.4g} for {WINDOW} steps "
                            f"(from step {self.high[0]})", last_good=self.high[0] - 2)
        return None
