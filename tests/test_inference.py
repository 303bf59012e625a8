"""Label scoring equals separately computed log-likelihoods (one plain forward per prompt + answer);
the vocabulary is projected only where answers are predicted; batched generation equals one-by-one."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from clinalign.errors import TaskError
from clinalign.eval.inference import (
    choice_logliks,
    generate_answers,
    predict_closed_set,
    predict_generation,
)
from clinalign.models.loading import load_model, load_tokenizer
from clinalign.synthetic import generate
from clinalign.tasks import get_task
from clinalign.tasks.base import Metric, Record, Task
from clinalign.train.tokenize import answer_ids, prompt_ids
from helpers import count_unparseable, score_choices

PROMPTS = [
    "Is this a UTI? dysuria",
    "Urine dipstick: nitrite positive, leukocyte esterase 2+, burning on urination for three days, "
    "no fever, no flank pain. Does this passage describe a urinary tract infection?",
    "Cough and fever for a week.",
    "Patient message: my pharmacy says the refill for metformin needs a new prescription, can you send it?",
]
CHOICES = ["yes", "no", "not sure"]  # "no" is a prefix of "not sure": the end-of-turn token separates them


class YesNoRecord(Record):
    text: str
    label: str


class FakeYesNo(Task):
    """A minimal closed-set task, so these tests depend only on the Task interface."""

    id = "fake_yes_no"
    description = "yes / no / not sure"
    record_type = YesNoRecord
    choices = tuple(CHOICES)
    max_new_tokens = 5

    def prompt(self, record: Any) -> str:
        return record.text

    def answer(self, record: Any) -> str:
        return record.label

    def parse(self, text: str) -> str | None:
        t = text.strip().lower()
        return next((c for c in sorted(CHOICES, key=len, reverse=True) if t.startswith(c)), None)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return ()

    @property
    def rejected_builders(self) -> dict:
        return {"flip": lambda r, rng: "no" if r.label == "yes" else "yes"}

    def generate(self, n: int, seed: int) -> list[Any]:
        rng = random.Random(seed)
        return [YesNoRecord(id=f"r{i}", text=rng.choice(PROMPTS), label=rng.choice(CHOICES)) for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    """The tiny model with its weight matrices jittered: a fresh random init is nearly uniform and
    generates only newlines; the jitter gives prompt-dependent scores and varied text to compare."""
    model = load_model(tiny_model_dir).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model, load_tokenizer(tiny_model_dir)


def full_forward_loglik(model, tok, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """The plain reference: one forward over prompt + answer, full logits, sum of answer log-probs."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt_ids + answer_ids])).logits[0].float(), dim=-1)
    return sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(answer_ids))


def reference(model, tok, prompt: str, choices) -> list[float]:
    p = prompt_ids(tok, prompt)
    return [full_forward_loglik(model, tok, p, answer_ids(tok, prompt, p, c)) for c in choices]


def test_answers_end_with_the_end_of_turn_token(tiny):
    _, tok = tiny
    p = prompt_ids(tok, PROMPTS[0])
    no, not_sure = (answer_ids(tok, PROMPTS[0], p, c) for c in ("no", "not sure"))
    assert no[-1] == not_sure[-1] == tok.eos_token_id
    assert len(not_sure) > len(no)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_logliks_equal_one_full_forward_per_answer(tiny, batch_size):
    model, tok = tiny
    triage = get_task("message_triage")  # 12 two-line answers of different token lengths
    rec = generate(triage, 1, seed=2)[0]
    prompts = PROMPTS + [triage.prompt(rec)]
    choices = [CHOICES] * len(PROMPTS) + [list(triage.choices)]
    got = choice_logliks(model, tok, prompts, choices, batch_size=batch_size)
    for prompt, opts, ll in zip(prompts, choices, got, strict=True):
        # float32 sums near -90 are resolved to ~1e-5 (one ulp is 7.6e-6): relative tolerance of 1e-6
        assert ll == pytest.approx(reference(model, tok, prompt, opts), rel=1e-6, abs=1e-5)


