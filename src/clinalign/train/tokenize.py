"""Tokenisation: a prompt and its answers as token ids, the way training, the reference pass and
evaluation all see them (chat template, answer text, end-of-turn token).

Over-long examples follow an explicit policy (``truncation=``): ``"left"`` drops tokens from the
start of the prompt and keeps the answers whole (``example.truncated`` is True); ``"drop"`` returns
None so the caller counts and reports the drop. An example whose answer alone does not fit is
dropped under either policy. ``max_length`` bounds prompt + the longer answer (what each of the two
sequences of a pair would be on its own, TRL's meaning); the packed pair is prompt + both answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinalign.errors import ConfigError

TRUNCATION_POLICIES = ("left", "drop")
IGNORE = -100

Prompt = str | list[dict[str, Any]]
Answer = str | list[dict[str, Any]]


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens
    truncated: bool = False


@dataclass
class PairExample:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _ids(enc: Any) -> list[int]:
    ids = enc["input_ids"] if not isinstance(enc, list) else enc
    return list(ids)


def _as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _text(x: Prompt | Answer) -> str:
    return x if isinstance(x, str) else "\n".join(str(m["content"]) for m in x)


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token: answers could not be terminated")
    return int(tokenizer.eos_token_id)


def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The prompt as the model sees it before its reply: chat template with the generation prompt."""
    if _has_template(tokenizer):
        return _ids(
            tokenizer.apply_chat_template(_as_messages(prompt), add_generation_prompt=True, tokenize=True)
        )
    return _ids(tokenizer(_text(prompt), add_special_tokens=True))


def answer_ids(tokenizer: Any, prompt: Prompt, prompt_tokens: list[int], answer: Answer) -> list[int]:
    """Answer text + end-of-turn token, as the chat template renders it after the prompt."""
    eos = _eos_id(tokenizer)
    if _has_template(tokenizer):
        reply = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
        full = _ids(tokenizer.apply_chat_template(_as_messages(prompt) + reply, tokenize=True))
        if full[: len(prompt_tokens)] == prompt_tokens and eos in full[len(prompt_tokens) :]:
            ids = full[len(prompt_tokens) :]
            last = len(ids) - 1 - ids[::-1].index(eos)
            return ids[: last + 1]  # templates add a newline after the end-of-turn token: not trained on
    return _ids(tokenizer(_text(answer), add_special_tokens=False)) + [eos]


def fit_prompt(
    tokenizer: Any, prompt_tokens: list[int], answer_len: int, max_length: int, truncation: str
) -> tuple[list[int] | None, bool]:
    """Apply the over-long policy; returns (prompt ids or None when dropped, truncated?)."""
    if truncation not in TRUNCATION_POLICIES:
        raise ConfigError(
            f"unknown truncation policy {truncation!r}; choose one of {', '.join(TRUNCATION_POLICIES)}"
        )
    if len(prompt_tokens) + answer_len <= max_length:
        return prompt_tokens, False
    if truncation == "drop":
        return None, True
    keep = max_length - answer_len
    bos = getattr(tokenizer, "bos_token_id", None)
    head = [prompt_tokens[0]] if bos is not None and prompt_tokens and prompt_tokens[0] == bos else []
    keep -= len(head)
    if keep < 1:
        return None, True  # the answer alone does not fit
    return head + prompt_tokens[-keep:], True


def tokenize_sft(
    tokenizer: Any, prompt: Prompt, completion: Answer, max_length: int, truncation: str = "left"
) -> SFTExample | None:
    """One SFT example; loss only on the answer tokens. None when dropped by the truncation policy."""
    p = prompt_ids(tokenizer, prompt)
    a = answer_ids(tokenizer, prompt, p, completion)
    p2, truncated = fit_prompt(tokenizer, p, len(a), max_length, truncation)
    if p2 is None:
        return None
    return SFTExample(p2 + a, [IGNORE] * len(p2) + a, truncated)


def tokenize_pair(
    tokenizer: Any,
    prompt: Prompt,
    chosen: Answer,
    rejected: Answer,
    max_length: int,
    truncation: str = "left",
) -> PairExample | None:
    """One preference pair as token ids. None when dropped by the truncation policy."""
    p = prompt_ids(tokenizer, prompt)
    c = answer_ids(tokenizer, prompt, p, chosen)
    r = answer_ids(tokenizer, prompt, p, rejected)
    p2, truncated = fit_prompt(tokenizer, p, max(len(c), len(r)), max_length, truncation)
    if p2 is None:
        return None
    return PairExample(p2, c, r, truncated)
