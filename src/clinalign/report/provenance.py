"""What produced a study's numbers: clinalign's version and commit, the date, the machine and how long
it ran. A committee asked to trust a table needs to know which code computed it and on what; a rerun
that disagrees starts from here."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import clinalign


def cpu_model() -> str:
    """The processor's marketing name (Linux: /proc/cpuinfo), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_names() -> list[str]:
    """The CUDA devices torch sees, by name (empty without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def provenance(run_seconds: float) -> dict[str, Any]:
    """``results["study"]["provenance"]``: version, commit (None outside a git checkout), UTC date, CPU,
    cores, GPUs, torch and Python versions, and the study's wall time in seconds."""
    import torch

    return {"clinalign": clinalign.__version__, "commit": clinalign.git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cores": os.cpu_count(), "gpus": gpu_names(),
            "torch": torch.__version__, "python": platform.python_version(),
            "run_seconds": round(run_seconds, 1)}


def provenance_line(prov: Mapping[str, Any]) -> str:
    """``clinalign 0.1.0 (git 0123abcd4567); run 2025-05-01T10:00:00+00:00, 14.7 min; 2 cores of
    Intel Xeon ..., no GPU; torch 2.13.0``."""
    if not prov:
        return ""
    code = f"clinalign {prov.get('clinalign', '?')}" + (f" (git {prov['commit']})" if prov.get("commit") else "")
    seconds = prov.get("run_seconds")
    when = f"run {prov.get('date', '?')}" + (f", {seconds / 60:.1f} min" if isinstance(seconds, int | float) else "")
    gpus = prov.get("gpus") or []
    machine = f"{prov.get('cores', '?')} cores of {prov.get('cpu', 'unknown CPU')}, " + (
        ", ".join(gpus) if gpus else "no GPU")
    return "; ".join([code, when, machine, f"torch {prov.get('torch', '?')}"])
