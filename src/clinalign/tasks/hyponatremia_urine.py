"""Hyponatremia work-up from urine electrolytes: a lab panel and volume status -> one of 8 categories.

Ground truth is the standard serum-osmolality / urine-osmolality / urine-sodium algorithm,
`classify()`, so every synthetic label is explainable. The study this project follows found no gain
from fine-tuning on this numeric task; the task is here to show that honestly.
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Literal

from pydantic import ValidationInfo, field_validator

from clinalign.errors import InputError
from clinalign.tasks.base import Metric, Prediction, Record, Task
from clinalign.tasks.metrics import accuracy_metric, macro_f1

VolumeStatus = Literal["hypovolemic", "euvolemic", "hypervolemic"]
VOLUME_STATUSES: tuple[str, ...] = ("hypovolemic", "euvolemic", "hypervolemic")
CATEGORIES: tuple[str, ...] = (
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
    "hypertonic": "hypertonic hyponatremia (hyperglycemia, mannitol)",
    "pseudohyponatremia": "isotonic pseudohyponatremia (lipids, paraproteins)",
    "low_solute_or_polydipsia": "primary polydipsia or low solute intake",
    "edematous_state": "edematous state (heart failure, cirrhosis, nephrotic syndrome)",
    "extrarenal_sodium_loss": "extrarenal sodium loss (vomiting, diarrhea, third spacing)",
    "renal_sodium_loss": "renal sodium loss (diuretics, salt wasting, mineralocorticoid deficiency)",
    "siadh": "SIADH",
    "renal_failure": "renal failure (acute or chronic kidney injury)",
}

#: Plausibility limits (inclusive). Values outside them are data-entry errors or unit mix-ups, not
#: patients: serum Na below 90 mmol/L is not survivable for long; serum osmolality above 450 mOsm/kg
#: exceeds even extreme hyperglycemic crises; the kidney cannot dilute urine below ~30 mOsm/kg nor
#: concentrate it above ~1,400; urine Na above 300 mmol/L exceeds what the kidney can excrete.
LIMITS: dict[str, tuple[float, float]] = {
    "serum_sodium": (90.0, 135.0),
    "serum_osmolality": (150.0, 450.0),
    "urine_osmolality": (30.0, 1400.0),
    "urine_sodium": (0.0, 300.0),
}
#: Cross-field checks, each with a margin for lab error: sodium salts alone contribute ~2 x Na
#: mOsm/kg, so a measured osmolality far below that, in serum or urine, is impossible.
SERUM_OSM_MARGIN = 30.0
URINE_OSM_MARGIN = 20.0


def check_value(name: str, v: float) -> str | None:
    """What is impossible about one value, or None. Shared by classify() and the record schema."""
    if v != v:  # NaN
        return "not a number"
    if v < 0:
        return f"negative value {v:g}"
    if name == "serum_sodium" and v >= 135:
        return f"{v:g} mmol/L is not hyponatremia (needs < 135)"
    lo, hi = LIMITS[name]
    if not lo <= v <= hi:
        return f"{v:g} is outside the plausible range {lo:g}-{hi:g}"
    return None


def check_serum(serum_sodium: float, serum_osmolality: float) -> str | None:
    """Measured serum osmolality far below the ~2 x Na that sodium salts alone contribute is impossible."""
    if serum_osmolality < 2 * serum_sodium - SERUM_OSM_MARGIN:
        return (f"{serum_osmolality:g} mOsm/kg is impossibly low for serum sodium {serum_sodium:g} mmol/L "
                f"(sodium salts alone give ~{2 * serum_sodium:g})")
    return None


def check_urine(urine_osmolality: float, urine_sodium: float) -> str | None:
    """Urine sodium whose salts alone (~2 x Na) would exceed the measured urine osmolality is impossible."""
    if 2 * urine_sodium > urine_osmolality + URINE_OSM_MARGIN:
        return (f"{urine_sodium:g} mmol/L is impossibly high for urine osmolality {urine_osmolality:g} mOsm/kg "
                f"(sodium salts alone would give ~{2 * urine_sodium:g})")
    return None


def _rule(serum_osmolality: float, urine_osmolality: float, urine_sodium: float, volume_status: str) -> str:
    """The algorithm itself, on already-checked values."""
    if serum_osmolality > 295:
        return "hypertonic"
    if serum_osmolality >= 275:
        return "pseudohyponatremia"
    if urine_osmolality < 100:
        return "low_solute_or_polydipsia"
    if urine_sodium < 30:
        return "edematous_state" if volume_status == "hypervolemic" else "extrarenal_sodium_loss"
    return {"hypovolemic": "renal_sodium_loss", "euvolemic": "siadh", "hypervolemic": "renal_failure"}[volume_status]


def classify(serum_sodium: float, serum_osmolality: float, urine_osmolality: float, urine_sodium: float,
             volume_status: str) -> str:
    """The diagnostic category of a hyponatremia panel (serum Na and urine Na in mmol/L, osmolalities
    in mOsm/kg). Raises InputError on impossible input rather than classifying garbage."""
    values = {"serum_sodium": serum_sodium, "serum_osmolality": serum_osmolality,
              "urine_osmolality": urine_osmolality, "urine_sodium": urine_sodium}
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(f"{name}: expected a number, got {type(v).__name__}")
        problem = check_value(name, v)
        if problem:
            raise InputError(f"{name}: {problem}")
    for name, problem in (("serum_osmolality", check_serum(serum_sodium, serum_osmolality)),
                          ("urine_sodium", check_urine(urine_osmolality, urine_sodium))):
        if problem:
            raise InputError(f"{name}: {problem}")
    if volume_status not in VOLUME_STATUSES:
        raise InputError(f"volume_status: unknown {volume_status!r} (hypovolemic, euvolemic or hypervolemic)")
    return _rule(serum_osmolality, urine_osmolality, urine_sodium, volume_status)


class HyponatremiaRecord(Record):
    """One panel. A user's label that disagrees with classify() is kept (it is their gold standard),
    but the values must be physiologically possible."""

    serum_sodium: float
    serum_osmolality: float
    urine_osmolality: float
    urine_sodium: float
    volume_status: VolumeStatus
    label: Literal[CATEGORIES]  # type: ignore[valid-type]

    @field_validator("serum_sodium", "serum_osmolality", "urine_osmolality", "urine_sodium")
    @classmethod
    def _plausible(cls, v: float, info: ValidationInfo) -> float:
        problem = check_value(info.field_name, v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("serum_osmolality")
    @classmethod
    def _serum_consistent(cls, v: float, info: ValidationInfo) -> float:
        if "serum_sodium" in info.data:  # absent when it failed its own check
            problem = check_serum(info.data["serum_sodium"], v)
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("urine_sodium")
    @classmethod
    def _urine_consistent(cls, v: float, info: ValidationInfo) -> float:
        if "urine_osmolality" in info.data:
            problem = check_urine(info.data["urine_osmolality"], v)
            if problem:
                raise ValueError(problem)
        return v


PROMPT = """Interpret this hyponatremia work-up.

