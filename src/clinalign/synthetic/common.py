"""What the bundled generators share: drawing ``n`` distinct records, and seeded text variation.

Every function takes the caller's ``random.Random`` so generation never touches global state and the
same seed always gives the same records.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Hashable
from typing import TypeVar

from clinalign.tasks.text import pick

R = TypeVar("R")

#: de-identified placeholders, in the style of de-identified clinical corpora (never titled real-looking
#: names: the PHI scan in data/audit.py would rightly flag them)
PATIENT_NAMES = ("[PATIENT NAME]", "[NAME]", "[PATIENT]", "[FIRST NAME]", "[Name]")


def distinct_records(n: int, draw: Callable[[int], R], key: Callable[[R], Hashable]) -> list[R]:
    """``n`` records from ``draw(i)``, where ``i`` is the index the record will have (its id), skipping
    a record whose ``key`` (its input text or values) was drawn before: a duplicate input would be
    the same item twice in a dataset, and could sit on both sides of a split."""
    out: list[R] = []
    seen: set[Hashable] = set()
    while len(out) < n:
        record = draw(len(out))
        k = key(record)
        if k in seen:
            continue
        seen.add(k)
        out.append(record)
    return out


def maybe(rng: random.Random, p: float, text: str, otherwise: str = "") -> str:
    return text if rng.random() < p else otherwise


def sentences(*parts: str) -> str:
    """Join non-empty parts with single spaces (parts carry their own punctuation)."""
    return " ".join(p.strip() for p in parts if p and p.strip())


_NEIGHBOURS = {"a": "s", "e": "r", "i": "o", "o": "i", "t": "r", "n": "m", "s": "a", "r": "e", "l": "k", "h": "j"}


def typo(rng: random.Random, text: str, p: float = 0.25) -> str:
    """With probability ``p`` introduce one realistic typo (swap, drop, or neighbouring key) in a word of
    five or more letters, as patients type on phones. Never touches digits, so numbers stay true."""
    if rng.random() >= p:
        return text
    words = [(m.start(), m.end()) for m in re.finditer(r"\b[a-z]{5,}\b", text)]
    if not words:
        return text
    start, end = pick(rng, words)
    w = text[start:end]
    i = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    elif kind == 1:
        w = w[:i] + w[i + 1 :]
    else:
        w = w[:i] + _NEIGHBOURS.get(w[i], w[i]) + w[i + 1 :]
    return text[:start] + w + text[end:]


def lowercase_casual(rng: random.Random, text: str, p: float = 0.15) -> str:
    """Some patients type in all lower case."""
    return text.lower() if rng.random() < p else text
