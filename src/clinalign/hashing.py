"""Identity by content: the hashes that cached stages and cached reference log-probs are keyed by.

Weights are identified by a hash of their bytes, not by their sizes or a sample of them: retrained
weights of the same shape have the same size, and a fine-tune may change no sampled byte. Hashing
costs about 1 s per GB from the page cache (sha256 with SHA-NI; more from disk), so a file's hash is
remembered in ``$CLINALIGN_CACHE/file-hashes.json`` (default ``~/.cache/clinalign/``, beside the
converted default model) under its (path, size, mtime_ns). The user's cache rather than a study's
folder, because one base model serves many studies and stand-alone ``clinalign train`` runs, and each
would otherwise hash it again; the file holds paths and hashes only, never content.

A hash is remembered only once its file's mtime is 2 s old: a same-size rewrite within one tick of
the file system's clock (coarse on Linux, 2 s on FAT) would keep the mtime, and a fresh file's entry
could then be stale. Small files (< 1 MiB) are hashed every time: faster than looking them up.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: files of a model or adapter directory that decide its outputs: weights, configs, tokenizer, chat template
MODEL_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".txt", ".jinja"})
CACHE_MIN_BYTES = 1 << 20
_SETTLED_NS = 2_000_000_000


def fingerprint(obj: Any) -> str:
    """Short hash of a JSON-able value (settings, upstream fingerprints), independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def hash_cache_path() -> Path:
    from clinalign.models.default import cache_dir

    return cache_dir() / "file-hashes.json"


def _read_cache(path: Path) -> dict[str, list[Any]]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: a cache only saves time
        return {}
    return cache if isinstance(cache, dict) else {}


def _remember(key: str, size: int, mtime_ns: int, digest: str) -> None:
    """Add one entry; entries whose file is gone or has changed since are dropped (they cannot hit again)."""
    from clinalign.data.io import write_text_atomic
    from clinalign.errors import WriteError

    path = hash_cache_path()
    cache = {k: v for k, v in _read_cache(path).items() if _valid(v) and _stat_key(k) == v[:2]}
    cache[key] = [size, mtime_ns, digest]
    try:  # another process may write between our read and write: it loses entries, not correctness
        write_text_atomic(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except WriteError:  # a read-only home: hash again next time
        pass


def _valid(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str)


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def file_fingerprint(path: str | Path) -> str:
    """Hash of a file's bytes, remembered by (path, size, mtime_ns) for large files (module docstring)."""
    p = Path(path).resolve()  # a hub snapshot's symlink and its blob share one entry
    st = p.stat()
    if st.st_size < CACHE_MIN_BYTES:
        return _hash_file(p)
    entry = _read_cache(hash_cache_path()).get(str(p))
    if _valid(entry) and entry[:2] == [st.st_size, st.st_mtime_ns]:
        return str(entry[2])
    digest = _hash_file(p)  # stat taken before: a write during hashing changes the mtime, so no false hit
    if time.time_ns() - st.st_mtime_ns > _SETTLED_NS:
        _remember(str(p), st.st_size, st.st_mtime_ns, digest)
    return digest


def model_fingerprint(model: str | Path | torch.nn.Module) -> str:
    """Content hash of a model or peft adapter directory: its top-level weight, config and tokenizer
    files (sub-folders such as Llama's ``original/`` hold other copies), and for an adapter also its
    base model's, since the adapter's outputs are the base's plus a delta. For a model already in
    memory, a hash of its weights (:func:`_weights_fingerprint`)."""
    from clinalign.models.loading import adapter_base

    if not isinstance(model, str | os.PathLike):
        return _weights_fingerprint(model)
    root = Path(model)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a model directory")
    files = {f.name: file_fingerprint(f) for f in sorted(root.iterdir())
             if f.suffix in MODEL_SUFFIXES and f.is_file()}
    base = adapter_base(root)
    if base is not None and base.is_dir() and base.resolve() != root.resolve():
        files["(base model)"] = model_fingerprint(base)
    return fingerprint(files)


def _weights_fingerprint(model: torch.nn.Module) -> str:
    """Every parameter's name, shape, dtype, sum and a strided sample of its values: cheap for a model
    in memory, and a change of any one weight changes its sum."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        t = p.detach()
        if hasattr(t, "full_tensor"):  # FSDP2 DTensor
            t = t.full_tensor()
        flat = t.reshape(-1).float().cpu()
        step = max(1, flat.numel() // 4096)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{float(flat.double().sum()):.10e}".encode())
        h.update(flat[::step].numpy().tobytes())
    return h.hexdigest()[:16]
