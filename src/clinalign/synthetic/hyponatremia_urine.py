"""Synthetic hyponatremia panels: realistic values drawn per diagnostic category, labelled by the
task's own rule (`clinalign.tasks.hyponatremia_urine.classify`), balanced over the 8 categories."""

from __future__ import annotations

import random

from clinalign.synthetic.common import distinct_records
from clinalign.tasks.hyponatremia_urine import CATEGORIES, HyponatremiaRecord, classify


def generate(n: int, seed: int) -> list[HyponatremiaRecord]:
    """Balanced over the 8 categories: a shuffled round of all 8 per 8 records, in order; a drawn
    panel that repeats an earlier one is redrawn for the same category."""
    rng = random.Random(seed)
    rounds: list[list[str]] = []

    def draw(i: int) -> HyponatremiaRecord:
        if i // len(CATEGORIES) == len(rounds):  # the first draw of a new round shuffles it
            order = list(CATEGORIES)
            rng.shuffle(order)
            rounds.append(order)
        category = rounds[-1][-1 - i % len(CATEGORIES)]
        na, sosm, uosm, una, vol = sample_panel(category, rng)
        return HyponatremiaRecord(id=f"hypoNa-{i + 1:06d}", serum_sodium=na, serum_osmolality=sosm,
                                  urine_osmolality=uosm, urine_sodium=una, volume_status=vol,
                                  label=classify(na, sosm, uosm, una, vol))

    return distinct_records(n, draw, key=lambda r: (r.serum_sodium, r.serum_osmolality, r.urine_osmolality,
                                                    r.urine_sodium, r.volume_status))


def sample_panel(category: str, rng: random.Random) -> tuple[float, float, float, float, str]:
    """Realistic values for a category: hypotonic serum osmolality tracks 2 x Na plus glucose and
    urea; hypertonic panels carry the osmoles of hyperglycemia; urine sodium never exceeds what the
    urine osmolality can hold. Integers, as labs report them, with an occasional decimal sodium."""
    r = rng.randint
    if category == "hypertonic":
        na = r(118, 132)
        sosm, uosm, una = r(296, 345), r(320, 750), r(20, 90)
        vol = rng.choice(("hypovolemic", "hypovolemic", "euvolemic"))  # osmotic diuresis
    elif category == "pseudohyponatremia":
        na = r(119, 133)
        sosm, uosm, una, vol = r(275, 295), r(300, 750), r(30, 110), "euvolemic"
    else:
        na = r(105, 134)
        sosm = 2 * na + r(4, 16)
        while sosm >= 275:
            na = r(105, 134)
            sosm = 2 * na + r(4, 16)
        if category == "low_solute_or_polydipsia":
            uosm = r(40, 99)
            una = r(5, min(30, uosm // 2))
            vol = rng.choice(("euvolemic", "euvolemic", "euvolemic", "hypovolemic"))
        elif category == "edematous_state":
            uosm, una, vol = r(250, 650), r(3, 29), "hypervolemic"
        elif category == "extrarenal_sodium_loss":
            uosm, una = r(350, 900), r(3, 29)
            vol = rng.choice(("hypovolemic", "hypovolemic", "hypovolemic", "euvolemic"))
        elif category == "renal_sodium_loss":
            uosm, una, vol = r(280, 650), r(30, 120), "hypovolemic"
        elif category == "siadh":
            uosm, una, vol = r(200, 800), r(30, 140), "euvolemic"
        elif category == "renal_failure":
            uosm, una, vol = r(200, 380), r(30, 90), "hypervolemic"
        else:
            raise ValueError(f"unknown category {category!r}")
    una = min(una, int(uosm * 0.45))  # urine also holds potassium and urea
    serum_na: float = na + rng.choice((0.0, 0.0, 0.0, 0.5)) if na < 134 else na
    return serum_na, float(sosm), float(uosm), float(una), vol
