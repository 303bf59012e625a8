"""What the DPO hot path buys: one DPO training step three ways, side by side, same model and data.

  (a) concat + live ref   chosen and rejected as two full sequences (full logits), reference
                          log-probs from a frozen copy of the model at every step (the textbook way)
  (b) concat + cached ref same policy forward; reference log-probs computed once beforehand
  (c) shared + cached ref one packed [prompt | chosen | rejected] sequence per pair, vocabulary
                          projection only at answer positions, cached reference (clinalign's path)
  (d) sft (reference)     one SFT step on the chosen answers, same prompts: the price DPO is compared with

Data is classification-shaped (prompt ~500 tokens, answers 1-3 tokens + end-of-turn). Each
configuration runs in its own process (peak memory is its own), alternating a b c d a b c d ...;
the table shows medians. pairs/s counts training steps only (forward, backward, AdamW step, full
fine-tuning); the one-off cost of the cached reference pass is shown in its own column.
Peak memory: the worker's max RSS on CPU, torch.cuda.max_memory_allocated on GPU.

Usage:
  python benchmarks/dpo_step.py                   # ~33M random-init Llama (49k vocabulary, like SmolLM2)
  python benchmarks/dpo_step.py --model default   # the embedded SmolLM2-135M-Instruct
  python benchmarks/dpo_step.py --model DIR --batch-size 8 --steps 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_model: the tests' random-init Llama
CONFIGS = {
    "a": "concat + live ref",
    "b": "concat + cached ref",
    "c": "shared prompt + cached ref",
    "d": "sft (same prompts)",
}

_FINDINGS = [
    "dysuria",
    "urinary frequency",
    "suprapubic pain",
    "flank pain",
    "fever of 38.{d} C",
    "nausea",
    "hematuria",
    "cloudy urine",
    "confusion",
    "cough",
    "chest pain",
    "shortness of breath",
    "rash",
    "headache",
    "back pain",
    "leukocytosis of 1{d}.{d}",
    "pyuria",
    "nitrite positive urinalysis",
]
_SENTENCES = [
    "A {age}-year-old {sex} presents with {f1} and {f2} for {n} days.",
    "Past history includes hypertension, type 2 diabetes and a hip replacement {n} years ago.",
    "On examination there is {f1}; vital signs show heart rate 9{d}, blood pressure 13{d}/8{d}.",
    "Laboratory results: sodium 13{d}, creatinine 1.{d}, white cell count {n}.{d}, CRP {n}{d}.",
    "The patient denies {f1} but reports {f2} since the start of the week.",
    "Medications: metformin 500 mg twice daily, lisinopril 10 mg daily, atorvastatin 20 mg.",
    "Nursing notes record {f1} overnight and poor oral intake.",
]


def make_pairs(n: int, tokenizer, prompt_tokens: int = 500, seed: int = 0) -> list[dict[str, str]]:
    """Classification-shaped pairs: a clinical passage of ~prompt_tokens tokens, answer yes/no."""
    rng = random.Random(seed)

    def sentence() -> str:
        fill = {
            "age": rng.randint(18, 95),
            "sex": rng.choice(["woman", "man"]),
            "n": rng.randint(1, 9),
            "d": rng.randint(0, 9),
            "f1": rng.choice(_FINDINGS),
            "f2": rng.choice(_FINDINGS),
        }
        return rng.choice(_SENTENCES).format(**fill).format(d=rng.randint(0, 9))

    pairs = []
    for _ in range(n):
        target = prompt_tokens + rng.randint(-40, 40)
        text = "Passage:"
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < target:
            text += " " + sentence()
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:target]
        prompt = (
            tokenizer.decode(ids) + "\nDoes this passage describe a patient with a urinary tract infection?"
        )
        label = rng.choice(["yes", "no"])
        pairs.append({"prompt": prompt, "chosen": label, "rejected": "no" if label == "yes" else "yes"})
    return pairs


def build_random_llama(out: Path, pairs_text: list[str]) -> Path:
    """~33M-parameter random-init Llama: tokenizer trained on the benchmark text, 49,152-row vocabulary
    (SmolLM2's size, so the lm_head costs what it costs in the real model; unused rows are never hit)."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from tiny_model import build_tiny_model

    build_tiny_model(out, pairs_text, vocab_size=4000)
    cfg = AutoConfig.from_pretrained(out)
    cfg.update(
        {
            "vocab_size": 49152,
            "hidden_size": 384,
            "intermediate_size": 1024,
            "num_hidden_layers": 8,
            "num_attention_heads": 6,
            "num_key_value_heads": 6,
        }
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(config: str, model_dir: str, pairs: list[dict], batch_size: int, steps: int) -> dict:
    import torch

    from clinalign.models.loading import load_model, load_tokenizer
    from clinalign.train.losses import Sigmoid
    from clinalign.train.packing import collate_pairs, collate_sft, pair_logps, pair_logps_concat, sft_forward
    from clinalign.train.tokenize import tokenize_pair, tokenize_sft

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, device=device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    pad = tok.pad_token_id
    batches = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)][: steps + 1]  # +1 warm-up
    if config == "d":
        sft = [[tokenize_sft(tok, p["prompt"], p["chosen"], 4096) for p in b] for b in batches]
        data = [{k: v.to(device) for k, v in collate_sft(b, pad).items()} for b in sft]
    else:
        data = [
            collate_pairs(
                [tokenize_pair(tok, p["prompt"], p["chosen"], p["rejected"], 4096) for p in b], pad
            ).to(device)
            for b in batches
        ]
    logps = pair_logps if config == "c" else pair_logps_concat

    ref_seconds = 0.0
    cached: list[tuple] = []
    ref_model = None
    if config == "a":
        ref_model = load_model(model_dir, device=device).eval().requires_grad_(False)
    elif config in ("b", "c"):
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            cached = [logps(model, b)[:2] for b in data]
        model.train()
        ref_seconds = time.perf_counter() - t0

    def step(i: int) -> float:
        b = data[i]
        if config == "d":
            loss = sft_forward(model, b)
        else:
            if config == "a":
                with torch.no_grad():
                    ref = pair_logps_concat(ref_model, b)[:2]
            else:
                ref = cached[i]
            c, r, _ = logps(model, b)
            loss = Sigmoid(beta=0.1)(c, r, *ref).losses.mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step(0)  # warm-up (allocator, kernels); not timed
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    first = None
    for i in range(1, len(data)):
        loss = step(i)
        first = loss if first is None else first
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    timed_pairs = sum(len(b["input_ids"]) if config == "d" else len(b) for b in data[1:])
    return {
        "pairs_per_s": timed_pairs / seconds,
        "peak_mb": peak_memory_mb(),
        "ref_seconds": ref_seconds,
        "first_loss": first,
        "params_m": n_params / 1e6,
        "device": device,
    }


