"""Tables in files for `map`: CSV, TSV, JSONL and Parquet read in chunks and written back.

Chunks are pyarrow Tables (what Ray Data hands to each actor too), so the local engine and
the Ray engine share one annotate step. CSV and TSV columns are read as text, so every input
value is written back exactly as it was; TSV is read without quote handling, as `_data` does.
Writers stream: memory stays constant whatever the file's size.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._data import json_object
from ._errors import DataError, require

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet"}
_KINDS = ".csv, .tsv, .jsonl or .parquet"


def file_format(path: str | os.PathLike[str], role: str = "input") -> str:
    """"csv", "tsv", "jsonl" or "parquet" from the file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown {role} file type '{suffix or '(none)'}'. Fix: use "
                        f"{_KINDS}.")
    return FORMATS[suffix]


def column_names(path: Path, fmt: str) -> list[str]:
    """The columns of a table file (the header, the schema; for JSONL every key of every line,
    in the order they first appear, so a key first seen late in the file is not dropped)."""
    _check_file(path)
    if fmt == "parquet":
        names = list(_parquet_file(path).schema_arrow.names)
        _check_unique(names, f"{path.name}: the Parquet schema")
        return names
    with _open_text(path) as handle:
        if fmt == "jsonl":
            keys: dict[str, None] = {}
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    keys.update(dict.fromkeys(json_object(line, path.name, number)))
            return list(keys)
    header = [name.strip() for name in _csv_header(path, fmt)]
    _check_unique(header, f"{path.name}, line 1: the header")
    return header


def _csv_header(path: Path, fmt: str) -> list[str]:
    """A CSV/TSV file's header as written (names not stripped)."""
    with _open_text(path) as handle:
        return next(csv.reader(handle, **_csv_dialect(fmt)), [])


def _check_unique(names: list[str], where: str) -> None:
    """Two columns of one name: one would silently win over the other (pyarrow refuses to
    select either)."""
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"{where} names the column '{twice[0]}' {names.count(twice[0])} times "
                        f"(columns: {', '.join(names)}). Fix: give every column its own name.")


def count_rows(path: Path, fmt: str) -> int:
    """Data rows in a table file (exact; CSV is parsed, so quoted newlines count once)."""
    if fmt == "parquet":
        return _parquet_file(path).metadata.num_rows
    if fmt == "jsonl":
        with _open_text(path) as handle:
            return sum(1 for line in handle if line.strip())
    if fmt == "csv":
        check_quotes(path)
    first = column_names(path, fmt)[:1]
    return sum(b.num_rows for b in _csv_batches(path, fmt, first))


def check_quotes(path: Path) -> None:
    """A DataError naming the row when a CSV file ends inside a quoted field: pyarrow reads
    the rest of the file as that one value, silently. An odd number of quote characters
    (each quoted field has two; a quote in a value is doubled) is the sign; then Python's
    strict reader finds the row. Counting bytes costs little next to running a model."""
    quotes = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            quotes += block.count(b'"')
    if quotes % 2 == 0:
        return
    from ._data import MAX_TEXT_CHARS, csv_error

    csv.field_size_limit(max(csv.field_size_limit(), MAX_TEXT_CHARS * 4))
    with _open_text(path) as handle:  # streamed: the file may be larger than memory
        reader = csv.reader(handle, strict=True)
        start = 1
        try:
            for _ in reader:
                start = reader.line_num + 1
        except csv.Error as err:
            raise csv_error(path.name, start, err) from None


def read_chunks(path: Path, fmt: str, rows: int,
                names: Iterable[str] | None = None) -> Iterator[Any]:
    """The file as pyarrow Tables of `rows` rows (the last may be shorter), in file order.
    `names` are its `column_names` when already known (JSONL: saves reading it twice)."""
    _check_file(path)
    names = list(names) if names is not None else column_names(path, fmt)
    if fmt == "parquet":
        pa = require("pyarrow", "map")
        for batch in _parquet_file(path).iter_batches(batch_size=rows):
            yield pa.Table.from_batches([batch])
    elif fmt == "jsonl":
        yield from _jsonl_chunks(path, rows, names)
    else:
        yield from _rebatch(_csv_batches(path, fmt, names), rows)


def csv_read_options(path: Path, fmt: str, names: list[str] | None) -> dict[str, Any]:
    """pyarrow.csv options (Ray's read_csv takes them too): `names` read as text. pyarrow
    keeps a header's names as written (' text '): in a local file the types go to those."""
    pa, pacsv = require("pyarrow", "map"), require("pyarrow.csv", "map")
    parse = (pacsv.ParseOptions(delimiter="\t", quote_char=False) if fmt == "tsv"
             else pacsv.ParseOptions(newlines_in_values=True))
    written = _csv_header(path, fmt) if names and Path(path).is_file() else list(names or [])
    types = {name: pa.string() for name in written if name.strip() in (names or [])}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                   quoted_strings_can_be_null=False)
    return {"parse_options": parse, "convert_options": convert}


