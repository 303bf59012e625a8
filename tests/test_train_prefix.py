"""The frozen-prefix cache changes the cost, not the numbers: answer log-probs, losses and gradients
equal the plain forward's, and whole SFT and DPO runs train to the same adapter."""

from __future__ import annotations

import json

import pytest
import torch

from clinalign.cli import run
from clinalign.models.layers import PrefixCache, decoder_stack, frozen_layers
from clinalign.synthetic import generate
from clinalign.train.packing import collate_pairs, collate_sft, pair_logps, sft_forward
from clinalign.train.ref_cache import adapters_off
from clinalign.train.tokenize import IGNORE, PairExample, SFTExample


@pytest.fixture
def lora_tiny(tiny_model_dir):
    """The tiny 2-layer Llama, weights jittered (a fresh init is nearly uniform), LoRA with random
    non-zero B on its last layer only, so both the frozen layer and the adapter shape the output."""
    from peft import LoraConfig, get_peft_model

    from clinalign.models.loading import load_model

    model = load_model(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                     layers_to_transform=[1], init_lora_weights=False)
    return get_peft_model(model, cfg)


def _ids(g: torch.Generator, n: int) -> list[int]:
    return torch.randint(5, 200, (n,), generator=g).tolist()


def test_frozen_layers_counts_the_untrained_lead(lora_tiny):
    assert frozen_layers(lora_tiny) == 1
    assert len(decoder_stack(lora_tiny).layers) == 2