def test_probabilities_are_the_softmax_of_the_logliks(tiny):
    model, tok = tiny
    probs = score_choices(model, tok, PROMPTS, [CHOICES] * len(PROMPTS), batch_size=2)
    for prompt, p in zip(PROMPTS, probs, strict=True):
        ll = reference(model, tok, prompt, CHOICES)
        z = sum(math.exp(x) for x in ll)
        assert [p[c] for c in CHOICES] == pytest.approx([math.exp(x) / z for x in ll], abs=1e-5)
        assert sum(p.values()) == pytest.approx(1.0)


def test_vocabulary_is_projected_only_at_answer_positions(tiny):
    model, tok = tiny
    rows: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda m, inp, out: rows.append(out.shape[0]))
    try:
        choice_logliks(model, tok, PROMPTS[:2], [CHOICES, CHOICES], batch_size=2)
    finally:
        hook.remove()
    p = prompt_ids(tok, PROMPTS[0])
    answer_tokens = [len(answer_ids(tok, pr, prompt_ids(tok, pr), c)) for pr in PROMPTS[:2] for c in CHOICES]
    # one row per prompt (its last token predicts every first answer token) + one per later answer token
    assert rows == [2 + sum(n - 1 for n in answer_tokens)]
    assert rows[0] < len(p)  # far fewer than the prompt's positions, let alone batch x sequence


def test_closed_set_rows_predict_the_argmax(tiny):
    model, tok = tiny
    task = get_task("clinical_reasoning")  # 4 or 5 lettered options per record
    recs = generate(task, 4, seed=1)
    rows = predict_closed_set(task, model, tok, recs, batch_size=3)
    for rec, row in zip(recs, rows, strict=True):
        opts = task.choices_for(rec)
        assert set(row["probs"]) == set(opts) and sum(row["probs"].values()) == pytest.approx(1.0)
        ll = dict(zip(opts, reference(model, tok, task.prompt(rec), opts), strict=True))
        assert row["pred"] == max(ll, key=ll.get)
        assert row["logliks"] == pytest.approx(ll, abs=1e-4)
        assert (row["id"], row["gold"]) == (rec.id, task.answer(rec))


def test_long_prompts_are_cut_from_the_left(tiny):
    model, tok = tiny
    got = choice_logliks(model, tok, [PROMPTS[1]], [CHOICES], max_prompt_tokens=12)[0]
    p = prompt_ids(tok, PROMPTS[1])
    assert len(p) > 12
    want = [full_forward_loglik(model, tok, p[-12:], answer_ids(tok, PROMPTS[1], p, c)) for c in CHOICES]
    assert got == pytest.approx(want, abs=1e-4)


