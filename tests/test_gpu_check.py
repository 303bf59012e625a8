"""benchmarks/gpu_check.sh measures the GPU path; where there is no GPU it must say so at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    """No GPU visible (this machine, or CUDA_VISIBLE_DEVICES="" on a GPU one): one clear line, exit 3,
    nothing built or run."""
    script = Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "gpu_check: no CUDA GPU visible to PyTorch" in res.stderr and "Nothing was run." in res.stderr
    assert "==" not in res.stdout and list(tmp_path.iterdir()) == []
    assert time.monotonic() - t0 < 60