def _csv_batches(path: Path, fmt: str, names: list[str]) -> Iterator[Any]:
    pa, pacsv = require("pyarrow", "map"), require("pyarrow.csv", "map")
    options = csv_read_options(path, fmt, names)
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20),
                                **options)
        for batch in reader:  # names stripped as column_names strips them: ' text ' was a
            names = [name.strip() for name in batch.schema.names]  # KeyError for 'text'
            yield (batch if names == batch.schema.names
                   else pa.RecordBatch.from_arrays(batch.columns, names=names))
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        if isinstance(err, pa.ArrowInvalid):
            _check_field_counts(path, fmt)  # pyarrow names no line: find it, name it
        raise DataError(f"{path.name}: cannot parse the {fmt.upper()} ({str(err)[:300]}). "
                        "Fix: check quoting, the number of fields per row, and that the file "
                        "is UTF-8.") from None


def _check_field_counts(path: Path, fmt: str) -> None:
    """The DataError of `_data` (line, fields expected and found, fix) for the first row whose
    number of fields differs from the header's, read again with Python's csv module."""
    from ._data import MAX_TEXT_CHARS, _fields

    csv.field_size_limit(max(csv.field_size_limit(), MAX_TEXT_CHARS * 4))
    with _open_text(path) as handle:
        reader = csv.reader(handle, **_csv_dialect(fmt))
        header = [name.strip() for name in next(reader, [])]
        start = reader.line_num + 1  # the line the next record starts on
        with contextlib.suppress(csv.Error):  # a quoting error: the generic message says so
            for fields in reader:
                if fields:  # pyarrow skips empty lines too
                    _fields(path.name, start, header, fields, fmt)
                start = reader.line_num + 1


def _rebatch(batches: Iterable[Any], rows: int) -> Iterator[Any]:
    """Record batches of any size -> Tables of exactly `rows` rows (the last may be short)."""
    pa = require("pyarrow", "map")
    pending: list[Any] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def _jsonl_chunks(path: Path, rows: int, names: list[str]) -> Iterator[Any]:
    """Tables with a column for each of `names`: every key of the file, in every chunk."""
    pa = require("pyarrow", "map")
    records: list[dict[str, Any]] = []
    numbers: list[int] = []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                records.append(json_object(line, path.name, number))
                numbers.append(number)
            if len(records) == rows:
                yield _from_records(pa, records, numbers, names, path)
                records, numbers = [], []
    if records:
        yield _from_records(pa, records, numbers, names, path)


ABSENT = b"funcformer.absent"
"""Schema metadata of a JSONL chunk: {column: [rows whose line lacks that key]}, so a JSONL
output writes each line's own keys, where CSV and Parquet leave the cell empty (null)."""


def _from_records(pa: Any, records: list[dict[str, Any]], numbers: list[int],
                  names: list[str], path: Path) -> Any:
    columns = [_column(pa, [r.get(name) for r in records], name, numbers, path)
               for name in names]
    absent = {name: rows for name in names
              if (rows := [i for i, record in enumerate(records) if name not in record])}
    metadata = {ABSENT: json.dumps(absent).encode()} if absent else None
    return pa.Table.from_arrays(columns, names=names, metadata=metadata)


def _column(pa: Any, values: list[Any], name: str, numbers: list[int], path: Path) -> Any:
    """One field's values as an array, or a DataError naming the first line that does not
    fit the ones before it (pyarrow's own message names neither line nor field)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
        low, high = 0, len(values) - 1  # the first prefix that fails ends at `high`
        while low < high:
            middle = (low + high) // 2
            try:
                pa.array(values[:middle + 1])
                low = middle + 1
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                high = middle
        earlier = next((v for v in values[:high] if v is not None), None)
        what = (f"{_kind(values[high])}, where the lines before hold {_kind(earlier)}"
                if earlier is not None and _kind(earlier) != _kind(values[high])
                else f"a value that does not fit one column ({str(err)[:200]})")
        raise DataError(f"{path.name}, line {numbers[high]}, field '{name}': {what}. Fix: give "
                        "each field one type in every line (e.g. always a string).") from None


def _kind(value: Any) -> str:
    """A JSON value's type in words."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "null")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: check the path.")


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[Any]:
    from ._data import wide_encoding

    with open(path, "rb") as raw:
        wide = wide_encoding(raw.read(4))
    if wide is not None:  # Excel's "Unicode Text"; pyarrow's readers stream UTF-8 only
        raise DataError(f"{path.name}: the file is {wide.upper()} (it starts with that "
                        "byte-order mark); map streams UTF-8. Fix: convert it, e.g. iconv -f "
                        f"{wide.upper()} -t UTF-8 {path.name} > fixed{path.suffix}")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            yield handle
        except UnicodeDecodeError:
            raise DataError(f"{path.name}: not valid UTF-8. Fix: convert it, e.g. iconv -f "
                            f"<its encoding> -t UTF-8 {path.name} > fixed{path.suffix}") from None


def _parquet_file(path: Path) -> Any:
    pa, pq = require("pyarrow", "map"), require("pyarrow.parquet", "map")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path.name}: not a readable Parquet file ({str(err)[:200]}). Fix: "
                        "check that the file is complete and really Parquet.") from None


