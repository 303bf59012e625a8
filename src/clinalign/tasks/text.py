"""Text helpers the task definitions share: cleaning model output before a parser reads it, and a
seeded choice for the builders of rejected answers."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def pick(rng: random.Random, options: Sequence[T]) -> T:
    """One of ``options``, drawn from the caller's ``rng`` so the same seed gives the same choice."""
    return options[rng.randrange(len(options))]


def clean_answer(text: str, keep_newlines: bool = False) -> str:
    """Lower-case model text and strip markdown emphasis, quotes and stray punctuation so parsers can
    match words; line breaks survive when asked, for answers laid out one field per line."""
    t = text.lower().replace("’", "'")
    t = re.sub(r"[*_`#>\"“”]", " ", t)
    if keep_newlines:
        return "\n".join(re.sub(r"[^\S\n]+", " ", line).strip() for line in t.splitlines()).strip()
    return re.sub(r"\s+", " ", t).strip()


#: special tokens of the common chat templates (ChatML, Llama 2/3, Mistral, Gemma) and markdown code
#: fences: a model that has not learnt where its turn ends writes them into its answer
_CHAT_TOKENS = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]|<end_of_turn>|<start_of_turn>(model|user)?|```\w*")


def strip_chat_artefacts(text: str, heading: str | None = None) -> str:
    """Free model text without chat-template tokens, code fences and a leading ``assistant`` role line;
    ``heading`` is a regex for a label the model may put before its answer (``Summary:``), removed
    too, before or after the role line. Generation tasks parse their answers through this."""
    leading = re.compile(r"^\s*(assistant\s*\n" + (f"|{heading}" if heading else "") + ")", re.IGNORECASE)
    t = _CHAT_TOKENS.sub(" ", text)
    for _ in range(3):  # role line, then heading, in either order
        t = leading.sub("", t.strip(), count=1)
    return t.strip()