def test_sft_loss_and_gradients_equal_the_plain_forward(lora_tiny):
    g = torch.Generator().manual_seed(1)
    examples = []
    for p, a in [(17, 3), (40, 1), (9, 6)]:  # different lengths: padding in the batch
        prompt, answer = _ids(g, p), _ids(g, a)
        examples.append(SFTExample(prompt + answer, [IGNORE] * p + answer))

    def loss_and_grads(model, batch):
        lora_tiny.zero_grad()
        loss = sft_forward(model, batch, reduction="sum")
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in lora_tiny.named_parameters() if p.requires_grad}

    plain_loss, plain_grads = loss_and_grads(lora_tiny, collate_sft(examples, 0))
    cache = PrefixCache(lora_tiny, 1)
    batch = collate_sft(examples, 0)
    cached_loss, cached_grads = loss_and_grads(cache, batch)
    assert len(cache.rows) == len(examples) and all(h.shape[0] == len(e.input_ids)  # one row each, unpadded
                                                    for h, e in zip(cache.rows.values(), examples, strict=True))
    # a summed loss near 94 in float32: one ulp is 7.6e-6, so the bound is relative (1e-6), as in test_inference
    assert cached_loss == pytest.approx(plain_loss, rel=1e-6, abs=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert len(decoder_stack(lora_tiny).layers) == 2  # the layer list is back after each call


def test_pair_logps_equal_the_plain_forward_with_and_without_adapters(lora_tiny):
    g = torch.Generator().manual_seed(2)
    pairs = [PairExample(_ids(g, p), _ids(g, c), _ids(g, r)) for p, c, r in [(30, 2, 4), (12, 5, 1), (25, 1, 1)]]
    with torch.no_grad():
        plain = pair_logps(lora_tiny, collate_pairs(pairs, 0))
        with adapters_off(lora_tiny) as ref:
            plain_ref = pair_logps(ref, collate_pairs(pairs, 0))
        cache = PrefixCache(lora_tiny, 1)
        batch = collate_pairs(pairs, 0)
        cached = pair_logps(cache, batch)
        assert len(cache.rows) == len(pairs) and cache.start == 1
        with adapters_off(cache) as ref:
            cached_ref = pair_logps(ref, batch)
        assert len(cache.rows) == len(pairs)  # the reference pass reused the rows
    for want, got in zip((*plain, *plain_ref), (*cached, *cached_ref), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain[0], plain_ref[0])  # the adapter matters: the check can fail


def _train(stage, tiny_model_dir, data, out, *extra):
    args = ["train", stage, "--model", str(tiny_model_dir), "--data", str(data), "--task", "uti_classification",
            "--out", str(out), "--batch-size", "4", "--max-steps", "4", "--lr", "5e-3", "max_length=256",
            "progress=false", "lora_rank=4", "lora_dropout=0", "lora_layers=1", *extra]
    assert run(args) == 0
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    from safetensors.torch import load_file

    return losses, load_file(str(out / "final" / "adapter_model.safetensors"))


def test_sft_then_dpo_runs_train_the_same_adapter(tiny_model_dir, tmp_path):
    from clinalign.data.io import write_jsonl
    from clinalign.tasks import get_task

    data = tmp_path / "uti.jsonl"
    write_jsonl(data, generate(get_task("uti_classification"), 16, seed=5))
    runs = {}
    for cache in ("false", "true"):
        sft = _train("sft", tiny_model_dir, data, tmp_path / f"sft-{cache}", f"prefix_cache={cache}")
        dpo = _train("dpo", tiny_model_dir, data, tmp_path / f"dpo-{cache}", f"prefix_cache={cache}",
                     "--init-from", str(tmp_path / f"sft-{cache}" / "final"))
        runs[cache] = (sft, dpo)
    for (plain_losses, plain_w), (cached_losses, cached_w) in zip(runs["false"], runs["true"], strict=True):
        assert cached_losses == pytest.approx(plain_losses, abs=1e-4)
        assert plain_losses[-1] != plain_losses[0]  # it trained
        for k in plain_w:
            torch.testing.assert_close(cached_w[k], plain_w[k], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(("extra", "message"), [
    (["prefix_cache=true"], "nothing to cache"),  # every layer trains
    (["prefix_cache=true", "--no-lora"], "prefix_cache needs LoRA"),
])
def test_prefix_cache_refuses_what_it_cannot_do(tiny_model_dir, tmp_path, capsys, extra, message):
    from clinalign.data.io import write_jsonl
    from clinalign.tasks import get_task

    data = tmp_path / "uti.jsonl"
    write_jsonl(data, generate(get_task("uti_classification"), 8, seed=5))
    code = run(["train", "sft", "--model", str(tiny_model_dir), "--data", str(data), "--task", "uti_classification",
                "--out", str(tmp_path / "out"), "--max-steps", "1", "progress=false", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "out" / "final").exists()


@pytest.mark.distributed
def test_ddp_with_the_cache_matches_one_plain_process(tiny_model_dir, tmp_path):
    """2 gloo processes x batch 2 with the cache = 1 process x batch 4 without it (DPO, LoRA on layer 1)."""
    import os
    import subprocess
    import sys

    from clinalign.data.io import write_jsonl
    from clinalign.tasks import get_task

    data = tmp_path / "uti.jsonl"
    write_jsonl(data, generate(get_task("uti_classification"), 16, seed=5))
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--task", "uti_classification",
              "--max-steps", "3", "--lr", "5e-3", "max_length=256", "progress=false", "lora_rank=4",
              "lora_dropout=0", "lora_layers=1"]
    assert run(["train", "dpo", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "clinalign.cli", "train", "dpo", *common, "--out", str(tmp_path / "two"), "--batch-size", "2",
           "parallel=ddp", "prefix_cache=true"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    from safetensors.torch import load_file

    rows = {k: [json.loads(x)["loss"] for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
            for k in ("one", "two")}
    assert rows["two"] == pytest.approx(rows["one"], abs=1e-5)
    one, two = (load_file(str(tmp_path / k / "final" / "adapter_model.safetensors")) for k in ("one", "two"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4)


def test_a_row_is_known_by_its_content_and_computed_alone(lora_tiny):
    """The cache's key is the row, not the batch: a pair met again in another batch (other order, other
    padding) is not computed again, and what is kept equals the pair run alone, bit for bit."""
    from clinalign.models.layers import hidden_before
    from clinalign.train.packing import model_mask

    g = torch.Generator().manual_seed(3)
    pairs = [PairExample(_ids(g, p), _ids(g, c), _ids(g, r)) for p, c, r in [(30, 2, 4), (12, 5, 1), (25, 1, 1)]]
    cache = PrefixCache(lora_tiny, 1)
    with torch.no_grad():
        first = pair_logps(cache, collate_pairs(pairs[:2], 0))[0]
        kept = dict(cache.rows)
        again = pair_logps(cache, collate_pairs([pairs[2], pairs[1], pairs[0]], 0))[0]
        alone = []
        for p in pairs:
            b = collate_pairs([p], 0)
            alone.append(hidden_before(lora_tiny, 1, b.input_ids, model_mask(lora_tiny, b.attention_mask),
                                       b.position_ids)[0])
    assert len(kept) == 2 and len(cache.rows) == 3
    assert all(torch.equal(cache.rows[k], v) for k, v in kept.items())
    assert sorted(h.shape[0] for h in cache.rows.values()) == sorted(h.shape[0] for h in alone)
    assert all(any(torch.equal(h, a) for a in alone) for h in cache.rows.values())
    torch.testing.assert_close(again[[2, 1]], first, atol=1e-5, rtol=1e-5)
    cache.clear()
    assert not cache.rows
