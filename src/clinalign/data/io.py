"""Reading and writing record files: JSONL, CSV and Parquet in, JSONL out, always atomically.

Every problem in a user's file is reported as ``FILE:LINE: field: what is wrong`` so it can be
fixed without guessing (for Parquet, LINE is the 1-based row, as a warehouse viewer shows it);
nothing is written when input is bad. CSV cells holding lists or objects (options, facts) are JSON
text; Parquet list and struct columns arrive as lists and dicts, and a null cell counts as absent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clinalign.errors import ConfigError, DataError, WriteError

MAX_PROBLEMS = 200  # stop collecting after this many; the first ones are what a user fixes first


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    A crash or an exception leaves either the old file or none, never a half-written one. A write that
    fails (disk full, no permission) is a WriteError naming ``path``; the old file is left as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        kept = "the previous version is untouched" if path.is_file() else "nothing was written there"
        raise WriteError(f"could not write {path}: {e.strerror or e}; {kept}") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def check_output_file(path: str | Path) -> Path:
    """An output file named on the command line: not a directory, and in a folder that exists (a typo in
    the folder must not silently create a new tree). Checked before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: folder {path.parent} does not exist; create it first")
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_jsonl(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write rows as JSONL atomically; returns the number of rows."""
    n = 0
    buf = io.StringIO()
    for row in rows:
        obj = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
        buf.write(json.dumps(obj, ensure_ascii=False) + "\n")
        n += 1
    write_text_atomic(path, buf.getvalue())
    return n


def write_json(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "record"


def _decode_lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield (line number, text or None, decode error or None) for each line of a file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                yield lineno, None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"


def read_raw_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line, row dict or None, problem or None) for a .jsonl, .csv or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError([f"{path}: file not found"])
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        yield from _read_parquet(path)
    else:
        yield from _read_jsonl(path)


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Rows of a Parquet file in batches (a warehouse export can be larger than memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
        row = 0
        for batch in batches:
            for rec in batch.to_pylist(maps_as_pydicts="strict"):
                row += 1
                yield row, _drop_nulls(rec), None
    except (pa.ArrowException, OSError) as e:
        raise DataError([f"{path}: not a readable Parquet file ({e})".replace("\n", " ")]) from None


def _drop_nulls(obj: Any) -> Any:
    """A struct column holds every key any row has, null where a row lacks it: drop those keys."""
    if isinstance(obj, dict):
        return {k: _drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_nulls(v) for v in obj]
    return obj


def _json_error(e: json.JSONDecodeError, line: str) -> str:
    """Where the parser gave up, not where the value it was reading began: an unterminated string is
    reported by json at its opening quote, but the line is broken at its end (often a truncated export)."""
    end = len(line.rstrip()) + 1
    if e.msg.startswith("Unterminated string"):
        return f"invalid JSON (string opened at column {e.colno} is not closed; the line ends at column {end})"
    if e.pos >= end - 1:
        return f"invalid JSON ({e.msg} at column {e.colno}, the end of the line: is the line truncated?)"
    return f"invalid JSON ({e.msg} at column {e.colno})"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for lineno, text, err in _decode_lines(path):
        if err:
            yield lineno, None, f"record: {err}"
            continue
        assert text is not None
        if not text.strip():
            continue
        text = text.rstrip("\r\n")  # with its newline, a line cut short fails on "line 2, column 1"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, None, f"record: {_json_error(e, text)}"
            continue
        if not isinstance(obj, dict):
            yield lineno, None, f"record: expected a JSON object, got {type(obj).__name__}"
            continue
        yield lineno, obj, None


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        yield line, None, f"record: not valid UTF-8 (byte 0x{raw[e.start]:02x})"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            lineno = reader.line_num
            if None in row:
                yield lineno, None, "record: more cells than header columns"
                continue
            yield lineno, {k: _csv_cell(v) for k, v in row.items() if v is not None}, None
    except csv.Error as e:
        yield reader.line_num, None, f"record: malformed CSV ({e})"


def _csv_cell(value: str) -> Any:
    """CSV cells are strings; a cell that is a JSON list/object (options, facts) is parsed."""
    s = value.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return value
    return value


def read_records(path: str | Path, record_type: type[BaseModel], check_ids: bool = True) -> list[Any]:
    """Read and validate every record; raise DataError listing every problem, file:line: field."""
    return [rec for _, rec in read_numbered(path, record_type, check_ids)]


def read_numbered(path: str | Path, record_type: type[BaseModel], check_ids: bool = True
                  ) -> list[tuple[int, Any]]:
    """(line, record) for every record, validated; DataError listing every problem, file:line: field."""
    path = Path(path)
    records: list[tuple[int, Any]] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for lineno, row, problem in read_raw_rows(path):
        if problem:
            problems.append(f"{path}:{lineno}: {problem}")
        else:
            assert row is not None
            try:
                rec = record_type.model_validate(row)
            except ValidationError as e:
                problems += validation_problems(f"{path}:{lineno}", e)
            else:
                rid = getattr(rec, "id", None)
                if check_ids and rid is not None and rid in seen:
                    problems.append(f"{path}:{lineno}: id: duplicate id {rid!r} (first on line {seen[rid]})")
                else:
                    if rid is not None:
                        seen[rid] = lineno
                    records.append((lineno, rec))
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise DataError(problems)
    if not records:
        raise DataError([f"{path}: no records"])
    return records


def read_jsonl(path: str | Path, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every object of a JSONL file, unvalidated (our own outputs: predictions, metrics); a broken line
    is a DataError naming FILE:LINE. ``missing_ok``: a missing file is no rows."""
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    rows, problems = [], []
    for lineno, row, problem in read_raw_rows(path):
        if problem:
            problems.append(f"{path}:{lineno}: {problem}")
        else:
            rows.append(row)
    if problems:
        raise DataError(problems)
    return rows


def validation_problems(where: str, e: ValidationError) -> list[str]:
    """``WHERE: field: what is wrong`` for each error pydantic found (WHERE is ``FILE:LINE``)."""
    return [f"{where}: {_field_path(err['loc'])}: {_message(err)}" for err in e.errors()]


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "missing field"
    msg = err.get("msg", "invalid")
    if kind.endswith("_type") or kind in {"string_type", "int_parsing", "float_parsing"}:
        got = type(err.get("input")).__name__
        return f"{msg} (got {got})"
    return msg
