"""Tokenisation, truncation policy, shared-prompt packing, answer-only projection, reference cache."""

from __future__ import annotations

import pytest
import torch

from clinalign.errors import ConfigError
from clinalign.hashing import model_fingerprint
from clinalign.models.loading import load_model, load_tokenizer
from clinalign.train.packing import collate_pairs, collate_sft, pair_logps, pair_logps_concat, sft_forward
from clinalign.train.ref_cache import (
    adapters_off,
    cached_reference_logps,
    compute_reference_logps,
    fingerprint_pairs,
)
from clinalign.train.tokenize import IGNORE, tokenize_pair, tokenize_sft
from helpers import sft_logps

PROMPTS = [
    "Passage: 34F with dysuria, urinary frequency and suprapubic pain for two days. Does it describe a UTI?",
    "Passage: 70M, fever.",
    "Passage: 52F presenting with flank pain, fever 39.1C, nausea, pyuria on urinalysis, nitrite positive, "
    "recent catheter removal after hip surgery, currently on no antibiotics. Does it describe a UTI?",
]
ANSWERS = [("yes", "no"), ("no", "yes, it describes a urinary tract infection"), ("yes", "no")]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    torch.manual_seed(0)
    return load_model(tiny_model_dir).eval()


def _pairs(tok, max_length=512):
    return [tokenize_pair(tok, p, c, r, max_length) for p, (c, r) in zip(PROMPTS, ANSWERS, strict=True)]


# ---------------------------------------------------------------- tokenisation and truncation


def test_chat_template_prompt_and_answer_tokens(tok):
    ex = tokenize_pair(tok, PROMPTS[0], "yes", "no", 512)
    assert tok.decode(ex.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(ex.prompt_ids).startswith("<|im_start|>user\n")
    assert ex.chosen_ids[-1] == tok.eos_token_id and ex.rejected_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.chosen_ids[:-1]) == "yes"  # no trailing template newline is trained on
    assert not ex.truncated
    # TRL's conversational format gives the same tokens
    conv = tokenize_pair(
        tok,
        [{"role": "user", "content": PROMPTS[0]}],
        [{"role": "assistant", "content": "yes"}],
        [{"role": "assistant", "content": "no"}],
        512,
    )
    assert (conv.prompt_ids, conv.chosen_ids, conv.rejected_ids) == (
        ex.prompt_ids,
        ex.chosen_ids,
        ex.rejected_ids,
    )


def test_sft_labels_mask_the_prompt(tok):
    ex = tokenize_sft(tok, PROMPTS[1], "no", 512)
    n_prompt = sum(1 for x in ex.labels if x == IGNORE)
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert tok.decode(ex.input_ids[:n_prompt]).endswith("assistant\n")
    assert ex.input_ids[-1] == tok.eos_token_id


def test_without_chat_template_prompt_text_then_answer_and_eos(tiny_model_dir):
    plain = load_tokenizer(tiny_model_dir)
    plain.chat_template = None
    ex = tokenize_pair(plain, "fever and dysuria", "yes", "no", 64)
    assert plain.decode(ex.prompt_ids) == "fever and dysuria"
    assert ex.chosen_ids == plain("yes", add_special_tokens=False)["input_ids"] + [plain.eos_token_id]


def test_truncation_left_keeps_answer_whole_and_prompt_end(tok):
    full = tokenize_pair(tok, PROMPTS[2], *ANSWERS[1], 4096)
    longest = max(len(full.chosen_ids), len(full.rejected_ids))
    limit = len(full.prompt_ids) + longest - 10
    cut = tokenize_pair(tok, PROMPTS[2], *ANSWERS[1], limit, truncation="left")
    assert cut.truncated and not full.truncated
    assert cut.chosen_ids == full.chosen_ids and cut.rejected_ids == full.rejected_ids
    assert cut.prompt_ids == full.prompt_ids[10:]  # the start went, the end (and the question) stayed
    assert len(cut.prompt_ids) + longest == limit
    sft = tokenize_sft(tok, PROMPTS[2], "yes", 20, truncation="left")
    assert sft.truncated and len(sft.input_ids) == 20 and sft.labels[-2:] == sft.input_ids[-2:]