def _csv_dialect(fmt: str) -> dict[str, Any]:
    return ({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv"
            else {"delimiter": ","})


class TableWriter:
    """Appends Tables to one file, atomically: it appears complete, or not at all.

    Parquet needs one schema per file; a chunk whose column types differ from the file's
    (a column all null in one chunk, for instance) starts a new part, and `close` merges
    the parts under their unified schema.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._temps: list[Path] = []
        self._handle: Any = None
        self._writer: Any = None
        self._columns: list[str] | None = None

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if kind is None:
                self.close()
        finally:
            self._discard()  # a no-op after a successful close

    def write(self, table: Any) -> None:
        if self._columns is None:
            self._columns = list(table.column_names)
        if self.fmt == "parquet":
            self._write_parquet(table)
        else:
            self._write_text(table)
        self.rows += table.num_rows

    def _new_temp(self) -> Path:
        temp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._temps.append(temp)
        return temp

    def _write_text(self, table: Any) -> None:
        if self._handle is None:
            temp = self._new_temp()  # kept open across writes; `close` closes it
            self._handle = open(temp, "w", encoding="utf-8", newline="")  # noqa: SIM115
            if self.fmt != "jsonl":
                self._csv = csv.writer(self._handle, **_csv_dialect(self.fmt), quotechar=None
                                       if self.fmt == "tsv" else '"')
                self._csv.writerow(self._columns)
        absent = _absent_keys(table) if self.fmt == "jsonl" else {}
        for index, row in enumerate(table.to_pylist()):
            if self.fmt == "jsonl":
                skip = absent.get(index, ())
                self._handle.write(json.dumps({k: _json_value(v) for k, v in row.items()
                                               if k not in skip},
                                              ensure_ascii=False, default=str) + "\n")
            else:
                self._csv.writerow([self._cell(k, v) for k, v in row.items()])

    def _cell(self, column: str, value: Any) -> str:
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, default=str)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, float):
            value = "" if math.isnan(value) else repr(value)
        elif value is None:
            value = ""
        value = str(value)
        if self.fmt == "tsv" and ("\t" in value or "\n" in value or "\r" in value):
            raise DataError(f"{self.path.name}, column '{column}': a value holds a tab or a "
                            "line break, which a TSV file cannot hold unquoted. Fix: write "
                            ".csv, .jsonl or .parquet instead.")
        return value

    def _write_parquet(self, table: Any) -> None:
        pq = require("pyarrow.parquet", "map")
        metadata = table.schema.metadata or {}
        if ABSENT in metadata:  # a note for JSONL outputs, not for the file's schema
            table = table.replace_schema_metadata(
                {k: v for k, v in metadata.items() if k != ABSENT} or None)
        if self._writer is not None and not table.schema.equals(self._writer.schema):
            self._writer.close()
            self._writer = None
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._new_temp(), table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        if self._writer is not None:
            self._writer.close()
        if not self._temps:  # no rows at all: an empty file of the right kind
            self._write_empty()
        elif len(self._temps) > 1:
            self._merge_parts()
        os.replace(self._temps[-1], self.path)
        self._temps.clear()

    def _write_empty(self) -> None:
        if self.fmt == "parquet":
            pa, pq = require("pyarrow", "map"), require("pyarrow.parquet", "map")
            pq.write_table(pa.table({name: pa.array([], pa.string())
                                     for name in self._columns or []}), self._new_temp())
        else:
            with open(self._new_temp(), "w", encoding="utf-8", newline="") as handle:
                if self.fmt != "jsonl" and self._columns:
                    csv.writer(handle, **_csv_dialect(self.fmt)).writerow(self._columns)

    def _merge_parts(self) -> None:
        pa, pq = require("pyarrow", "map"), require("pyarrow.parquet", "map")
        parts, self._temps = self._temps, []
        try:
            schema = pa.unify_schemas([pq.read_schema(p) for p in parts],
                                      promote_options="permissive")
            with pq.ParquetWriter(self._new_temp(), schema) as writer:
                for part in parts:
                    for batch in pq.ParquetFile(part).iter_batches():
                        writer.write_table(pa.Table.from_batches([batch]).cast(schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise DataError(f"{self.path.name}: the rows' column types differ between chunks "
                            f"and cannot be merged ({str(err)[:200]}). Fix: write .jsonl "
                            "instead, or give each input column one type.") from None
        finally:
            for part in parts:
                part.unlink(missing_ok=True)

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            if self._handle is not None:
                self._handle.close()
            if self._writer is not None:
                self._writer.close()
        for temp in self._temps:
            temp.unlink(missing_ok=True)


def _absent_keys(table: Any) -> dict[int, set[str]]:
    """Row index -> the keys its JSONL line did not have (see ABSENT)."""
    rows: dict[int, set[str]] = {}
    for name, indices in json.loads((table.schema.metadata or {}).get(ABSENT, b"{}")).items():
        for index in indices:
            rows.setdefault(index, set()).add(name)
    return rows


def _json_value(value: Any) -> Any:
    """NaN is not JSON: write null."""
    return None if isinstance(value, float) and math.isnan(value) else value
