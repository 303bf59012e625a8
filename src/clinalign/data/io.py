"""Reading and writing record files: JSONL, CSV and Parquet in, JSONL out, always atomically.

Every problem in a user's file is reported as ``FILE:LINE: field: what is wrong`` so it can be
fixed without guessing (for Parquet, LINE is the 1-based row, as a warehouse viewer shows it);
nothing is written when input is bad. CSV cells holding lists or objects (options, facts) are JSON
text; Parquet list and struct columns arrive as lists and dicts, and a null cell counts as absent.

Memory stays bounded whatever a file holds: a record (a JSONL line, a CSV record, a Parquet row) over
``max_record_bytes()`` is a problem found before its text is decoded or parsed, and files are read a
line or a batch at a time. A file in UTF-16/32 is one problem naming the encoding; a CSV or Parquet file
without a required column is one problem on its header, not one per row.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


#: Why 1 MiB: a record is one example a model reads in one context window. A long discharge note is
#: tens of kilobytes; 1 MiB of text is ~250,000 tokens, beyond the context of the models this project
#: trains, so a bigger record cannot be trained on anyway and is far more likely a broken export (a
#: whole table in one cell, a missing newline). Refusing it before its text is parsed keeps a reader's
#: memory near this bound whatever the file holds; ``--max-record-bytes`` raises it for data that needs more.
MAX_RECORD_BYTES = 1 << 20
_max_record_bytes: ContextVar[int] = ContextVar("max_record_bytes", default=MAX_RECORD_BYTES)
_CHUNK = 1 << 16  # bytes read at a time past the limit, to measure an over-long line without holding it


@contextmanager
def record_limit(max_bytes: int) -> Iterator[None]:
    """Every reader in the block refuses records over ``max_bytes``.

    The limit is a property of one command run that every reader on its path honours (task records,
    training rows, pair files, items), so the command sets it once here instead of threading it through
    each recipe that reads a file."""
    token = _max_record_bytes.set(max_bytes)
    try:
        yield
    finally:
        _max_record_bytes.reset(token)


def max_record_bytes() -> int:
    return _max_record_bytes.get()


def _too_large(field: str, size: int, limit: int, at_least: bool = False) -> str:
    return (f"{field}: {'at least ' if at_least else ''}{size} bytes, over the limit of {limit} "
            f"(--max-record-bytes)")


def _bounded_lines(path: Path, limit: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, the line with its terminator, its size without it) for each line of a file. A line
    over ``limit`` bytes comes as None: it is measured in chunks and never held whole, so a 50 MB line
    costs no more memory than a short one."""
    with open(path, "rb") as f:
        lineno = 0
        while line := f.readline(limit + 2):  # + 2: the line's CRLF
            lineno += 1
            size, end, whole = len(line), line[-2:], True
            while not end.endswith(b"\n") and (chunk := f.readline(_CHUNK)):
                size, end, whole = size + len(chunk), (end + chunk)[-2:], False
            size -= 2 if end == b"\r\n" else 1 if end.endswith(b"\n") else 0
            yield lineno, (line if whole and size <= limit else None), size


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def _check_encoding(path: Path) -> None:
    """A text file saved as UTF-16/32 (Excel's and Notepad's "Unicode", PowerShell's default) is one
    problem with one fix, not an error on every line: recognised by its byte-order mark, or without one
    by the NUL byte beside every ASCII character."""
    with open(path, "rb") as f:
        head = f.read(64)
    encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if encoding is None and len(head) >= 4:
        even, odd = head[0::2], head[1::2]
        little = 0 not in even and odd.count(0) >= len(odd) - 1  # "{\0"\0..."; the last pair may be cut
        big = 0 not in odd and even.count(0) >= len(even) - 1
        encoding = "UTF-16" if little or big else None
    if encoding:
        raise DataError([f"{path}: this file is {encoding}; save it as UTF-8"])


def read_raw_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line, row dict or None, problem or None) for a .jsonl, .csv or .parquet file; records
    over ``max_record_bytes()`` are problems, found before their text is parsed."""
    path = Path(path)
    if not path.is_file():
        raise DataError([f"{path}: file not found"])
    suffix = path.suffix.lower()
    limit = max_record_bytes()
    if suffix in (".parquet", ".pq"):
        yield from _read_parquet(path, limit)
        return
    _check_encoding(path)
    if suffix == ".csv":
        yield from _read_csv(path, limit)
    else:
        yield from _read_jsonl(path, limit)


def columns(path: str | Path) -> list[str] | None:
    """The column names of a CSV header or a Parquet schema; None for JSONL, whose records each name
    their own fields, and for a header that cannot be read (the row reader reports why, with its line)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _check_encoding(path)
        rows = _csv_rows(path, max_record_bytes())
        first = next(rows, None)
        rows.close()
        return first[1] if first is not None else None
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowException, OSError):
            return None
    return None


