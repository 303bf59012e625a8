"""The shared-prompt 4D mask through PyTorch SDPA equals the eager (matmul + softmax) path to 1e-5 on
CPU: DPO pair log-probs with their gradients, and label scoring of allowed answers."""

from __future__ import annotations

import pytest
import torch

from clinalign.eval.inference import choice_logliks
from clinalign.models.loading import load_tokenizer
from clinalign.train.packing import attn_implementation, collate_pairs, pair_logps
from clinalign.train.tokenize import tokenize_pair

PROMPTS = ["Dysuria and urgency for two days, nitrite positive. UTI?",
           "A 70-year-old on a thiazide with serum sodium 124 mmol/L, urine osmolality 450, urine sodium 45. "
           "What is the most likely category?",
           "Cough only."]


def _model(path, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation=attn, dtype=torch.float32)
    assert attn_implementation(model) == attn
    return model


def test_sdpa_equals_eager_for_pair_logps_and_gradients(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    batch = collate_pairs([tokenize_pair(tok, p, c, r, 256) for p, c, r in
                           zip(PROMPTS, ["yes", "SIADH", "no, not at all"], ["no", "hypovolemic", "yes"], strict=True)],
                          tok.pad_token_id)
    got = {}
    for attn in ("eager", "sdpa"):
        model = _model(tiny_model_dir, attn)
        c, r, nll = pair_logps(model, batch)
        (c.sum() - r.sum()).backward()
        got[attn] = (c.detach(), r.detach(), nll.detach(), {n: p.grad for n, p in model.named_parameters()})
    for a, b in zip(got["eager"][:3], got["sdpa"][:3], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert (got["sdpa"][0] != got["sdpa"][1]).all()
    for name, g in got["eager"][3].items():
        torch.testing.assert_close(got["sdpa"][3][name], g, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_sdpa_equals_eager_for_label_scoring(tiny_model_dir, batch_size):
    tok = load_tokenizer(tiny_model_dir)
    choices = [["yes", "no"], ["SIADH", "hypovolemic", "primary polydipsia / low solute"], ["A", "B", "C", "D"]]
    with torch.no_grad():
        eager = choice_logliks(_model(tiny_model_dir, "eager").eval(), tok, PROMPTS, choices, batch_size)
        sdpa = choice_logliks(_model(tiny_model_dir, "sdpa").eval(), tok, PROMPTS, choices, batch_size)
    for a, b in zip(eager, sdpa, strict=True):
        assert b == pytest.approx(a, abs=1e-5)
    assert len({round(x, 3) for x in sdpa[1]}) == 3
