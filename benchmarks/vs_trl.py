"""clinalign's DPO against TRL's DPOTrainer, side by side in one run.

Same model, same pairs, same batch size, same number of steps, same optimizer settings (AdamW, lr 1e-5,
linear decay, no warm-up, no weight decay, grad-norm clip 1.0), beta 0.1, full fine-tuning on CPU
(LoRA r=16 in bf16 for the GPU shape). Three configurations, each in its own process (so peak memory
is that process's alone), alternating A B C A B C ... over ``--repeats``; the table shows medians:

  clinalign       the DPO recipe (train/dpo.py): reference log-probs computed once and cached, each pair
                  packed as one [prompt | chosen | rejected] sequence, vocabulary projected only where an
                  answer token is predicted
  trl-default     TRL 1.16 DPOTrainer with its defaults (reference forward every step)
  trl-precompute  the same with precompute_ref_log_probs=True

Data shapes (clinical prompts are long, answers short):
  classification  prompt ~500 tokens (uti_classification notes), answer 1-3 tokens
  summary         prompt ~1,000 tokens (discharge_summary notes), answer ~150 tokens

Timing is end to end from pairs in memory to the last optimizer step: model load, tokenisation,
reference log-probs (precomputed or on the fly) and the training steps, so precomputation is not
free. Neither side writes checkpoints. Peak memory: the worker's max RSS (CPU) or
torch.cuda.max_memory_allocated (GPU).

"Same objective" check: before timing, one worker trains TRL for one step on the first batch and
compares TRL's logged loss, logps/chosen and logps/rejected with clinalign's on the same pairs (at step
1 the policy is the reference, so the loss is ln 2 on both sides and the log-probs are the real test):
once on TRL's own token ids, once on clinalign's tokenisation (see the note it prints).

Usage:
  python benchmarks/vs_trl.py                         # ~33M random Llama (49k vocabulary), both shapes
  python benchmarks/vs_trl.py --model default         # the embedded SmolLM2-135M-Instruct
  python benchmarks/vs_trl.py --shape classification --steps 8 --repeats 3
  python benchmarks/vs_trl.py --model llama3-8b-shape --device cuda --prompt-tokens 512   # GPU, random init
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_pairs, num_params, peak_memory_mb, resolve_model, run_recipe, run_worker  # noqa: E402

CONFIGS = ("clinalign", "trl-default", "trl-precompute")
LR, BETA, MAX_LENGTH = 1e-5, 0.1, 4096


def _conversational(pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """TRL's conversational format: the chat template applies, as it does in clinalign."""
    return [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]


def _trl_trainer(model_dir: str, pairs: list[dict[str, str]], a: argparse.Namespace, steps: int,
                 precompute: bool, out: str) -> Any:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    bf16 = a.dtype == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    peft_config = None
    if a.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=out, per_device_train_batch_size=a.batch_size, max_steps=steps,
                     logging_steps=1, save_strategy="no", report_to="none", seed=0, beta=BETA,
                     learning_rate=LR, max_length=MAX_LENGTH, precompute_ref_log_probs=precompute,
                     use_cpu=a.device == "cpu", bf16=bf16, disable_tqdm=True)
    ds = Dataset.from_list(_conversational(pairs))
    return DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)


def worker_trl(model_dir: str, pairs: list[dict[str, str]], a: argparse.Namespace, precompute: bool) -> dict:
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = _trl_trainer(model_dir, pairs, a, a.steps, precompute, tmp)
        trainer.train()
        seconds = time.perf_counter() - t0
    first = trainer.state.log_history[0]
    return {"seconds": seconds, "peak_mb": peak_memory_mb(), "first_loss": first["loss"]}


def _settings(a: argparse.Namespace) -> dict[str, Any]:
    """clinalign's config with TRL's defaults, so both runs make the same updates."""
    return {"lora": a.lora, "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lr": LR, "beta": BETA,
            "batch_size": a.batch_size, "max_steps": a.steps, "scheduler": "linear", "warmup_steps": 0,
            "weight_decay": 0.0, "max_grad_norm": 1.0, "max_length": MAX_LENGTH, "precompute_ref": True,
            "dtype": a.dtype, "device": a.device, "log_every": 1}


