"""Stage caching: a stage is redone only when its inputs or settings change, and a killed stage
resumes instead of starting over.

Each stage owns a folder. ``.fingerprint`` is written when the stage starts and ``.done`` when it
ends; both hold the hash of the stage's name, settings (which name its inputs by content: weights,
data, the prompts it renders, the resolved device/dtype; see study/pipeline.py), its upstream stages'
fingerprints and clinalign's version (an upgrade may change what a stage computes). On a
re-run: ``.done`` matches -> skipped; ``.fingerprint`` matches but no ``.done`` -> the stage was
killed, so it is re-entered with ``resume=True`` (trainers continue from their last checkpoint);
anything else -> the folder is cleared and the stage runs fresh.

``.done`` also lists every output file with its size and hash (``checkpoints/`` folders aside: large,
intermediate, and checked by their own manifests). A finished stage whose folder no longer matches
that list, because a file was deleted, edited or added by hand, is recomputed from scratch, not trusted.

A stage may also be found finished in another output folder (``copy_from``: another worker of a shared
search ran it, study/tune.py): when that folder's ``.done`` holds this stage's fingerprint and its files
match the list, they are copied (``checkpoints/`` aside) instead of computing them again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from clinalign import __version__
from clinalign.data.io import write_text_atomic
from clinalign.hashing import file_fingerprint, fingerprint
from clinalign.train import distributed

_SELF = (".done", ".fingerprint")


class Stage(NamedTuple):
    """A finished stage: its folder and the fingerprint of its inputs (what a downstream stage keys on)."""

    dir: Path
    fp: str


def stage_files(out: Path) -> dict[str, list[Any]]:
    """relative path -> [size, hash] of a stage's outputs (``checkpoints/`` and its own markers aside)."""
    files: dict[str, list[Any]] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_dir() or "checkpoints" in rel.parts or rel.as_posix() in _SELF:
            continue
        files[rel.as_posix()] = [p.stat().st_size, file_fingerprint(p)]
    return files


def finished(out: Path, fp: str) -> bool:
    """Whether ``out`` holds a finished stage of fingerprint ``fp``, exactly as that stage wrote it."""
    return (out / ".done").is_file() and _untrusted(out, out / ".done", fp) is None


def _untrusted(out: Path, done: Path, fp: str) -> str | None:
    """Why a finished stage's folder cannot be reused (None: it is exactly what the stage wrote)."""
    try:
        record = json.loads(done.read_text())
        if not isinstance(record, dict):
            raise ValueError
    except ValueError:
        return "finished by an older clinalign, without a list of its files"
    if record.get("fingerprint") != fp:
        return "settings changed"
    want, have = record.get("files") or {}, stage_files(out)
    for name in sorted(set(want) | set(have)):
        if name not in have:
            return f"{name} was deleted"
        if name not in want:
            return f"{name} was added"
        if have[name] != want[name]:
            return f"{name} was changed"
    return None


def stage_fingerprint(name: str, settings: dict[str, Any]) -> str:
    """The fingerprint of stage ``name`` run with ``settings`` (which name its inputs by content)."""
    return fingerprint({"stage": name, "settings": settings, "version": __version__})


def _copy_stage(src: Path, out: Path) -> None:
    """A finished stage's output files (``checkpoints/`` and its markers aside) into ``out``."""
    for rel in stage_files(src):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, out / rel)


@dataclass
class StageRunner:
    root: Path
    log: Callable[[str], None] = print
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, settings: dict[str, Any], fn: Callable[[Path, bool], None],
            every_rank: bool = False, copy_from: Path | None = None) -> Stage:
        """Run ``fn(out_dir, resume)`` unless cached, or copied from ``copy_from`` (the same stage
        finished in another output folder; see the module docstring).

        Under torchrun (study/parallel.py) rank 0 decides, clears and marks the folder; ``fn`` runs on
        every rank when ``every_rank`` (training, sharded evaluation), else on rank 0 alone."""
        from clinalign.study import parallel

        out = self.root / name
        fp = stage_fingerprint(name, settings)
        cached, resume = parallel.from_main(lambda: self._decide(name, out, fp))
        if cached:
            self.skipped.append(name)
            return Stage(out, fp)
        copy = copy_from is not None and Path(copy_from).resolve() != out.resolve() and parallel.from_main(
            lambda: finished(Path(copy_from), fp))
        parallel.on_main(self._start, out, fp, resume and not copy)
        self.log(f"[bold]{'copy' if copy else 'resume' if resume else 'run'}[/bold]    {name}"
                 + (f" from {copy_from}" if copy else ""))
        t0 = time.perf_counter()
        if copy:
            parallel.on_main(_copy_stage, Path(copy_from), out)
        elif every_rank:
            fn(out, resume)
            distributed.barrier()
        else:
            parallel.on_main(fn, out, resume)
        self.timings[name] = time.perf_counter() - t0
        parallel.on_main(lambda: write_text_atomic(
            out / ".done", json.dumps({"fingerprint": fp, "files": stage_files(out)}, indent=1) + "\n"))
        self.ran.append(name)
        return Stage(out, fp)

    def _decide(self, name: str, out: Path, fp: str) -> tuple[bool, bool]:
        """(cached, resume) for this stage's folder; see the module docstring."""
        done, started = out / ".done", out / ".fingerprint"
        resume = started.is_file() and started.read_text().strip() == fp
        if done.is_file():
            problem = _untrusted(out, done, fp)
            if problem is None:
                self.log(f"[dim]cached[/dim]  {name}")
                return True, False
            if problem != "settings changed":
                self.log(f"[yellow]not trusted[/yellow] {name}: {problem} since it finished; recomputing")
            resume = False  # a finished stage's folder that was touched: start it again from nothing
        return False, resume

    @staticmethod
    def _start(out: Path, fp: str, resume: bool) -> None:
        if not resume and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / ".fingerprint", fp)