def test_scoring_works_with_a_lora_model(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    got = choice_logliks(lora, tok, PROMPTS, [CHOICES] * len(PROMPTS), batch_size=3)
    for prompt, ll in zip(PROMPTS, got, strict=True):
        assert ll == pytest.approx(reference(lora, tok, prompt, CHOICES), abs=1e-4)
    with lora.disable_adapter():
        base = choice_logliks(lora, tok, PROMPTS, [CHOICES] * len(PROMPTS))
    assert max(abs(a - b) for x, y in zip(got, base, strict=True) for a, b in zip(x, y, strict=True)) > 1e-3


def test_records_without_choices_are_an_error(tiny):
    model, tok = tiny
    with pytest.raises(TaskError, match="no allowed answers"):
        score_choices(model, tok, ["a prompt"], [[]])


def test_batched_generation_equals_single(tiny):
    model, tok = tiny
    batched = generate_answers(model, tok, PROMPTS, max_new_tokens=6, batch_size=3)
    single = [generate_answers(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert generate_answers(model, tok, PROMPTS, max_new_tokens=6, batch_size=2) == batched
    assert len(set(batched)) == len(PROMPTS) and all(batched)  # varied, non-empty text


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny):
    model, tok = tiny
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate_answers(model, tok, PROMPTS, 8, greedy=False, temperature=1.5, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert generate_answers(model, tok, PROMPTS, 8, greedy=False, temperature=1.5, seed=7) == a
    others = [generate_answers(model, tok, PROMPTS, 8, greedy=False, temperature=1.5, seed=s) for s in (8, 9)]
    assert any(o != a for o in others)


def test_generation_rows_keep_unparseable_answers(tiny):
    model, tok = tiny
    task = FakeYesNo()
    recs = task.generate(5, seed=0)
    rows = predict_closed_set(task, model, tok, recs, batch_size=2, mode="generate")
    assert rows == predict_generation(task, model, tok, recs, batch_size=5, max_new_tokens=task.max_new_tokens)
    assert [r["id"] for r in rows] == [r.id for r in recs]
    for row in rows:
        assert row["pred"] == task.parse(row["text"])
    assert count_unparseable(rows) == sum(r["pred"] is None for r in rows)
    # the random tiny model does not answer yes/no: those rows stay None, never a guess
    assert count_unparseable(rows) >= 1


def test_predict_records_marks_cut_prompts(tiny_model_dir: Path):
    """A prompt over max_prompt_tokens is cut (as in training) and its row says so; shorter ones are not."""
    from clinalign.eval.predict import predict_records

    task = FakeYesNo()
    tok = load_tokenizer(tiny_model_dir)
    records = [YesNoRecord(id=f"r{i}", text=p, label="yes") for i, p in enumerate(PROMPTS)]
    limit = sorted(len(prompt_ids(tok, p)) for p in PROMPTS)[1]  # the two shortest fit exactly
    rows = predict_records(task, tiny_model_dir, records, max_prompt_tokens=limit)
    cut = {r["id"] for r in rows if r.get("prompt_truncated")}
    assert cut == {rec.id for rec in records if len(prompt_ids(tok, rec.text)) > limit}
    assert len(cut) == 2
    assert all("prompt_truncated" not in r for r in predict_records(task, tiny_model_dir, records))
    generated = predict_records(task, tiny_model_dir, records, mode="generate", max_prompt_tokens=limit)
    assert {r["id"] for r in generated if r.get("prompt_truncated")} == cut


def _adapter(base_dir: Path, out: Path, layers: list[int], seed: int) -> Path:
    """A LoRA adapter on ``layers`` with random (non-zero) B, saved like a training run's final/."""
    from peft import LoraConfig, get_peft_model

    from clinalign.models.loading import load_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(base_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                            layers_to_transform=layers))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    model.save_pretrained(out)
    return out


def test_shared_prefix_predictions_equal_separate_passes(tiny_model_dir: Path, tmp_path: Path):
    """Base, SFT and DPO evaluated together (frozen lower layers once) give the rows of three runs."""
    from clinalign.eval.predict import predict_records, predict_systems
    from clinalign.tasks import get_task

    n_layers = json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]
    top = [n_layers - 1]
    models = {"base": tiny_model_dir, "sft": _adapter(tiny_model_dir, tmp_path / "sft", top, 1),
              "dpo": _adapter(tiny_model_dir, tmp_path / "dpo", top, 2)}
    for tid in ("message_triage", "clinical_reasoning"):
        task = get_task(tid)
        recs = generate(task, 7, seed=4)
        together = predict_systems(task, models, recs, batch_size=3)
        for name, path in models.items():
            alone = predict_records(task, path, recs, batch_size=3)
            assert [r["pred"] for r in together[name]] == [r["pred"] for r in alone]
            for a, b in zip(together[name], alone, strict=True):
                assert a["logliks"] == pytest.approx(b["logliks"], abs=1e-4)
        # the three systems really differ, so equality is not the same model three times
        assert together["sft"][0]["logliks"] != pytest.approx(together["base"][0]["logliks"], abs=1e-3)
