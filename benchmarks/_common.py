"""What the side-by-side benchmarks share: task-shaped data, the models, peak memory, worker processes,
and clinalign's side run through the real SFT/DPO recipes (``train/sft.py``, ``train/dpo.py``).

Every configuration runs in its own process so that peak memory is that configuration's alone; the
parent alternates configurations (A B C A B C ...) so that a noisy neighbour on the machine hurts
each of them alike.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]

#: random-init model shapes: ~33M parameters with SmolLM2's 49,152-row vocabulary and tokenizer, and the
#: Llama-3-8B shape (GPU only: 8B parameters, 128,256-row vocabulary)
SHAPES: dict[str, dict[str, Any]] = {
    "random30m": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 8,
                  "num_attention_heads": 6, "num_key_value_heads": 6},
    "llama3-8b-shape": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                        "rope_theta": 500000.0},
}


# ---------------------------------------------------------------- data


def _to_length(text: str, tokenizer: Any, n: int) -> str:
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < n:
        text = text + "\n" + text
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n])


def make_pairs(shape: str, n: int, tokenizer: Any, seed: int = 0, prompt_tokens: int | None = None
               ) -> list[dict[str, str]]:
    """Task-shaped preference pairs from the bundled generators.

    classification: uti_classification notes lengthened with further notes to ~500 prompt tokens, the
    gold label vs the task's default rejected label (1-3 tokens); summary: discharge_summary notes to
    ~1,000 prompt tokens, gold summary vs a rejected one, each cut/extended to ~150 tokens.
    """
    from clinalign.synthetic import generate
    from clinalign.tasks import get_task

    rng = random.Random(seed)
    name, default_len = ("uti_classification", 500) if shape == "classification" else ("discharge_summary", 1000)
    target = prompt_tokens or default_len
    task = get_task(name)
    records = generate(task, n * 4, seed=seed)
    build = task.rejected_builders[task.default_strategy]
    pairs = []
    for i in range(n):
        rec = records[i]
        head = task.prompt(rec)  # the instruction stays last, right before the answer
        budget = target - len(tokenizer(head, add_special_tokens=False)["input_ids"])
        history, j = "", n
        while budget > 0 and len(tokenizer(history, add_special_tokens=False)["input_ids"]) < budget:
            history += "\n\n" + task.prompt(records[j % len(records)]).split("\n", 1)[-1]
            j += 1
        if history:
            history = tokenizer.decode(tokenizer(history, add_special_tokens=False)["input_ids"][:budget])
        prompt = f"Earlier notes:{history}\n\n{head}" if history else head
        chosen, rejected = task.answer(rec), build(rec, rng)
        if shape == "summary":
            chosen, rejected = _to_length(chosen, tokenizer, 150), _to_length(rejected, tokenizer, 150)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


# ---------------------------------------------------------------- models


def build_random_llama(out: Path, tokenizer_dir: str | Path, shape: str = "random30m") -> Path:
    """A random-init Llama of the named shape with a real tokenizer (never a download)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    spec = dict(SHAPES[shape])
    vocab = spec.pop("vocab_size", len(tok))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=max(vocab, len(tok)), max_position_embeddings=4096,
                      tie_word_embeddings=shape == "random30m", eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, **spec)
    if shape == "llama3-8b-shape":  # 8B parameters: build straight in bf16 on the meta device, then save
        with torch.device("meta"):
            model = LlamaForCausalLM(cfg)
        model = model.to_empty(device="cpu").to(torch.bfloat16)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02)
    else:
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def resolve_model(name: str, tmp: Path) -> str:
    """random30m | default (the embedded SmolLM2-135M-Instruct) | llama3-8b-shape | a model directory."""
    from clinalign.models.default import default_model_dir

    if name == "default":
        return str(default_model_dir())
    if name in SHAPES:
        return str(build_random_llama(tmp / name, default_model_dir(), name))
    return name


def num_params(model_dir: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in m.parameters())


def peak_memory_mb() -> float:
    """Max RSS of this process (CPU) or the CUDA allocator's peak (GPU)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers


def run_worker(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh process; its last stdout line is a JSON result."""
    res = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"worker {args[:2]} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_recipe(stage: str, model_dir: str, rows: list[dict[str, str]], settings: dict[str, Any]
               ) -> dict[str, Any]:
    """One clinalign training run through the real recipe (``dpo.run`` / ``sft.run``), timed end to end
    (tokenisation, model load, reference pass, steps). Checkpoint and final-model writes are skipped, as
    TRL runs with ``save_strategy="no"``: the benchmark times training, not disk. Returns the seconds
    in all, in the one-off reference pass (DPO) and in the training loop, the part of those two spent in
    the frozen-prefix cache (its rows computed once, looked up after), the first logged metrics row and
    the number of steps run."""
    from clinalign.models.layers import PrefixCache
    from clinalign.train import checkpoint, dpo, loop, sft
    from clinalign.train.config import build_config

    spent = {"ref": 0.0, "loop": 0.0, "prefix": 0.0}

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t

        return wrapper

    dpo.cached_reference_logps = timed("ref", dpo.cached_reference_logps)
    loop.train = timed("loop", loop.train)
    PrefixCache.hidden = timed("prefix", PrefixCache.hidden)  # when prefix_cache is on: inside ref and loop
    checkpoint.save = lambda *a, **kw: None
    checkpoint.save_final = lambda out, *a, **kw: Path(out) / kw.get("name", "final")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = build_config(None, values={**settings, "stage": stage, "model": model_dir, "data": str(data),
                                         "out": str(Path(tmp) / "run"), "progress": False})
        recipe: Callable[[Any], Path] = dpo.run if stage == "dpo" else sft.run
        t0 = time.perf_counter()
        recipe(cfg)
        seconds = time.perf_counter() - t0
        metrics = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "ref_seconds": spent["ref"], "loop_seconds": spent["loop"],
            "prefix_seconds": spent["prefix"], "first": metrics[0], "steps": len(metrics)}
