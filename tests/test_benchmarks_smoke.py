"""The vs-TRL benchmark's "same objective" proof, small: on the tiny model, TRL's DPOTrainer's logged
step-1 loss and answer log-probs equal clinalign's shared-prompt computation on the same token ids."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import vs_trl  # noqa: E402
from _common import make_pairs  # noqa: E402


def test_first_step_matches_trl(tiny_model_dir):
    from clinalign.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    pairs = make_pairs("classification", 2, tok, prompt_tokens=60)
    a = argparse.Namespace(batch_size=2, lora=False, dtype="float32", device="cpu")
    c = vs_trl.worker_check(str(tiny_model_dir), pairs, a)

    assert c["trl_loss"] == pytest.approx(math.log(2), abs=1e-6)
    theirs = c["trl_ids"]
    assert theirs["loss"] == pytest.approx(c["trl_loss"], abs=1e-4)
    assert theirs["logps_chosen"] == pytest.approx(c["trl_logps_chosen"], abs=1e-4)
    assert theirs["logps_rejected"] == pytest.approx(c["trl_logps_rejected"], abs=1e-4)
    # clinalign's own tokenisation stops at the end-of-turn token; TRL also trains on the template's
    # newline after it: exactly one answer token more per answer
    assert [n + 1 for n in c["own_ids"]["answer_tokens"]] == theirs["answer_tokens"]
    # ... and the comparison resolves that one token: the sums move by its log-prob (~ -log vocabulary)
    assert c["own_ids"]["logps_chosen"] - theirs["logps_chosen"] > 1.0