def worker_clinalign(model_dir: str, pairs: list[dict[str, str]], a: argparse.Namespace) -> dict:
    r = run_recipe("dpo", model_dir, pairs, _settings(a))
    if r["steps"] != a.steps:
        raise SystemExit(f"clinalign ran {r['steps']} steps, expected {a.steps}")
    return {"seconds": r["seconds"], "peak_mb": peak_memory_mb(), "first_loss": r["first"]["loss"],
            "ref_seconds": r["ref_seconds"]}


def worker_check(model_dir: str, pairs: list[dict[str, str]], a: argparse.Namespace) -> dict:
    """One TRL step on one batch vs clinalign's log-probs of the same pairs with the initial weights."""
    import torch

    from clinalign.models.loading import load_model, load_tokenizer
    from clinalign.train.losses import Sigmoid
    from clinalign.train.packing import collate_pairs, pair_logps
    from clinalign.train.tokenize import PairExample, tokenize_pair

    batch = pairs[: a.batch_size]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trl_trainer(model_dir, batch, a, 1, False, tmp)
        trl_rows = [trainer.train_dataset[i] for i in range(len(batch))]
        trainer.train()
    trl = trainer.state.log_history[0]
    del trainer

    model = load_model(model_dir, dtype=a.dtype, device=a.device).eval()  # the initial weights again
    tok = load_tokenizer(model_dir)
    own = [tokenize_pair(tok, _conversational([p])[0]["prompt"], p["chosen"], p["rejected"], MAX_LENGTH)
           for p in batch]
    theirs = [PairExample(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in trl_rows]
    out: dict[str, Any] = {"trl_loss": trl["loss"], "trl_logps_chosen": trl["logps/chosen"],
                           "trl_logps_rejected": trl["logps/rejected"]}
    for name, examples in (("trl_ids", theirs), ("own_ids", own)):
        with torch.no_grad():
            b = collate_pairs(examples, tok.pad_token_id).to(model.device)
            c, r, _ = pair_logps(model, b)
            loss = Sigmoid(beta=BETA)(c, r, c, r).losses.mean()
        out[name] = {"loss": float(loss), "logps_chosen": float(c.float().mean()),
                     "logps_rejected": float(r.float().mean()),
                     "answer_tokens": [len(e.chosen_ids) for e in examples]}
    out["trl_answer_tail"] = tok.decode(trl_rows[0]["chosen_ids"][-2:])
    out["own_answer_tail"] = tok.decode(own[0].chosen_ids[-2:])
    return out


def _worker_args(a: argparse.Namespace, config: str, model_dir: str, data: Path) -> list[str]:
    return ["--worker", config, "--model-dir", model_dir, "--data", str(data), "--batch-size", str(a.batch_size),
            "--steps", str(a.steps), "--dtype", a.dtype, "--device", a.device] + (["--lora"] if a.lora else [])


def _print_check(c: dict[str, Any]) -> None:
    print("\nSame objective (first batch, initial weights; TRL's logged step-1 values vs clinalign):")
    print("| | loss | logps/chosen | logps/rejected | answer tokens (chosen) |")
    print("|---|---|---|---|---|")
    print(f"| TRL DPOTrainer (logged) | {c['trl_loss']:.6f} | {c['trl_logps_chosen']:.6f} "
          f"| {c['trl_logps_rejected']:.6f} | {c['trl_ids']['answer_tokens']} |")
    for key, label in (("trl_ids", "clinalign on TRL's token ids"), ("own_ids", "clinalign, own tokenisation")):
        r = c[key]
        print(f"| {label} | {r['loss']:.6f} | {r['logps_chosen']:.6f} | {r['logps_rejected']:.6f} "
              f"| {r['answer_tokens']} |")
    d = max(abs(c["trl_ids"]["logps_chosen"] - c["trl_logps_chosen"]),
            abs(c["trl_ids"]["logps_rejected"] - c["trl_logps_rejected"]),
            abs(c["trl_ids"]["loss"] - c["trl_loss"]))
    print(f"max |difference| on TRL's token ids: {d:.2e} ({'OK' if d <= 1e-4 else 'ABOVE'} 1e-4)")
    print(f"answer ends: TRL {c['trl_answer_tail']!r}, clinalign {c['own_answer_tail']!r} (TRL also trains on "
          "the newline the chat template puts after the end-of-turn token; clinalign stops at end-of-turn)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random30m", help="random30m | default | llama3-8b-shape | a model dir")
    ap.add_argument("--shape", default="both", choices=["classification", "summary", "both"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, help="override the shape's prompt length (e.g. 512, 2048)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    ap.add_argument("--lora", action="store_true", help="LoRA r=16 on every linear layer (default: full)")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense peak, for model FLOPs utilisation")
    ap.add_argument("--worker", choices=[*CONFIGS, "check"])
    ap.add_argument("--model-dir")
    ap.add_argument("--data")
    a = ap.parse_args()
    if a.model == "llama3-8b-shape":
        a.lora = True
        a.dtype = a.dtype or "bfloat16"
    a.dtype = a.dtype or "float32"

    if a.worker:
        pairs = json.loads(Path(a.data).read_text())
        if a.worker == "clinalign":
            out = worker_clinalign(a.model_dir, pairs, a)
        elif a.worker == "check":
            out = worker_check(a.model_dir, pairs, a)
        else:
            out = worker_trl(a.model_dir, pairs, a, a.worker == "trl-precompute")
        print(json.dumps(out))
        return

    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="clinalign-vs-trl-"))
    model_dir = resolve_model(a.model, tmp)
    tok = AutoTokenizer.from_pretrained(model_dir)
    n_params = num_params(model_dir)
    print(f"model: {a.model} ({n_params / 1e6:.1f}M parameters, vocabulary {len(tok)}); "
          f"{'LoRA r=16' if a.lora else 'full fine-tuning'}, {a.dtype}, {a.device}; batch {a.batch_size} pairs; "
          f"{a.steps} steps; {a.repeats} alternating repeats")
    shapes = ["classification", "summary"] if a.shape == "both" else [a.shape]
    for shape in shapes:
        pairs = make_pairs(shape, a.batch_size * a.steps, tok, prompt_tokens=a.prompt_tokens)
        data = tmp / f"{shape}.json"
        data.write_text(json.dumps(pairs))
        tokens_per_pair = statistics.mean(
            len(tok(p["prompt"])["input_ids"]) + len(tok(p["chosen"])["input_ids"])
            + len(tok(p["rejected"])["input_ids"]) for p in pairs)
        print(f"\n## {shape}-shaped ({len(pairs)} pairs, ~{tokens_per_pair:.0f} text tokens per pair)")
        if shape == shapes[0]:
            _print_check(run_worker(__file__, _worker_args(a, "check", model_dir, data)))
        runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
        for _ in range(a.repeats):
            for c in CONFIGS:
                runs[c].append(run_worker(__file__, _worker_args(a, c, model_dir, data)))
        n = a.steps * a.batch_size
        med = {c: {"pairs_per_s": statistics.median(n / r["seconds"] for r in rs),
                   "peak_mb": statistics.median(r["peak_mb"] for r in rs)} for c, rs in runs.items()}
        print("\n| config | pairs/s | peak MB | first-step loss | clinalign speed-up | clinalign memory ratio |")
        print("|---|---|---|---|---|---|")
        for c in CONFIGS:
            speed = med["clinalign"]["pairs_per_s"] / med[c]["pairs_per_s"]
            mem = med["clinalign"]["peak_mb"] / med[c]["peak_mb"]
            print(f"| {c} | {med[c]['pairs_per_s']:.3f} | {med[c]['peak_mb']:.0f} | {runs[c][0]['first_loss']:.6f} "
                  f"| {speed:.2f}x | {mem:.2f}x |")
        ref = statistics.median(r["ref_seconds"] for r in runs["clinalign"])
        print(f"(speed-up = clinalign pairs/s / the config's; memory ratio = clinalign peak / the config's; "
              f"clinalign's one-off reference pass: {ref:.1f} s of its run; all runs (s): "
              + "; ".join(f"{c} " + ", ".join(f"{r['seconds']:.1f}" for r in rs) for c, rs in runs.items()) + ")")
        tok_s = med["clinalign"]["pairs_per_s"] * tokens_per_pair
        line = f"clinalign: {tok_s:.0f} tokens/s end to end"
        if a.peak_tflops:
            mfu = 6 * n_params * tok_s / (a.peak_tflops * 1e12)  # 6N per token: the usual dense estimate
            line += f", model FLOPs utilisation ~{100 * mfu:.1f}% (6N per token, peak {a.peak_tflops} TFLOPS)"
        print(line)


if __name__ == "__main__":
    main()