def test_truncation_drop_and_answer_that_cannot_fit(tok):
    full = tokenize_pair(tok, PROMPTS[2], "yes", "no", 4096)
    n = len(full.prompt_ids) + max(len(full.chosen_ids), len(full.rejected_ids))
    assert tokenize_pair(tok, PROMPTS[2], "yes", "no", n, truncation="drop") is not None  # exactly fits
    assert tokenize_pair(tok, PROMPTS[2], "yes", "no", n - 1, truncation="drop") is None
    assert tokenize_sft(tok, PROMPTS[2], "yes", n - 1, truncation="drop") is None
    assert tokenize_pair(tok, PROMPTS[2], "yes", "no", 2, truncation="left") is None  # answer alone fills it
    with pytest.raises(ConfigError, match="unknown truncation policy 'middle'"):
        tokenize_pair(tok, PROMPTS[0], "yes", "no", 64, truncation="middle")


# ---------------------------------------------------------------- shared prompt


def test_packed_layout_positions_and_mask(tok):
    ex = _pairs(tok)
    b = collate_pairs(ex, tok.pad_token_id)
    p, c, r = len(ex[1].prompt_ids), len(ex[1].chosen_ids), len(ex[1].rejected_ids)
    assert b.position_ids[1, p : p + c].tolist() == list(range(p, p + c))
    assert b.position_ids[1, p + c : p + c + r].tolist() == list(range(p, p + r))
    m = b.attention_mask[1, 0]
    assert m[p + c, :p].all() and not m[p + c, p : p + c].any()  # rejected sees the prompt, not chosen
    assert m[p + c - 1, : p + c].all() and not m[p, p + c :].any()  # chosen sees prompt + earlier chosen
    assert not m[: p + c + r, p + c + r :].any()  # nobody real sees padding
    assert b.logits_mask.sum().item() == sum(len(e.chosen_ids) + len(e.rejected_ids) - 1 for e in ex)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_equals_two_separate_forwards(tiny_model_dir, tok, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation=attn).eval()
    b = collate_pairs(_pairs(tok), tok.pad_token_id)
    assert len({len(e.prompt_ids) for e in b.examples}) == 3 and len(b) == 3
    shared = pair_logps(model, b)
    plain = pair_logps_concat(model, b)
    for s, p in zip(shared, plain, strict=True):
        torch.testing.assert_close(s, p, atol=1e-5, rtol=0)
    assert (shared[0] != shared[1]).all()


def test_shared_prompt_gradients_equal_with_lora(model, tok):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = load_model(model.name_or_path)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    b = collate_pairs(_pairs(tok), tok.pad_token_id)
    grads = []
    for fn in (pair_logps, pair_logps_concat):
        lora.zero_grad()
        c, r, nll = fn(lora, b)
        (c.sum() - 2 * r.sum() + nll.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in lora.named_parameters() if p.requires_grad})
        vals = (c, r)
        if fn is pair_logps:
            first = vals
    for s, p in zip(first, vals, strict=True):
        torch.testing.assert_close(s, p, atol=1e-4, rtol=0)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-3)


