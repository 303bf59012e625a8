"""Label scoring equals separately computed log-likelihoods; batched generation equals one-by-one."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clinalign.eval.inference import choice_logliks, generate_answers, predict_closed_set, score_choices
from clinalign.models.loading import load_model, load_tokenizer
from clinalign.tasks import get_task
from clinalign.train.batching import _answer_ids, _prompt_ids


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    torch.manual_seed(0)
    return load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


def full_forward_loglik(model, tok, prompt: str, answer: str) -> float:
    p = _prompt_ids(tok, prompt)
    a = _answer_ids(tok, prompt, p, answer)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0].float(), dim=-1)
    return sum(float(logp[len(p) - 1 + j, a[j]]) for j in range(len(a)))


def test_choice_logliks_equal_full_forwards(tiny):
    model, tok = tiny
    task = get_task("message_triage")  # 12 two-line answers of different token lengths
    for rec in task.generate(3, seed=2):
        prompt = task.prompt(rec)
        got = choice_logliks(model, tok, prompt, task.choices)
        want = [full_forward_loglik(model, tok, prompt, c) for c in task.choices]
        assert got == pytest.approx(want, abs=1e-4)


def test_predictions_are_argmax_and_probabilities(tiny):
    model, tok = tiny
    task = get_task("clinical_reasoning")  # 4 or 5 options per record
    recs = task.generate(4, seed=1)
    rows = predict_closed_set(task, model, tok, recs)
    for rec, row in zip(recs, rows, strict=True):
        assert set(row["probs"]) == set(rec.options)
        assert sum(row["probs"].values()) == pytest.approx(1.0)
        ll = {c: full_forward_loglik(model, tok, task.prompt(rec), c) for c in rec.options}
        assert row["pred"] == max(ll, key=ll.get)
        assert row["gold"] == rec.answer


def test_scoring_works_with_a_lora_model(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    peft_model = get_peft_model(load_model(model.name_or_path), LoraConfig(r=4, target_modules=["q_proj"])).eval()
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    probs = score_choices(peft_model, tok, ["Is this a UTI? dysuria"], [["yes", "no"]])[0]
    ll = [full_forward_loglik(peft_model, tok, "Is this a UTI? dysuria", c) for c in ("yes", "no")]
    assert probs["yes"] == pytest.approx(1 / (1 + math.exp(ll[1] - ll[0])), abs=1e-5)


def test_batched_generation_equals_single(tiny):
    model, tok = tiny
    prompts = ["short", "a somewhat longer prompt about dysuria and fever", "medium prompt here"]
    batched = generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [generate_answers(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=2) == batched


@pytest.mark.slow
def test_real_default_model_scores_five_items(tmp_path: Path):
    """The embedded SmolLM2-135M-Instruct, built through the CLI into a fresh cache."""
    env = {**os.environ, "CLINALIGN_CACHE": str(tmp_path / "cache"), "PYTHONPATH": "src"}
    res = subprocess.run([sys.executable, "-m", "clinalign.cli", "model", "default"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    path = Path(res.stdout.strip().splitlines()[-1])
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    model, tok = load_model(path).eval(), load_tokenizer(path)
    assert len(tok) > 49000 and tok.chat_template
    task = get_task("uti_classification")
    recs = task.generate(5, seed=0)
    rows = predict_closed_set(task, model, tok, recs)
    again = predict_closed_set(task, model, tok, recs)
    assert [r["probs"] for r in rows] == [r["probs"] for r in again]
    for r in rows:
        assert set(r["probs"]) == {"yes", "no"} and sum(r["probs"].values()) == pytest.approx(1.0)
        assert 0.0 < r["probs"]["yes"] < 1.0
