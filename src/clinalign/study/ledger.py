"""The test-split ledger: every configuration a test split has been scored under, kept across runs.

A test split answers honestly only the first time it is looked at. Each further configuration scored
on it (another learning rate, another epoch count, tried because the last one disappointed) spends it
a little: the best of N looks is optimistic by an amount the p-values do not include. The ledger makes
that count visible. A test split is identified by the content of its items (`split_hash`), not by a
file name or an output folder, so a re-run into a new folder, or a copy of the data elsewhere, still
finds the same record; a configuration by its fingerprint (the caller's: the content fingerprints of
what was trained and how). Scoring the same configuration again (a resumed run, a re-run into a new
folder) is a use on record but not a new configuration: `count_configurations` counts distinct
fingerprints.

Where: ``$CLINALIGN_CACHE/test-ledger/<test hash>/`` (default ``~/.cache/clinalign/``; see
``models.default.cache_dir``), the user's cache rather than a study folder, so it outlives any one
output folder. How: one small JSON file per use, written atomically (temporary file + rename,
``data.io.write_text_atomic``) under a name no other writer can choose (time in ns, process id and a
random suffix). Two processes recording at once never write the same file, so no lock is needed and
nothing is lost; unlike advisory file locks, this also holds on network file systems. Reading lists
the folder. The files hold hashes, names, times and folder paths, never record text.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from clinalign.data.io import write_text_atomic
from clinalign.errors import DataError
from clinalign.hashing import fingerprint
from clinalign.models.default import cache_dir

LEDGER = "test-ledger"
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


class LedgerEntry(BaseModel):
    """One scoring of a test split under one configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test: str  # content hash of the test items (`split_hash`)
    config: str  # fingerprint of the configuration scored
    study: str
    task: str
    time: str  # when, ISO 8601 in UTC
    out: str  # the run's output folder


def ledger_dir() -> Path:
    return cache_dir() / LEDGER


def split_hash(records: Sequence[Any]) -> str:
    """Content hash of a test split: the same items give the same hash in any order and under any file
    name. Records are pydantic models (task records) or JSON-able dicts."""
    items = sorted(fingerprint(r.model_dump(mode="json") if isinstance(r, BaseModel) else r) for r in records)
    return fingerprint(items)


def _checked(name: str, value: str) -> str:
    """A hash becomes a folder name: nothing that could leave the ledger's folder."""
    if not _KEY.fullmatch(value):
        raise ValueError(f"{name} {value!r}: expected a hash (letters, digits, '-' or '_')")
    return value


def record_use(test: str, config: str, *, study: str, task: str, out: str | Path) -> list[LedgerEntry]:
    """Put on record that test split ``test`` was scored under configuration ``config``; returns every
    use of that split so far, this one included, oldest first."""
    folder = ledger_dir() / _checked("test split hash", test)
    use = LedgerEntry(test=test, config=_checked("configuration fingerprint", config), study=study, task=task,
                  time=datetime.now(timezone.utc).isoformat(timespec="seconds"), out=str(Path(out).resolve()))
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
    write_text_atomic(folder / name, use.model_dump_json() + "\n")
    return read_uses(test)


def read_uses(test: str) -> list[LedgerEntry]:
    """Every recorded use of test split ``test``, oldest first; none for a split never scored. An
    entry that cannot be read is an error naming its file: a ledger that skipped it would undercount."""
    folder = ledger_dir() / _checked("test split hash", test)
    uses = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            uses.append(LedgerEntry.model_validate(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, ValidationError) as e:
            reason = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise DataError([f"{path}: not a test-ledger entry ({reason}); restore or remove it knowingly, "
                             "it records a use of a test split"]) from None
    return uses


def configurations(uses: Sequence[LedgerEntry]) -> list[str]:
    """The distinct configuration fingerprints among ``uses``, in order of first use."""
    return list(dict.fromkeys(u.config for u in uses))


def count_configurations(test: str) -> int:
    """Under how many distinct configurations test split ``test`` has been scored."""
    return len(configurations(read_uses(test)))
