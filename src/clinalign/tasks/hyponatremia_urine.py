"""Hyponatremia work-up from urine electrolytes: a lab panel and volume status -> one of 8 categories.

Ground truth is the standard serum-osmolality / urine-osmolality / urine-sodium algorithm,
`classify()`, so every synthetic label is explainable. The study this project follows found no gain
from fine-tuning on this numeric task; the task is here to show that honestly.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import field_validator

from clinalign.errors import InputError
from clinalign.eval.metrics import accuracy, macro_f1
from clinalign.tasks.base import Metric, Prediction, Record, Task

VolumeStatus = Literal["hypovolemic", "euvolemic", "hypervolemic"]
CATEGORIES = (
    "hypertonic",
    "pseudohyponatremia",
    "low_solute_or_polydipsia",
    "edematous_state",
    "extrarenal_sodium_loss",
    "renal_sodium_loss",
    "siadh",
    "renal_failure",
)
DESCRIPTIONS = {
    "hypertonic": "hypertonic hyponatremia (e.g. hyperglycemia, mannitol)",
    "pseudohyponatremia": "isotonic pseudohyponatremia (lipids/paraproteins)",
    "low_solute_or_polydipsia": "primary polydipsia or low solute intake",
    "edematous_state": "edematous state (heart failure, cirrhosis, nephrotic)",
    "extrarenal_sodium_loss": "extrarenal sodium loss (GI losses, third spacing)",
    "renal_sodium_loss": "renal sodium loss (diuretics, salt wasting, mineralocorticoid deficiency)",
    "siadh": "SIADH",
    "renal_failure": "renal failure (kidney cannot excrete free water)",
}
# Plausibility limits: values outside them are data-entry errors, not patients.
LIMITS = {"serum_sodium": (90.0, 135.0), "serum_osmolality": (180.0, 400.0),
          "urine_osmolality": (30.0, 1500.0), "urine_sodium": (0.0, 300.0)}


def classify(serum_sodium: float, serum_osmolality: float, urine_osmolality: float, urine_sodium: float,
             volume_status: str) -> str:
    """The diagnostic rule. Raises InputError on impossible input."""
    values = {"serum_sodium": serum_sodium, "serum_osmolality": serum_osmolality,
              "urine_osmolality": urine_osmolality, "urine_sodium": urine_sodium}
    for name, v in values.items():
        problem = check_value(name, v)
        if problem:
            raise InputError(f"{name}: {problem}")
    if volume_status not in ("hypovolemic", "euvolemic", "hypervolemic"):
        raise InputError(f"volume_status: unknown {volume_status!r} (hypovolemic, euvolemic or hypervolemic)")
    if serum_osmolality > 295:
        return "hypertonic"
    if serum_osmolality >= 275:
        return "pseudohyponatremia"
    if urine_osmolality < 100:
        return "low_solute_or_polydipsia"
    if urine_sodium < 30:
        return "edematous_state" if volume_status == "hypervolemic" else "extrarenal_sodium_loss"
    return {"hypovolemic": "renal_sodium_loss", "euvolemic": "siadh", "hypervolemic": "renal_failure"}[volume_status]


def check_value(name: str, v: float) -> str | None:
    if v < 0:
        return f"negative value {v}"
    lo, hi = LIMITS[name]
    if name == "serum_sodium" and v >= 135:
        return f"{v} mmol/L is not hyponatremia (needs < 135)"
    if not lo <= v <= hi:
        return f"{v} is outside the plausible range {lo:g}-{hi:g}"
    return None


class HyponatremiaRecord(Record):
    """A user's label that disagrees with classify() is kept: it is their gold standard."""

    serum_sodium: float
    serum_osmolality: float
    urine_osmolality: float
    urine_sodium: float
    volume_status: VolumeStatus
    label: Literal[CATEGORIES]  # type: ignore[valid-type]

    @field_validator("serum_sodium", "serum_osmolality", "urine_osmolality", "urine_sodium")
    @classmethod
    def _plausible(cls, v: float, info) -> float:
        problem = check_value(info.field_name, v)
        if problem:
            raise ValueError(problem)
        return v


PROMPT = """Interpret this hyponatremia work-up.

{panel}
Clinical volume status: {volume}.

Which category fits best? Answer with exactly one of: {choices}."""

