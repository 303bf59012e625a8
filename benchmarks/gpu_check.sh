#!/usr/bin/env bash
# The GPU path, measured in one run on one CUDA GPU (written for an H100/H200; not yet run on one):
#   (1)+(2) a Llama-3-8B-shaped model (random init from its config, no download; bf16; LoRA r=16 on
#           every linear layer): clinalign's DPO beside TRL's DPOTrainer (same model, pairs, batch) at
#           prompt lengths 512 and 2048: pairs/s, tokens/s, model FLOPs utilisation, peak GPU memory,
#           and clinalign's speed-up and memory ratio against TRL (benchmarks/vs_trl.py)
#   (3)     the embedded default model's two-task mini study end to end on the GPU, with its wall time
# Not in it yet: an SFT step on the 8B shape (so no DPO/SFT step-time ratio at that size).
#
#   bash benchmarks/gpu_check.sh                 # PEAK_TFLOPS=989 (H100/H200 dense bf16) by default
#   PEAK_TFLOPS=312 bash benchmarks/gpu_check.sh # A100
#
# It stops at once, before building anything, where PyTorch sees no CUDA GPU (exit 3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if ! "$PY" - <<'PYEOF'
import sys
import torch
if not torch.cuda.is_available():
    build = torch.version.cuda or "a CPU-only build"
    sys.exit(f"gpu_check: no CUDA GPU visible to PyTorch {torch.__version__} ({build}); this script measures "
             "the GPU path and needs one. Nothing was run.")
print(f"gpu_check: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
PYEOF
then
  exit 3
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

t0=$(date +%s)
for prompt in 512 2048; do
  echo "== (1)+(2) Llama-3-8B shape, LoRA r=16 all-linear, bf16, prompt $prompt: clinalign DPO vs TRL DPOTrainer"
  "$PY" benchmarks/vs_trl.py --model llama3-8b-shape --device cuda --dtype bfloat16 --lora \
    --shape classification --prompt-tokens "$prompt" --batch-size 4 --steps 4 --peak-tflops "$PEAK_TFLOPS"
done

echo "== (3) the embedded default model's two-task mini study on the GPU"
out=$(mktemp -d)
cat > "$out/study.yaml" <<'YAML'
name: gpu-mini
model: default
device: cuda
dtype: auto
sft: {epochs: 1, batch_size: 8, lr: 2.0e-4, lora: true, lora_layers: 6, max_length: 1024, progress: false}
dpo: {epochs: 1, batch_size: 8, lr: 5.0e-5, beta: 0.1, lora: true, lora_layers: 6, max_length: 1024, progress: false}
eval: {batch_size: 32, n_boot: 1000}
tasks:
  - {id: uti_classification, n: 200}
  - {id: message_triage, n: 200}
YAML
s0=$(date +%s)
"$PY" -m clinalign model default >/dev/null
"$PY" -m clinalign study run "$out/study.yaml" --out "$out/run"
echo "mini study wall time: $(( $(date +%s) - s0 )) s (report: $out/run/report.md)"
echo "gpu_check total: $(( $(date +%s) - t0 )) s"