{panel}
Volume status on examination: {volume}.

Which category fits best? Answer with exactly one of these names:
{choices}"""
CHOICE_LIST = "\n".join(f"- {c}: {DESCRIPTIONS[c]}" for c in CATEGORIES)

PANEL_FORMATS = (
    "Serum Na {na} mmol/L, serum osmolality {sosm} mOsm/kg, urine osmolality {uosm} mOsm/kg, "
    "urine Na {una} mmol/L.",
    "Labs:\n- Sodium (serum): {na} mmol/L\n- Osmolality (serum): {sosm} mOsm/kg\n"
    "- Osmolality (urine): {uosm} mOsm/kg\n- Sodium (urine, spot): {una} mmol/L",
    "BMP: Na {na} mEq/L. Serum osm {sosm} mOsm/kg. Urine studies: Uosm {uosm} mOsm/kg, UNa {una} mEq/L.",
    "Test                 Result   Units     Ref\n"
    "Sodium, serum        {na:<8} mmol/L    135-145\n"
    "Osmolality, serum    {sosm:<8} mOsm/kg   275-295\n"
    "Osmolality, urine    {uosm:<8} mOsm/kg\n"
    "Sodium, urine        {una:<8} mmol/L",
    "Serum: sodium {na} mmol/L (L), measured osmolality {sosm} mOsm/kg.\n"
    "Spot urine: osmolality {uosm} mOsm/kg, sodium {una} mmol/L.",
)
VOLUME_WORDS = {
    "hypovolemic": ("hypovolemic", "hypovolemic: dry mucous membranes, orthostatic hypotension, flat neck veins",
                    "volume depleted (dry mucosa, poor skin turgor, postural dizziness)"),
    "euvolemic": ("euvolemic", "euvolemic: moist mucous membranes, normal JVP, no edema",
                  "clinically euvolemic, no orthostasis and no edema"),
    "hypervolemic": ("hypervolemic", "hypervolemic: bilateral pitting edema to the knees, raised JVP",
                     "volume overloaded (ascites and leg edema)"),
}
SYNONYMS = {
    "siadh": ("siadh", "inappropriate antidiuretic", "inappropriate adh", "syndrome of inappropriate"),
    "low_solute_or_polydipsia": ("low solute", "polydipsia", "tea and toast", "beer potomania", "potomania"),
    "pseudohyponatremia": ("pseudohyponatremia", "pseudo hyponatremia", "isotonic hyponatremia",
                           "pseudohyponatraemia"),
    "hypertonic": ("hypertonic hyponatremia", "translocational", "hyperglycemia"),
    "edematous_state": ("edematous", "oedematous", "heart failure", "cirrhosis", "nephrotic"),
    "extrarenal_sodium_loss": ("extrarenal", "extra renal", "gastrointestinal loss", "gi loss", "third spacing"),
    "renal_sodium_loss": ("renal sodium loss", "renal salt", "salt wasting", "diuretic",
                          "mineralocorticoid deficiency"),
    "renal_failure": ("renal failure", "kidney failure", "kidney injury", "renal insufficiency"),
}


def _num(v: float) -> str:
    """A value as the lab reports it: no spurious decimals, never rounded across a rule boundary."""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:g}"


def _stable_index(key: str, n: int) -> int:
    """A per-record choice that is the same in every process (str hash() is salted)."""
    return zlib.crc32(key.encode()) % n


def _words(text: str) -> str:
    t = text.lower().replace("’", "'")
    t = re.sub(r"[^a-z0-9]+", " ", t)
    return f" {t.strip()} "


_CANONICAL = {c: f" {c.replace('_', ' ')} " for c in CATEGORIES}


class HyponatremiaUrineTask(Task):
    id = "hyponatremia_urine"
    description = "Lab panel + volume status -> hyponatremia category (rule: classify())"
    record_type = HyponatremiaRecord
    choices = CATEGORIES
    max_new_tokens = 16
    near_duplicates = False  # panels differ only in their numbers: compare the values instead

    def duplicate_key(self, record: HyponatremiaRecord) -> str:
        """The same five inputs are the same case, whichever panel layout shows them."""
        return "|".join([*(_num(v) for v in (record.serum_sodium, record.serum_osmolality,
                                              record.urine_osmolality, record.urine_sodium)),
                         record.volume_status])

    def baseline_features(self, record: HyponatremiaRecord) -> dict[str, float | str]:
        """The panel's values themselves (the prompt's layout varies; the numbers decide)."""
        return {"serum_sodium": record.serum_sodium, "serum_osmolality": record.serum_osmolality,
                "urine_osmolality": record.urine_osmolality, "urine_sodium": record.urine_sodium,
                "volume_status": record.volume_status}

    def prompt(self, record: HyponatremiaRecord) -> str:
        fmt = PANEL_FORMATS[_stable_index(record.id, len(PANEL_FORMATS))]
        panel = fmt.format(na=_num(record.serum_sodium), sosm=_num(record.serum_osmolality),
                           uosm=_num(record.urine_osmolality), una=_num(record.urine_sodium))
        words = VOLUME_WORDS[record.volume_status]
        volume = words[_stable_index(record.id[::-1], len(words))]
        return PROMPT.format(panel=panel, volume=volume, choices=CHOICE_LIST)

    def answer(self, record: HyponatremiaRecord) -> str:
        return record.label

    def parse(self, text: str) -> Prediction:
        """A category from free text: its exact name first (any case, spaces or underscores), then
        common clinical names ("SIADH", "primary polydipsia"). None when none or several match."""
        t = _words(text).replace(" hypertonic saline ", " ")  # a treatment, not a category
        hits = {c for c, name in _CANONICAL.items() if name in t}
        if not hits:
            hits = {c for c, words in SYNONYMS.items() if any(f" {w}" in t for w in words)}
        return hits.pop() if len(hits) == 1 else None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("macro_f1", "paired_bootstrap",
                   lambda recs, preds: macro_f1([r.label for r in recs], preds, CATEGORIES),
                   covers="mean F1 over the diagnosis categories present in gold or answers, each weighted "
                          "equally, so a rare category counts as much as a common one and a category never "
                          "predicted scores 0; unparseable answers are wrong. Not: how near a wrong "
                          "category is clinically (every wrong category is equally wrong)."),
            accuracy_metric(lambda r: r.label,
                            covers="share of cases given exactly the category of the urine osmolality / urine "
                                   "sodium algorithm; unparseable answers are wrong. Not: near misses, or whether "
                                   "every category is handled (see macro_f1)."),
        )

    @property
    def rejected_builders(self):
        return {"plausible_wrong_category": plausible_wrong_category, "wrong_label": wrong_label}


def near_miss_categories(record: HyponatremiaRecord) -> list[list[str]]:
    """Categories reached by getting exactly one step of the algorithm wrong, in tiers, most plausible
    first:
    a misjudged volume status or urine sodium read on the wrong side of 30 (the classic SIADH vs
    renal salt loss, edematous state vs renal failure confusions), then the urine osmolality
    threshold, then the serum osmolality band."""
    s, u, una, vol = record.serum_osmolality, record.urine_osmolality, record.urine_sodium, record.volume_status
    tiers = [
        [_rule(s, u, una, v) for v in VOLUME_STATUSES] + [_rule(s, u, 10.0 if una >= 30 else 50.0, vol)],
        [_rule(s, 60.0 if u >= 100 else 300.0, una, vol)],
        [_rule(x, u, una, vol) for x in (260.0, 285.0, 310.0)],
    ]
    out: list[list[str]] = []
    seen = {record.label}
    for tier in tiers:
        out.append([c for c in dict.fromkeys(tier) if c not in seen])
        seen.update(tier)
    return out


#: fall-back confusions for a user's label that disagrees with the rule on their values
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


def plausible_wrong_category(record: HyponatremiaRecord, rng: random.Random) -> str:
    """A category one algorithm step away from the gold one, from the most plausible kind of slip."""
    tier = next((t for t in near_miss_categories(record) if t), list(CONFUSABLE[record.label]))
    return rng.choice(tier)


def wrong_label(record: HyponatremiaRecord, rng: random.Random) -> str:
    return rng.choice([c for c in CATEGORIES if c != record.label])


TASK = HyponatremiaUrineTask()
