"""Small helpers for the synthetic text generators: seeded choice, light typos, answer cleaning.

Every function takes the caller's ``random.Random`` so generation never touches global state and the
same seed always gives the same records.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

#: de-identified placeholders, in the style of de-identified clinical corpora (never titled real-looking
#: names: the PHI scan in data/audit.py would rightly flag them)
PATIENT_NAMES = ("[PATIENT NAME]", "[NAME]", "[PATIENT]", "[FIRST NAME]", "[Name]")
CLINICIAN_NAMES = ("Dr. [CLINICIAN]", "Dr. [NAME]", "my doctor", "my provider", "Dr. [PROVIDER]")


def pick(rng: random.Random, options: Sequence[T]) -> T:
    return options[rng.randrange(len(options))]


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


def clean_answer(text: str, keep_newlines: bool = False) -> str:
    """Lower-case model text and strip markdown emphasis, quotes and stray punctuation so parsers can
    match words; line breaks survive when asked, for answers laid out one field per line."""
    t = text.lower().replace("’", "'")
    t = re.sub(r"[*_`#>\"“”]", " ", t)
    if keep_newlines:
        return "\n".join(re.sub(r"[^\S\n]+", " ", line).strip() for line in t.splitlines()).strip()
    return re.sub(r"\s+", " ", t).strip()
