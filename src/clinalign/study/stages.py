"""Stage caching: a stage is redone only when its inputs or settings change, and a killed stage
resumes instead of starting over.

Each stage owns a folder. ``.fingerprint`` is written when the stage starts and ``.done`` when it
ends; both hold the hash of the stage's name, settings and its upstream stages' fingerprints. On a
re-run: ``.done`` matches -> skipped; ``.fingerprint`` matches but no ``.done`` -> the stage was
killed, so it is re-entered with ``resume=True`` (trainers continue from their last checkpoint);
anything else -> the folder is cleared and the stage runs fresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinalign.data.io import write_text_atomic


def fingerprint(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class StageRunner:
    root: Path
    log: Callable[[str], None] = print
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, settings: dict[str, Any], fn: Callable[[Path, bool], None]) -> tuple[Path, str]:
        """Run ``fn(out_dir, resume)`` unless cached; returns (out_dir, fingerprint)."""
        out = self.root / name
        fp = fingerprint({"stage": name, "settings": settings})
        done, started = out / ".done", out / ".fingerprint"
        if done.is_file() and done.read_text().strip() == fp:
            self.skipped.append(name)
            self.log(f"[dim]cached[/dim]  {name}")
            return out, fp
        resume = started.is_file() and started.read_text().strip() == fp
        if not resume and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(started, fp)
        self.log(f"[bold]{'resume' if resume else 'run'}[/bold]    {name}")
        t0 = time.perf_counter()
        fn(out, resume)
        self.timings[name] = time.perf_counter() - t0
        write_text_atomic(done, fp)
        self.ran.append(name)
        return out, fp
