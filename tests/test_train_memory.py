"""Memory options for large models, checked on the tiny model: gradient checkpointing recomputes
activations in the backward pass and must give the same loss and gradients as keeping them."""

from __future__ import annotations

import pytest
import torch

from clinalign.models.loading import load_tokenizer
from clinalign.train.config import build_config
from clinalign.train.loop import load_policy
from clinalign.train.packing import collate_pairs, collate_sft, pair_logps, sft_forward
from clinalign.train.tokenize import tokenize_pair, tokenize_sft

PROMPT = "Does this note describe a urinary tract infection? Dysuria, frequency, positive nitrites."


@pytest.mark.parametrize("lora", [True, False])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, lora):
    tok = load_tokenizer(tiny_model_dir)
    sft = collate_sft([tokenize_sft(tok, PROMPT, a, 256) for a in ("yes", "no, it does not")], tok.pad_token_id)
    pairs = collate_pairs([tokenize_pair(tok, PROMPT, "yes", "no", 256)], tok.pad_token_id)
    runs = []
    for gc in (False, True):
        torch.manual_seed(0)  # the same adapter initialisation
        cfg = build_config(None, values={"model": str(tiny_model_dir), "lora": lora, "lora_rank": 4,
                                         "lora_dropout": 0.0, "gradient_checkpointing": gc})
        model = load_policy(cfg, str(tiny_model_dir))
        inner = model.get_base_model() if lora else model
        calls: list[int] = []
        hook = inner.model.layers[0].self_attn.register_forward_hook(lambda *_, c=calls: c.append(1))
        loss = sft_forward(model, sft)
        c, r, _ = pair_logps(model, pairs)
        assert len(calls) == 2
        (loss + c.sum() - r.sum()).backward()
        assert (len(calls) > 2) is gc  # checkpointing: the layer ran again in the backward pass
        hook.remove()
        runs.append((loss.detach(), c.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                   if p.requires_grad}))
    (l0, c0, g0), (l1, c1, g1) = runs
    torch.testing.assert_close(l1, l0, atol=1e-6, rtol=0)
    torch.testing.assert_close(c1, c0, atol=1e-6, rtol=0)
    assert g0.keys() == g1.keys() and g0
    assert any(g.abs().sum() > 0 for g in g0.values())
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-6, rtol=1e-5)