PANEL_FORMATS = (
    "Serum Na {na:.0f} mmol/L, serum osmolality {sosm:.0f} mOsm/kg, urine osmolality {uosm:.0f} mOsm/kg, "
    "urine Na {una:.0f} mmol/L.",
    "Labs:\n- Sodium (serum): {na:.0f} mmol/L\n- Osmolality (serum): {sosm:.0f} mOsm/kg\n"
    "- Osmolality (urine): {uosm:.0f} mOsm/kg\n- Sodium (urine, spot): {una:.0f} mmol/L",
    "BMP Na {na:.0f}. Serum osm {sosm:.0f}. Urine studies: Uosm {uosm:.0f}, UNa {una:.0f}.",
)
VOLUME_WORDS = {
    "hypovolemic": ("hypovolemic (dry mucous membranes, orthostatic)", "hypovolemic", "volume depleted"),
    "euvolemic": ("euvolemic on exam", "euvolemic", "clinically euvolemic, no edema"),
    "hypervolemic": ("hypervolemic (edema, JVD)", "hypervolemic", "volume overloaded with ascites"),
}
CONFUSABLE = {
    "siadh": ("renal_sodium_loss", "low_solute_or_polydipsia"),
    "renal_sodium_loss": ("siadh", "extrarenal_sodium_loss"),
    "extrarenal_sodium_loss": ("renal_sodium_loss", "edematous_state"),
    "edematous_state": ("renal_failure", "extrarenal_sodium_loss"),
    "renal_failure": ("edematous_state", "siadh"),
    "low_solute_or_polydipsia": ("siadh", "pseudohyponatremia"),
    "pseudohyponatremia": ("hypertonic", "siadh"),
    "hypertonic": ("pseudohyponatremia", "siadh"),
}
SYNONYMS = {
    "siadh": ("siadh", "syndrome of inappropriate"),
    "low_solute_or_polydipsia": ("low solute", "polydipsia", "tea and toast", "beer potomania"),
    "pseudohyponatremia": ("pseudohyponatremia", "pseudo hyponatremia", "isotonic"),
    "hypertonic": ("hypertonic",),
    "edematous_state": ("edematous", "edema state"),
    "extrarenal_sodium_loss": ("extrarenal",),
    "renal_sodium_loss": ("renal sodium loss", "renal salt", "salt wasting"),
    "renal_failure": ("renal failure", "kidney failure"),
}


def _sample_values(category: str, rng: random.Random) -> tuple[float, float, float, float, str]:
    na = rng.randint(112, 133)
    if category == "hypertonic":
        return na, rng.randint(296, 330), rng.randint(300, 700), rng.randint(20, 90), rng.choice(list(VOLUME_WORDS))
    if category == "pseudohyponatremia":
        return na, rng.randint(275, 295), rng.randint(250, 600), rng.randint(20, 90), "euvolemic"
    sosm = rng.randint(235, 274)
    if category == "low_solute_or_polydipsia":
        return na, sosm, rng.randint(45, 99), rng.randint(5, 40), rng.choice(["euvolemic", "hypovolemic"])
    uosm = rng.randint(100, 650)
    if category in ("edematous_state", "extrarenal_sodium_loss"):
        vol = "hypervolemic" if category == "edematous_state" else rng.choice(["hypovolemic", "euvolemic"])
        return na, sosm, uosm, rng.randint(3, 29), vol
    vol = {"renal_sodium_loss": "hypovolemic", "siadh": "euvolemic", "renal_failure": "hypervolemic"}[category]
    return na, sosm, max(uosm, 150), rng.randint(30, 120), vol


class HyponatremiaUrineTask(Task):
    id = "hyponatremia_urine"
    description = "Lab panel + volume status -> hyponatremia category (rule: classify())"
    record_type = HyponatremiaRecord
    choices = CATEGORIES
    max_new_tokens = 16

    def prompt(self, record: HyponatremiaRecord) -> str:
        fmt = PANEL_FORMATS[sum(map(ord, record.id)) % len(PANEL_FORMATS)]  # varied, stable per record
        panel = fmt.format(na=record.serum_sodium, sosm=record.serum_osmolality, uosm=record.urine_osmolality,
                           una=record.urine_sodium)
        words = VOLUME_WORDS[record.volume_status]
        volume = words[sum(map(ord, record.id[::-1])) % len(words)]
        return PROMPT.format(panel=panel, volume=volume, choices=", ".join(CATEGORIES))

    def answer(self, record: HyponatremiaRecord) -> str:
        return record.label

    def parse(self, text: str) -> Prediction:
        t = text.lower().replace("-", " ")
        t_us = re.sub(r"\s+", "_", t)
        hits = {c for c in CATEGORIES if re.search(rf"(?<![a-z_]){c}(?![a-z_])", t_us)}
        if not hits:
            hits = {c for c, words in SYNONYMS.items() if any(w in t for w in words)}
        if len(hits) > 1:  # several categories named: ambiguous
            return None
        return hits.pop() if hits else None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("macro_f1", "paired_bootstrap",
                   lambda recs, preds: macro_f1([r.label for r in recs], preds, CATEGORIES)),
            Metric("accuracy", "mcnemar", lambda recs, preds: accuracy([r.label for r in recs], preds),
                   per_item=lambda r, p: float(r.label == p)),
        )

    @property
    def rejected_builders(self):
        return {"plausible_wrong_category": _plausible_wrong, "wrong_label": _wrong_label}

    def generate(self, n: int, seed: int) -> list[HyponatremiaRecord]:
        rng = random.Random(seed)
        out, seen = [], set()
        i = 0
        while len(out) < n:
            category = CATEGORIES[i % len(CATEGORIES)] if rng.random() < 0.8 else rng.choice(CATEGORIES)
            i += 1
            na, sosm, uosm, una, vol = _sample_values(category, rng)
            key = (na, sosm, uosm, una, vol)
            if key in seen:
                continue
            seen.add(key)
            label = classify(na, sosm, uosm, una, vol)
            out.append(HyponatremiaRecord(id=f"hypoNa-{len(out) + 1:06d}", serum_sodium=na, serum_osmolality=sosm,
                                          urine_osmolality=uosm, urine_sodium=una, volume_status=vol, label=label))
        return out


def _plausible_wrong(record: HyponatremiaRecord, rng: random.Random) -> str:
    return rng.choice(CONFUSABLE[record.label])


def _wrong_label(record: HyponatremiaRecord, rng: random.Random) -> str:
    return rng.choice([c for c in CATEGORIES if c != record.label])


TASK = HyponatremiaUrineTask()
