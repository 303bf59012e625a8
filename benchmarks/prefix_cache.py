"""What the frozen-prefix cache saves: the same LoRA-on-the-last-layers runs with and without it.

SFT for ``--epochs`` epochs and DPO for one, on the same classification-shaped examples, through the
real recipes, each run in its own process, alternating off/on; medians over ``--repeats``. Times are
end to end minus imports (model load, tokenisation, the reference pass, the steps; with the cache on,
its one pass per example falls inside the first pass over each example). The first-step loss must be equal either way (the cache changes the cost, not the numbers).

Usage:
  python benchmarks/prefix_cache.py                      # default model, LoRA on the last 6 layers
  python benchmarks/prefix_cache.py --examples 32 --epochs 3
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


def worker(stage: str, cache: bool, model_dir: str, pairs: list[dict[str, str]], a: argparse.Namespace) -> dict[str, Any]:
    rows = pairs if stage == "dpo" else [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    settings = {"lora": True, "lora_layers": a.lora_layers, "prefix_cache": cache, "lora_dropout": 0.0,
                "lr": 1e-4, "batch_size": a.batch_size, "epochs": a.epochs if stage == "sft" else 1,
                "max_length": 4096, "device": "cpu", "seed": 0}
    r = run_recipe(stage, model_dir, rows, settings)
    return {"seconds": r["seconds"], "loss": r["first"]["loss"], "peak_mb": peak_memory_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default | random30m | a model directory")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2, help="SFT epochs (DPO runs one)")
    ap.add_argument("--lora-layers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--worker", choices=["sft", "dpo"])
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--model-dir")
    ap.add_argument("--data")
    a = ap.parse_args()

    if a.worker:
        pairs = json.loads(Path(a.data).read_text())
        print(json.dumps(worker(a.worker, a.cache, a.model_dir, pairs, a)))
        return

    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="clinalign-prefix-"))
    model_dir = resolve_model(a.model, tmp)
    pairs = make_pairs("classification", a.examples, AutoTokenizer.from_pretrained(model_dir))
    data = tmp / "pairs.json"
    data.write_text(json.dumps(pairs))
    print(f"model: {a.model} ({num_params(model_dir) / 1e6:.1f}M parameters), LoRA on the last {a.lora_layers} "
          f"layers; {a.examples} classification-shaped examples, batch {a.batch_size}; SFT {a.epochs} epochs, "
          f"DPO 1; {a.repeats} alternating repeats")
    runs: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for _ in range(a.repeats):
        for stage in ("sft", "dpo"):
            for cache in (False, True):
                args = ["--worker", stage, "--model-dir", model_dir, "--data", str(data), "--batch-size",
                        str(a.batch_size), "--epochs", str(a.epochs), "--lora-layers", str(a.lora_layers)]
                runs.setdefault((stage, cache), []).append(run_worker(__file__, args + (["--cache"] if cache else [])))

    print("\n| recipe | prefix cache | seconds | speed-up | peak MB | first-step loss |")
    print("|---|---|---|---|---|---|")
    for stage in ("sft", "dpo"):
        off = statistics.median(r["seconds"] for r in runs[(stage, False)])
        for cache in (False, True):
            rs = runs[(stage, cache)]
            sec = statistics.median(r["seconds"] for r in rs)
            print(f"| {stage} | {'on' if cache else 'off'} | {sec:.1f} | {off / sec:.2f}x "
                  f"| {statistics.median(r['peak_mb'] for r in rs):.0f} | {rs[0]['loss']:.6f} |")
    print("all runs (s): " + "; ".join(f"{s} {'on' if c else 'off'} " + ", ".join(f"{r['seconds']:.1f}" for r in rs)
                                       for (s, c), rs in runs.items()))


if __name__ == "__main__":
    main()