def header_problems(path: str | Path, record_type: type[BaseModel]) -> list[str]:
    """A required field with no column is one problem, on the header, instead of one per row; a header
    column that looks like a renamed one is named (a column called ``Label`` or ``diagnosis_label``)."""
    path = Path(path)
    cols = columns(path)
    if cols is None:
        return []
    fields = {f.alias or name: f for name, f in record_type.model_fields.items()}
    unknown = [c for c in cols if c not in fields]
    problems = []
    for name, f in fields.items():
        if not f.is_required() or name in cols:
            continue
        plain = {c.strip().lower(): c for c in unknown}
        guess = difflib.get_close_matches(name, list(plain), n=1, cutoff=0.6) or [c for c in plain if name in c][:1]
        hint = f"; did you mean to rename {plain[guess[0]]!r} to {name!r}?" if guess else ""
        where = "header" if path.suffix.lower() == ".csv" else "schema"
        problems.append(f"{path}:1: {name}: missing column (the {where} has: {', '.join(cols) or 'nothing'}){hint}")
    return problems


def _read_parquet(path: Path, limit: int) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Rows of a Parquet file in batches (a warehouse export can be larger than memory). Each row's size
    is measured on the Arrow buffers before any Python object is made of it, so an over-long cell is
    refused without becoming a Python string; it is read once into Arrow memory, Parquet's smallest unit
    being a page of its column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        row = 0
        for batch in batches:
            sizes = {name: _value_bytes(col) for name, col in zip(batch.schema.names, batch.columns, strict=True)}
            total = sum(sizes.values(), np.zeros(batch.num_rows, dtype=np.int64))
            over = total > limit
            ok = iter(batch.filter(pa.array(~over)).to_pylist(maps_as_pydicts="strict") if over.any()
                      else batch.to_pylist(maps_as_pydicts="strict"))
            for i in range(batch.num_rows):
                row += 1
                if not over[i]:
                    yield row, _drop_nulls(next(ok)), None
                    continue
                name, biggest = max(((n, int(s[i])) for n, s in sizes.items()), key=lambda x: x[1])
                yield row, None, (_too_large(name, biggest, limit) if biggest > limit
                                  else _too_large("record", int(total[i]), limit))
    except (pa.ArrowException, OSError) as e:
        raise DataError([f"{path}: not a readable Parquet file ({e})".replace("\n", " ")]) from None


def _value_bytes(arr: Any) -> Any:
    """Bytes held by each value of an Arrow array (text by its UTF-8 length, numbers by their width,
    lists, maps and structs by what they contain), computed on Arrow buffers: numpy int64 per row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        return _value_bytes(arr.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_map(t):
        arr = arr.cast(pa.list_(pa.struct([t.key_field, t.item_field])))
        t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=_value_bytes(arr.flatten()), minlength=len(arr)).astype(np.int64)
    if pa.types.is_struct(t):
        return sum((_value_bytes(f) for f in arr.flatten()), np.zeros(len(arr), dtype=np.int64))
    width = t.bit_width // 8 if hasattr(t, "bit_width") else 0
    return np.full(len(arr), width, dtype=np.int64)


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


def _utf8(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"


def _read_jsonl(path: Path, limit: int) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    for lineno, raw, size in _bounded_lines(path, limit):
        if raw is None:
            yield lineno, None, _too_large("record", size, limit)
            continue
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark (Notepad, Excel) says only that the file is UTF-8
        text, err = _utf8(raw)
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


class _RecordStop(Exception):
    """Raised inside the CSV line feed: a problem that ends reading (its line, its message)."""

    def __init__(self, line: int, problem: str):
        self.line, self.problem = line, problem


class _CsvFeed:
    """The lines of a CSV file for ``csv.reader``, decoded, each within the record limit, and counting
    the bytes of the record being read (a quoted cell may span lines) so a record over the limit is
    stopped while it is read, not after."""

    def __init__(self, path: Path, limit: int):
        self.lines = _bounded_lines(path, limit)
        self.limit = limit
        self.start = 1  # the first line of the record being read
        self.record_bytes = 0
        self.last = 0

    def __iter__(self) -> _CsvFeed:
        return self

    def next_record(self) -> None:
        self.start, self.record_bytes = self.last + 1, 0

    def __next__(self) -> str:
        lineno, raw, size = next(self.lines)
        self.last = lineno
        self.record_bytes += size
        if raw is None or self.record_bytes > self.limit:
            raise _RecordStop(self.start, _too_large("record", self.record_bytes, self.limit,
                                                     at_least=lineno > self.start))
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        text, err = _utf8(raw)
        if err:
            raise _RecordStop(lineno, f"record: {err}")
        assert text is not None
        return text


def _csv_rows(path: Path, limit: int) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(first line, cells or None, problem or None) per CSV record, the header first. Reading stops at a
    problem the parser cannot step over (bad bytes, an over-long record: where the next record starts is
    then unknown)."""
    feed = _CsvFeed(path, limit)
    reader = csv.reader(feed)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _RecordStop as e:
            yield e.line, None, e.problem
            return
        except csv.Error as e:
            yield feed.start, None, f"record: malformed CSV ({e})"
            return
        yield feed.start, cells, None
        feed.next_record()


def _read_csv(path: Path, limit: int) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    rows = _csv_rows(path, limit)
    first = next(rows, None)
    if first is None:
        return
    if first[1] is None:
        yield first
        return
    header = first[1]
    for lineno, cells, problem in rows:
        if cells is None:
            yield lineno, None, problem
            continue
        if not cells:
            continue  # a blank line is no record (csv.DictReader's rule)
        if len(cells) > len(header):
            yield lineno, None, "record: more cells than header columns"
            continue
        yield lineno, {k: _csv_cell(v) for k, v in zip(header, cells, strict=False)}, None


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
    if path.is_file() and (missing := header_problems(path, record_type)):
        raise DataError(missing)
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