def run_worker(config: str, model_dir: str, data: Path, batch_size: int, steps: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        config,
        "--model-dir",
        model_dir,
        "--data",
        str(data),
        "--batch-size",
        str(batch_size),
        "--steps",
        str(steps),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"config {config} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random30m", help="random30m | default | a model directory")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--worker", choices=sorted(CONFIGS))
    ap.add_argument("--model-dir")
    ap.add_argument("--data")
    a = ap.parse_args()

    if a.worker:
        pairs = json.loads(Path(a.data).read_text())
        print(json.dumps(worker(a.worker, a.model_dir, pairs, a.batch_size, a.steps)))
        return

    from transformers import AutoTokenizer

    from clinalign.models.loading import resolve_model_path

    tmp = Path(tempfile.mkdtemp(prefix="clinalign-dpo-step-"))
    n = a.batch_size * (a.steps + 1)
    if a.model == "random30m":
        from tiny_model import build_tiny_model

        # tokenizer first (trained on passages like the benchmark's), then the model with it
        seed_tok = AutoTokenizer.from_pretrained(
            build_tiny_model(tmp / "seed", ["Passage: fever"] * 4, layers=1)
        )
        texts = [p["prompt"] for p in make_pairs(40, seed_tok, prompt_tokens=400, seed=1)] + ["yes", "no"]
        model_dir = str(build_random_llama(tmp / "random30m", texts))
    else:
        model_dir = resolve_model_path(a.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = tmp / "pairs.json"
    pairs = make_pairs(n, tok, prompt_tokens=a.prompt_tokens)
    data.write_text(json.dumps(pairs))
    from clinalign.models.loading import load_tokenizer
    from clinalign.train.tokenize import tokenize_pair

    t = load_tokenizer(model_dir)
    ex = [tokenize_pair(t, p["prompt"], p["chosen"], p["rejected"], 4096) for p in pairs]
    prompt_len = statistics.mean(len(e.prompt_ids) for e in ex)
    answer_len = statistics.mean(len(e.chosen_ids) + len(e.rejected_ids) for e in ex) / 2

    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    for _ in range(a.repeats):
        for c in CONFIGS:
            runs[c].append(run_worker(c, model_dir, data, a.batch_size, a.steps))
    med = {
        c: {k: statistics.median(r[k] for r in rs) for k in ("pairs_per_s", "peak_mb", "ref_seconds")}
        for c, rs in runs.items()
    }
    r0 = runs["a"][0]
    print(
        f"model: {a.model} ({r0['params_m']:.1f}M params), device {r0['device']}, torch threads "
        f"{os.cpu_count()} cores; batch {a.batch_size}, {a.steps} timed steps, {a.repeats} alternating repeats"
    )
    print(
        f"data: prompt {prompt_len:.0f} tokens (mean, chat template included), answer {answer_len:.1f} tokens "
        "(mean, end-of-turn included)\n"
    )
    print("| config | pairs/s | speed vs (a) | peak MB | memory vs (a) | one-off ref pass s | first loss |")
    print("|---|---|---|---|---|---|---|")
    for c, name in CONFIGS.items():
        m = med[c]
        print(
            f"| ({c}) {name} | {m['pairs_per_s']:.2f} | {m['pairs_per_s'] / med['a']['pairs_per_s']:.2f}x "
            f"| {m['peak_mb']:.0f} | {m['peak_mb'] / med['a']['peak_mb']:.2f}x | {m['ref_seconds']:.1f} "
            f"| {runs[c][0]['first_loss']:.6f} |"
        )
    print(
        f"\nDPO (c) step cost / SFT (d) step cost: {med['d']['pairs_per_s'] / med['c']['pairs_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