def test_rejected_never_sees_chosen(model, tok):
    a = tokenize_pair(tok, PROMPTS[0], "yes", "no", 512)
    b = tokenize_pair(tok, PROMPTS[0], "yes it does, clearly", "no", 512)
    with torch.no_grad():
        ra = pair_logps(model, collate_pairs([a], tok.pad_token_id))[1]
        rb = pair_logps(model, collate_pairs([b], tok.pad_token_id))[1]
    torch.testing.assert_close(ra, rb, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- answer-only projection (SFT)


def test_answer_only_projection_equals_full_logits(model, tok):
    ex = [tokenize_sft(tok, p, c, 512) for p, (c, _) in zip(PROMPTS, ANSWERS, strict=True)]
    batch = collate_sft(ex, tok.pad_token_id)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        tok_lp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        full = (tok_lp * (labels != IGNORE)).sum(-1)
        torch.testing.assert_close(sft_logps(model, batch), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(sft_forward(model, batch), model(**batch).loss, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- reference log-probs and cache


def test_reference_with_lora_is_base_model_and_cache_hits(model, tok, tmp_path):
    from peft import LoraConfig, get_peft_model

    pairs = _pairs(tok) * 3  # 9 pairs: more than one batch
    with torch.no_grad():
        base_c, base_r, _ = pair_logps(model, collate_pairs(pairs, tok.pad_token_id))
    torch.manual_seed(2)
    lora = get_peft_model(
        load_model(model.name_or_path), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    lora.train()
    with adapters_off(lora):
        ref_c, ref_r = compute_reference_logps(lora, pairs, pad_id=tok.pad_token_id, batch_size=4)
    torch.testing.assert_close(ref_c, base_c, atol=1e-5, rtol=0)  # adapters were off, order kept
    torch.testing.assert_close(ref_r, base_r, atol=1e-5, rtol=0)
    assert lora.training  # mode restored
    with torch.no_grad():
        on_c, _, _ = pair_logps(lora, collate_pairs(pairs, tok.pad_token_id))
    assert (on_c - base_c).abs().max() > 1e-3  # the adapter does change the policy

    fp = model_fingerprint(model.name_or_path)
    settings = {"max_length": 512, "truncation": "left"}
    c1, r1, hit1 = cached_reference_logps(
        lora, pairs, tmp_path, model_fingerprint=fp, settings=settings, pad_id=tok.pad_token_id
    )
    assert not hit1 and len(list(tmp_path.glob("ref-logps-*.safetensors"))) == 1
    c2, r2, hit2 = cached_reference_logps(None, pairs, tmp_path, model_fingerprint=fp, settings=settings)
    assert hit2 and torch.equal(c1, c2) and torch.equal(r1, r2)
    _, _, hit3 = cached_reference_logps(
        lora,
        pairs,
        tmp_path,
        model_fingerprint=fp,
        settings={**settings, "max_length": 256},
        pad_id=tok.pad_token_id,
    )
    _, _, hit4 = cached_reference_logps(
        lora, pairs[:4], tmp_path, model_fingerprint=fp, settings=settings, pad_id=tok.pad_token_id
    )
    assert not hit3 and not hit4
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_fingerprints_change_with_weights_and_data(model, tok, tmp_path):
    assert model_fingerprint(model.name_or_path) == model_fingerprint(model.name_or_path)
    assert model_fingerprint(model) == model_fingerprint(model)
    other = load_model(model.name_or_path)
    with torch.no_grad():
        other.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    assert model_fingerprint(other) != model_fingerprint(model)
    other.save_pretrained(tmp_path / "m")
    assert model_fingerprint(tmp_path / "m") != model_fingerprint(model.name_or_path)
    pairs = _pairs(tok)
    assert fingerprint_pairs(pairs) != fingerprint_pairs(pairs[::-1])


def test_pair_logps_through_ddp_and_fsdp2_wrappers(tiny_model_dir, tok, tmp_path):
    """The hot path only calls ``model(...)``, so wrapped modules work unchanged (1-process group)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this session")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        b = collate_pairs(_pairs(tok), tok.pad_token_id)
        plain = load_model(tiny_model_dir)
        want = pair_logps(plain, b)
        ddp = DistributedDataParallel(load_model(tiny_model_dir))
        c, r, _ = pair_logps(ddp, b)
        (c.sum() - r.sum()).backward()
        assert all(p.grad is not None for p in ddp.parameters())
        sharded = load_model(tiny_model_dir)
        for layer in sharded.model.layers:
            fully_shard(layer)
        fully_shard(sharded)
        for got in (c, r), pair_logps(sharded, b)[:2]:
            torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=0)
        ref_c, _ = compute_reference_logps(sharded, list(b.examples), pad_id=tok.pad_token_id, batch_size=2)
        torch.testing.assert_close(ref_c, want[0].detach(), atol=1e-5, rtol=0)
    finally:
        dist.destroy_process_group()


def _ref_worker(rank: int, world: int, init: str, model_dir: str, pairs: list, pad: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        c, r = compute_reference_logps(load_model(model_dir), pairs, pad_id=pad, batch_size=2)
        torch.save((c, r), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_reference_logps_shard_parallel_over_two_processes(tiny_model_dir, tok, tmp_path):
    import torch.multiprocessing as mp

    pairs = _pairs(tok) * 3  # 9 pairs: uneven across 2 ranks
    want = compute_reference_logps(load_model(tiny_model_dir), pairs, pad_id=tok.pad_token_id, batch_size=4)
    out = str(tmp_path / "ref")
    mp.spawn(
        _ref_worker,
        args=(2, f"file://{tmp_path / 'pg'}", str(tiny_model_dir), pairs, tok.pad_token_id, out),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=0)
