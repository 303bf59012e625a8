"""DPO for the price of SFT? One DPO epoch against one SFT epoch on the same examples.

Same model, same classification-shaped examples (prompt ~500 tokens, answer 1-3 tokens), same batch
size, same hardware, both through clinalign's recipes (train/sft.py with prompt -> gold answer,
train/dpo.py with prompt -> gold vs rejected answer). Each run is its own process, alternating
sft dpo sft dpo ...; medians over ``--repeats``.

The DPO epoch's price includes its one-off reference pass (one no-grad forward per pair, cached on
disk, so a second run with the same model and data does not pay it again): the ratio is

    (DPO reference pass + DPO training loop) / SFT training loop

(with ``--prefix-cache`` the frozen layers' one pass per example falls inside the reference pass and
the loop; the table shows its share), with the end-to-end ratio (model load, tokenisation and imports included on both sides) beside it.
The target (issue 6) is <= 1.3x.

Usage:
  python benchmarks/dpo_vs_sft.py                       # ~33M random Llama, full fine-tuning
  python benchmarks/dpo_vs_sft.py --model default --lora --examples 32
  python benchmarks/dpo_vs_sft.py --model default --lora --lora-layers 6 --prefix-cache --examples 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_pairs, num_params, peak_memory_mb, resolve_model, run_recipe, run_worker  # noqa: E402


def _settings(a: argparse.Namespace) -> dict[str, Any]:
    return {"lora": a.lora, "lora_layers": a.lora_layers, "prefix_cache": a.prefix_cache, "lr": 1e-5, "batch_size": a.batch_size, "epochs": 1, "scheduler": "linear",
            "max_grad_norm": 1.0, "max_length": 4096, "dtype": a.dtype, "device": a.device, "seed": 0}


def worker(stage: str, model_dir: str, pairs: list[dict[str, str]], a: argparse.Namespace) -> dict[str, Any]:
    rows = pairs if stage == "dpo" else [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    r = run_recipe(stage, model_dir, rows, _settings(a))
    return {"seconds": r["seconds"], "ref_seconds": r["ref_seconds"], "loop_seconds": r["loop_seconds"],
            "prefix_seconds": r["prefix_seconds"], "steps": r["steps"], "peak_mb": peak_memory_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random30m", help="random30m | default | a model directory")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lora", action="store_true", help="LoRA (the recipe's default r=16) instead of full")
    ap.add_argument("--lora-layers", type=int, help="LoRA on the last N decoder layers only")
    ap.add_argument("--prefix-cache", action="store_true", help="run the frozen leading layers once per example")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", choices=["sft", "dpo"])
    ap.add_argument("--model-dir")
    ap.add_argument("--data")
    a = ap.parse_args()

    if a.worker:
        print(json.dumps(worker(a.worker, a.model_dir, json.loads(Path(a.data).read_text()), a)))
        return

    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="clinalign-dpo-vs-sft-"))
    model_dir = resolve_model(a.model, tmp)
    tok = AutoTokenizer.from_pretrained(model_dir)
    pairs = make_pairs("classification", a.examples, tok)
    data = tmp / "pairs.json"
    data.write_text(json.dumps(pairs))
    print(f"model: {a.model} ({num_params(model_dir) / 1e6:.1f}M parameters); "
          f"{'LoRA' if a.lora else 'full fine-tuning'}, {a.dtype}, {a.device}; {a.examples} classification-shaped "
          f"examples, batch {a.batch_size}, one epoch; {a.repeats} alternating repeats")
    runs: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": []}
    for _ in range(a.repeats):
        for stage in ("sft", "dpo"):
            args = ["--worker", stage, "--model-dir", model_dir, "--data", str(data), "--batch-size",
                    str(a.batch_size), "--dtype", a.dtype, "--device", a.device] + (["--lora"] if a.lora else [])
            args += (["--lora-layers", str(a.lora_layers)] if a.lora_layers else []) + (
                ["--prefix-cache"] if a.prefix_cache else [])
            runs[stage].append(run_worker(__file__, args))

    def med(stage: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[stage])

    sft_epoch = statistics.median(r["loop_seconds"] for r in runs["sft"])
    dpo_epoch = statistics.median(r["ref_seconds"] + r["loop_seconds"] for r in runs["dpo"])
    print("\n| recipe | steps | of which prefix cache s | reference pass s | training loop s | epoch s | end to end s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in ("sft", "dpo"):
        epoch = sft_epoch if stage == "sft" else dpo_epoch
        print(f"| {stage} | {runs[stage][0]['steps']} | {med(stage, 'prefix_seconds'):.1f} | {med(stage, 'ref_seconds'):.1f} "
              f"| {med(stage, 'loop_seconds'):.1f} | {epoch:.1f} | {med(stage, 'seconds'):.1f} | {med(stage, 'peak_mb'):.0f} |")
    print(f"\nDPO epoch / SFT epoch: {dpo_epoch / sft_epoch:.2f}x (target <= 1.3x); training loops alone: "
          f"{med('dpo', 'loop_seconds') / med('sft', 'loop_seconds'):.2f}x; end to end: {med('dpo', 'seconds') / med('sft', 'seconds'):.2f}x")
    print("all runs (s, end to end): " + "; ".join(
        f"{s} " + ", ".join(f"{r['seconds']:.1f}" for r in rs) for s, rs in runs.items()))


if __name__ == "__main__":
    main()
