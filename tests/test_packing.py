"""One packing function for training, the reference pass and evaluation: a preference pair is the
two-answer case of scoring k answers, so the three give the same log-probs for the same tokens."""

from __future__ import annotations

import copy

import pytest
import torch

from clinalign.errors import ConfigError
from clinalign.eval.inference import choice_logliks
from clinalign.models.loading import load_model, load_tokenizer
from clinalign.train.packing import answer_logps, collate_pairs, pack, pair_logps
from clinalign.train.ref_cache import Live, Precomputed, adapters_off, compute_reference_logps
from clinalign.train.tokenize import answer_ids, prompt_ids, tokenize_pair
from helpers import dpo_loss, make_loss

PROMPTS = ["Passage: 34F with dysuria and urinary frequency for two days. Does it describe a UTI?",
           "Patient message: my refill for metformin needs a new prescription, can you send it?"]
ANSWERS = [("yes", "no"), ("pharmacist, routine", "physician, emergent")]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = load_model(tiny_model_dir).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh init is nearly uniform: jitter it so answers differ clearly
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model, load_tokenizer(tiny_model_dir)


def test_training_pairs_and_evaluation_scoring_give_the_same_logps(tiny):
    model, tok = tiny
    pairs = [tokenize_pair(tok, p, c, r, 512) for p, (c, r) in zip(PROMPTS, ANSWERS, strict=True)]
    with torch.no_grad():
        chosen, rejected, _ = pair_logps(model, collate_pairs(pairs, tok.pad_token_id))
    scored = choice_logliks(model, tok, PROMPTS, [list(a) for a in ANSWERS], batch_size=2)
    for i, (c, r) in enumerate(scored):
        assert c == pytest.approx(float(chosen[i]), abs=1e-5)
        assert r == pytest.approx(float(rejected[i]), abs=1e-5)
    assert abs(float(chosen[0] - rejected[0])) > 1e-3  # the two answers do score differently
    ref_c, ref_r = compute_reference_logps(model, pairs, pad_id=tok.pad_token_id, batch_size=1)
    torch.testing.assert_close(ref_c, chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_r, rejected, atol=1e-5, rtol=0)


def test_k_answers_in_one_row_equal_each_pair_alone(tiny):
    """A third answer in the same row changes nothing for the other two: answers never see each other."""
    model, tok = tiny
    p = prompt_ids(tok, PROMPTS[0])
    a = [answer_ids(tok, PROMPTS[0], p, x) for x in ("yes", "no", "not sure, maybe a kidney stone")]
    with torch.no_grad():
        three = answer_logps(model, pack([(p, a), (p[:5], a[1:])], tok.pad_token_id))
        two = answer_logps(model, pack([(p, a[:2])], tok.pad_token_id))
        one = answer_logps(model, pack([(p, a[2:])], tok.pad_token_id))
    assert three.shape == (5,)
    torch.testing.assert_close(three[:3], torch.cat([two, one]), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="non-empty"):
        pack([(p, [a[0], []])], tok.pad_token_id)
    with pytest.raises(ValueError, match="two answers"):
        pair_logps(model, pack([(p, a)], tok.pad_token_id))


def test_references_precomputed_and_live_with_adapters_off(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    pairs = [tokenize_pair(tok, p, c, r, 512) for p, (c, r) in zip(PROMPTS, ANSWERS, strict=True)]
    batch = collate_pairs(pairs, tok.pad_token_id)
    with torch.no_grad():
        base_c, base_r, _ = pair_logps(model, batch)
    torch.manual_seed(3)
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    with torch.no_grad():
        on_c, _, _ = pair_logps(lora, batch)
    assert (on_c - base_c).abs().max() > 1e-3  # adapters on: not the base
    off_c, off_r = Live(lora, no_adapters=True).logps([0, 1], batch)
    torch.testing.assert_close(off_c, base_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(off_r, base_r, atol=1e-5, rtol=0)
    assert not off_c.requires_grad
    as_is, _ = Live(lora).logps([0, 1], batch)
    torch.testing.assert_close(as_is, on_c, atol=1e-5, rtol=0)
    pre = Precomputed(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0]))
    c, r = pre.logps([2, 0], batch)
    assert c.tolist() == [3.0, 1.0] and r.tolist() == [6.0, 4.0]
    with pytest.raises(ValueError, match="no peft adapters"), adapters_off(model):
        pass


def test_the_loss_is_built_once_and_checked_when_built():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(4, generator=g) for _ in range(4))
    nll = torch.rand(4, generator=g)
    loss = make_loss("ipo", beta=0.2, rpo_alpha=0.5)
    want = dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="ipo", rpo_alpha=0.5, chosen_nll=nll)
    torch.testing.assert_close(loss(pc, pr, rc, rr, chosen_nll=nll).losses, want.losses)
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_loss(label_smoothing=0.5)
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        from clinalign.train.losses import loss_class

        loss_class("nope", key="loss")


def test_bad_loss_options_fail_before_anything_is_written(tiny_model_dir, tmp_path, capsys):
    from clinalign.cli import run

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 4)
    out = tmp_path / "out"
    assert run(["train", "dpo", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                "label_smoothing=0.5", "progress=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label_smoothing must be in [0, 0.5)" in err[0], err
    assert not out.exists()
