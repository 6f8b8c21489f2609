"""Reading and validating examples from files (CSV, TSV, JSONL, TXT) and Python objects.

Every problem is a `DataError` naming the source, the line (files) or index (Python objects),
the field, and a fix. Limits: a text holds at most `MAX_TEXT_CHARS` characters, a label at
most `MAX_LABEL_CHARS`; texts longer than the model's token limit are truncated, not rejected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import numbers
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import DataError

MAX_TEXT_CHARS = 100_000
MAX_LABEL_CHARS = 200
MULTI_SEPARATOR = "|"
"""Separates the labels of a multi-label row in CSV/TSV: 'billing|refund'."""
_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
              (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
"""Byte-order marks of the wider encodings, UTF-32's first (its little-endian mark begins
with UTF-16's)."""
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "json", ".txt": "txt"}


class Located:
    """Rows that remember where each came from: `source` and one place per row."""

    source: str
    places: list[str]

    def where(self, i: int) -> str:
        """'reviews.csv, line 7' or '<list>, index 6': where row `i` came from."""
        return f"{self.source}, {self.places[i]}"


@dataclass
class Examples(Located):
    """Validated texts, optional labels, and where each came from (for later messages)."""

    texts: list[str]
    labels: list[str] | None
    source: str
    places: list[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class _Row:
    fields: Mapping[str, Any]
    place: str  # "line 7" or "index 6"


def read_examples(data: Any, *, text_column: str = "text", label_column: str | None = "label",
                  labels_required: bool = True, empty_labels: bool = False) -> Examples:
    """Read texts (and labels) from a path, list, dict of columns, or pandas DataFrame.

    `empty_labels` accepts a row with an empty label (multi-label data: no label applies).

    >>> read_examples([{"text": "great", "label": "pos"}, ("awful", "neg")]).labels
    ['pos', 'neg']
    """
    if isinstance(data, Examples):
        return data
    if label_column is not None and label_column == text_column:
        raise DataError(f"The text and the label column are both '{text_column}': every text "
                        "would be its own label. Fix: name two columns (--text-column and "
                        "--label-column, text_column= and label_column= in Python).")
    source, rows = _rows(data, text_column, label_column)
    texts: list[str] = []
    labels: list[str] | None = [] if label_column else None
    places: list[str] = []
    for row in rows:
        where = f"{source}, {row.place}"
        texts.append(_text(row.fields, text_column, where))
        if labels is not None:
            label = _label(row.fields, label_column, where, labels_required, empty_labels)
            if label is None:
                labels = None
            else:
                labels.append(label)
        places.append(row.place)
    if not texts:
        wanted = f"'{text_column}'" + (f" and '{label_column}'" if label_column else "")
        raise DataError(f"{source}: no examples found. Fix: add rows with {wanted} fields.")
    return Examples(texts=texts, labels=labels, source=source, places=places)


@dataclass
class Records(Located):
    """Validated rows of named fields (pairs, documents, tagged tokens...) and their places."""

    rows: list[dict[str, Any]]
    source: str
    places: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]


def read_records(data: Any, *, texts: Sequence[str], optional: Sequence[str] = (),
                 what: str = "examples", fields: Sequence[str] | None = None) -> Records:
    """Rows whose `texts` fields are required, valid texts; `optional` fields are kept as read.
    `fields`: the default names of the `texts` columns (text_a, ...), for the errors' fixes.

    Tuples and lists of the right length are taken in the order `texts` + `optional`.

    >>> read_records([("a cat", "a dog", 0.5)], texts=["text_a", "text_b"],
    ...              optional=["score"]).rows[0]["score"]
    0.5
    """
    if isinstance(data, Records):
        return data
    options = [_column_option(field) for field in (fields or texts)]
    twice = [(option, name) for option, name in zip(options, texts, strict=True)
             if list(texts).count(name) > 1]
    if twice:  # text_a_column=text_b: every pair a text with itself
        raise DataError(f"The fields {' and '.join(repr(n) for n in (fields or texts))} are "
                        f"read from the same column '{twice[0][1]}'. Fix: name a column for "
                        f"each ({', '.join(option for option, _ in twice)}).")
    names = list(texts) + list(optional)
    items = data
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        for i, item in enumerate(data):
            if isinstance(item, (tuple, list)) and len(item) > len(names):
                raise DataError(f"<list>, index {i}: {len(item)} values, but a row holds at "
                                f"most {len(names)} ({', '.join(names)}). Fix: one row per "
                                "item, e.g. (text_a, text_b) for a pair.")
        items = [dict(zip(names, item, strict=False)) if isinstance(item, (tuple, list))
                 else item for item in data]
    source, found = _rows(items, texts[0], None, options[0])
    rows: list[dict[str, Any]] = []
    places: list[str] = []
    for row in found:
        where = f"{source}, {row.place}"
        record = dict(row.fields)
        for name, option in zip(texts, options, strict=True):
            record[name] = _text(record, name, where, option)
        rows.append(record)
        places.append(row.place)
    if not rows:
        raise DataError(f"{source}: no {what} found. Fix: add rows with the fields "
                        f"{', '.join(repr(n) for n in texts)}.")
    return Records(rows=rows, source=source, places=places)


def _column_option(field: str) -> str:
    """How a user names the column of `field` (its default name): the CLI flag or --set key,
    then the Python keyword.

    >>> _column_option("text"), _column_option("text_a")
    ('--text-column / text_column=', '--set text_a_column=... / text_a_column=')
    """
    if field in ("text", "label"):
        return f"--{field}-column / {field}_column="
    return f"--set {field}_column=... / {field}_column="


def number_field(value: Any, where: str, field: str, fix: str) -> float:
    """A finite number from a JSON number or a numeric string, else a DataError."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{where}, field '{field}': expected a number, got {value!r}. Fix: "
                        f"{fix}")
    return number


def read_texts(data: Any, *, text_column: str = "text") -> Examples:
    """Read texts only (for prediction): a path, a list of strings, or rows with a text field."""
    return read_examples(data, text_column=text_column, label_column=None, labels_required=False)


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""Half of a UTF-16 surrogate pair on its own (JSON "\\ud800"): not valid Unicode text."""


def _blank(value: str) -> bool:
    """No visible character: whitespace, control characters (NUL) and invisible format
    characters (a byte-order mark, a right-to-left mark, a zero-width space) only, which the
    tokenizer drops, leaving an empty input.

    >>> _blank(" \\u200f\\x00\\ufeff"), _blank("\\u200fok")
    (True, False)
    """
    return not any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")
                   for ch in value)


def _text(fields: Mapping[str, Any], column: str, where: str,
          option: str = "--text-column / text_column=") -> str:
    if column not in fields:
        raise DataError(f"{where}: field '{column}' is missing. Fix: add it, or name the "
                        f"field with {option} (fields here: "
                        f"{', '.join(map(str, fields)) or 'none'}).")
    value = fields[column]
    if not isinstance(value, str):
        fix = ("fill in the text or remove the row" if value is None
               else "put the text in quotes")
        raise DataError(f"{where}, field '{column}': expected a string, got "
                        f"{_json_type(value)}. Fix: {fix}.")
    if _blank(value):
        raise DataError(f"{where}, field '{column}': the text is empty or only whitespace. "
                        "Fix: remove the row or fill in the text.")
    bad = LONE_SURROGATE.search(value)
    if bad:  # half of a UTF-16 pair (JSON "\ud800"): no tokenizer, file or response takes it
        raise DataError(f"{where}, field '{column}': not valid Unicode: a lone surrogate "
                        f"(U+{ord(bad.group()):04X}) at character {bad.start()}. Fix: send the "
                        "text as UTF-8, or both halves of the surrogate pair.")
    if len(value) > MAX_TEXT_CHARS:
        raise DataError(f"{where}, field '{column}': the text has {len(value):,} characters, "
                        f"over the limit of {MAX_TEXT_CHARS:,}. Fix: split or shorten it.")
    return value


def _label(fields: Mapping[str, Any], column: str | None, where: str,
           required: bool, empty_ok: bool = False) -> str | None:
    if column not in fields:
        if not required:
            return None
        raise DataError(f"{where}: field '{column}' is missing. Fix: add a label to every "
                        f"example, or name the label field with --label-column / label_column= "
                        f"(fields here: {', '.join(map(str, fields)) or 'none'}).")
    value = fields[column]
    if isinstance(value, (list, tuple)):  # multi-label: ["billing", "refund"]; [] is no label
        return _label_list(value, column, where)
    if value is None or (isinstance(value, float) and math.isnan(value)):  # pandas' missing
        value = ""
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise DataError(f"{where}, field '{column}': a label must be a string or an integer, "
                        f"got {_json_type(value)}. Fix: write the label as text, e.g. "
                        '"positive".')
    label = str(int(value) if isinstance(value, numbers.Integral) else value).strip()
    if not label and not empty_ok:
        raise DataError(f"{where}, field '{column}': the label is empty. Fix: give every row "
                        "a label, or remove unlabelled rows (multi-label data where no label "
                        "applies: write [] in JSONL, or pass multi_label=True / --multi-label).")
    return _check_label_length(label, column, where)


def _label_list(values: Sequence[Any], column: str, where: str) -> str:
    names = []
    for value in values:
        if not isinstance(value, str) or not value.strip() or MULTI_SEPARATOR in value:
            raise DataError(f"{where}, field '{column}': every label in the list must be a "
                            f"non-empty string without '{MULTI_SEPARATOR}', got {value!r}. Fix: "
                            'write e.g. ["billing", "refund"].')
        names.append(value.strip()[:MAX_LABEL_CHARS + 1])
    return MULTI_SEPARATOR.join(_check_label_length(n, column, where) for n in names)


def _check_label_length(label: str, column: str, where: str) -> str:
    if len(label) > MAX_LABEL_CHARS:
        raise DataError(f"{where}, field '{column}': the label has {len(label)} characters, "
                        f"over the limit of {MAX_LABEL_CHARS}. Fix: use a shorter label name.")
    return label


def at_place(message: str, where: Callable[[int], str]) -> str:
    """A Python-list reader's message with the place the caller knows: '<list>, index 4: ...'
    -> where(4) + ': ...' (a file's row, a command-line argument, a request's field).

    >>> at_place("<list>, index 1, field 'text': empty.", lambda i: f"argument {i + 1}")
    "argument 2, field 'text': empty."
    """
    return re.sub(r"<list>, index (\d+)", lambda m: where(int(m.group(1))), message, count=1)


def split_labels(label: str) -> list[str]:
    """The labels of a multi-label row: 'billing|refund' -> ['billing', 'refund']."""
    return [part.strip() for part in label.split(MULTI_SEPARATOR) if part.strip()]


def check_single_label(examples: Examples, column: str | None) -> None:
    """A DataError naming the first row with no label (an empty list in JSONL) for a function
    told it is single-label, where [] became a class named ''. (Several labels, "a|b" or a
    list, make one class of the combination there, as asked.)"""
    for label, place in zip(examples.labels or [], examples.places, strict=False):
        if not label:
            raise DataError(f"{examples.source}, {place}, field '{column}': no label ([]), but "
                            "the function is single-label (--single-label / multi_label=False),"
                            " where every row needs one. Fix: give the row a label or remove "
                            "it, or drop --single-label to train a multi-label function.")


def is_multi_label(examples: Examples) -> bool:
    """True when any row has several labels ('a|b' or a list) or none (an empty list)."""
    return examples.labels is not None and any(
        MULTI_SEPARATOR in label or not label for label in examples.labels)


def file_record(data: Any, **columns: str | None) -> dict[str, Any] | None:
    """Where data read from a file came from: its absolute path, sha256 and the columns read,
    so a later step (distillation) can read the same rows again; None for Python objects,
    which an artifact does not keep.

    >>> file_record([("great", "pos")]) is None
    True
    """
    if not isinstance(data, (str, os.PathLike)):
        return None
    path = Path(data).resolve()
    return {"path": str(path), "sha256": file_sha256(path), **columns}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _rows(data: Any, text_column: str, label_column: str | None,
          text_flag: str = "--text-column") -> tuple[str, Iterable[_Row]]:
    """`text_flag`: how to name the text column, for the error when a file lacks it."""
    if isinstance(data, (bytes, bytearray)):  # a Sequence of ints, else: "got int" per byte
        raise DataError("Cannot read examples from bytes. Fix: save them to a file and pass its "
                        "path, or decode them and pass a list of texts or (text, label) pairs.")
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return path.name, _file_rows(path, text_column, label_column, text_flag)
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        records = data.to_dict(orient="records")
        return "<DataFrame>", (_Row(r, f"row {i}") for i, r in enumerate(records))
    if isinstance(data, Mapping):
        return "<dict>", _column_rows(data)
    if isinstance(data, Sequence):
        return "<list>", _list_rows(data, text_column, label_column)
    raise DataError(f"Cannot read examples from a {type(data).__name__}. Fix: pass a file path "
                    "(.csv, .tsv, .jsonl, .json, .txt), a list of strings, dicts or (text, label) "
                    "pairs, a dict of columns, or a pandas DataFrame.")


def _list_rows(items: Sequence[Any], text_column: str,
               label_column: str | None) -> Iterator[_Row]:
    for i, item in enumerate(items):
        if isinstance(item, str):
            yield _Row({text_column: item}, f"index {i}")
        elif isinstance(item, Mapping):
            yield _Row(item, f"index {i}")
        elif isinstance(item, (tuple, list)) and len(item) == 2 and label_column:
            yield _Row({text_column: item[0], label_column: item[1]}, f"index {i}")
        elif label_column:
            raise DataError(f"<list>, index {i}: expected a string, a dict, or a (text, label) "
                            f"pair, got {type(item).__name__}. Fix: pass one of those for "
                            "every item.")
        else:  # texts to predict: a pair here was called one of the accepted forms
            raise DataError(f"<list>, index {i}: expected a text or a dict with one, got "
                            f"{type(item).__name__} {item!r:.60}. Fix: pass texts; a function "
                            "of pairs is a pair function (funcformer.train(\"pair\", ...)).")


def _column_rows(columns: Mapping[str, Any]) -> Iterator[_Row]:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"<dict>: the columns have different lengths ({lengths}). Fix: give "
                        "every column one value per example.")
    for i in range(next(iter(lengths.values()), 0)):
        yield _Row({name: values[i] for name, values in columns.items()}, f"index {i}")


def _file_rows(path: Path, text_column: str, label_column: str | None,
               text_flag: str = "--text-column") -> Iterator[_Row]:
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file. Fix: give the path of a "
                        "file in it.")
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path.name}: unknown file type '{path.suffix}'. Fix: use .csv, .tsv, "
                        ".jsonl, .json (an array of objects) or .txt (one text per line).")
    text = _decode(path)
    if not text.strip():
        fill = {"txt": "one text per line", "jsonl": "one JSON object per line",
                "json": "an array of objects"}.get(kind, "a header line and rows")
        raise DataError(f"{path.name}: the file is empty. Fix: add {fill}.")
    if kind == "jsonl":
        return _jsonl_rows(path.name, text)
    if kind == "json":
        return _json_array_rows(path.name, text)
    if kind == "txt":
        if label_column:
            raise DataError(f"{path.name}: a .txt file holds texts only (one per line), no "
                            "labels. Fix: use .csv, .tsv, .jsonl or .json with text and label "
                            "fields.")
        return (_Row({text_column: line}, f"line {n}")
                for n, line in enumerate(text.splitlines(), start=1) if line.strip())
    return _delimited_rows(path.name, text, kind, [text_column, label_column], text_flag)


def wide_encoding(head: bytes) -> str | None:
    """"utf-16" or "utf-32" when `head` (a file's first bytes) starts with that byte-order mark;
    None for everything else, which is read as UTF-8 (with or without its mark)."""
    return next((codec for mark, codec in _WIDE_BOMS if head.startswith(mark)), None)


def _decode(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: check the path.")
    raw = path.read_bytes()
    wide = wide_encoding(raw)
    if wide is not None:  # Excel's "Unicode Text" is UTF-16 with a byte-order mark
        try:
            return raw.decode(wide).lstrip("\ufeff")
        except UnicodeDecodeError as err:
            raise DataError(f"{path.name}: starts with a {wide.upper()} byte-order mark but byte "
                            f"offset {err.start} is not {wide.upper()}. Fix: save the file again "
                            "as UTF-8.") from None
    skip = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = raw.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path.name}, line {line}: not valid UTF-8 (byte 0x{raw[offset]:02x} at byte "
            f"offset {offset}). The file's encoding is unknown (perhaps Latin-1 or "
            "Windows-1252). Fix: convert it to UTF-8, e.g. iconv -f <its encoding> -t UTF-8 "
            f"{path.name} > fixed{path.suffix}") from None


def _jsonl_rows(name: str, text: str) -> Iterator[_Row]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = json_object(line, name, number, '{"text": "...", "label": "..."}')
        yield _Row(record, f"line {number}")


def json_object(line: str, name: str, number: int,
                example: str = '{"text": "..."}') -> dict[str, Any]:
    """Line `number` of the JSONL file `name` as an object, or a DataError saying why not."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{name}, line {number}: malformed JSON ({err.msg} at column "
                        f"{err.colno}). Fix: each line must be one JSON object, e.g. "
                        f"{example}") from None
    if not isinstance(record, dict):
        raise DataError(f"{name}, line {number}: expected a JSON object, got "
                        f"{_json_type(record)}. Fix: write each line as an object, e.g. "
                        f"{example}")
    return record


def _json_array_rows(name: str, text: str) -> Iterator[_Row]:
    """The objects of a JSON array (the flat export of many tools, e.g. Label Studio's
    JSON-MIN), each placed by the line it starts on, decoded one at a time so an error names
    its item's line."""
    decoder = json.JSONDecoder()
    example = '[{"text": "...", "label": "..."}, ...]'
    counted = [0, 1]  # (offset, its line): items come in order, so count on from the last

    def line(offset: int) -> int:
        if offset < counted[0]:
            return text.count("\n", 0, offset) + 1
        counted[:] = [offset, counted[1] + text.count("\n", counted[0], offset)]
        return counted[1]

    def skip(offset: int) -> int:
        while offset < len(text) and text[offset] in " \t\r\n":
            offset += 1
        return offset

    at = skip(0)
    if text[at] != "[":
        raise DataError(f"{name}, line {line(at)}: a .json file must hold one array of "
                        f"objects, e.g. {example}. Fix: wrap the records in [ ], or write one "
                        "object per line to a .jsonl file.")
    at = skip(at + 1)
    if at < len(text) and text[at] == "]":
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as err:
            raise DataError(f"{name}, line {err.lineno}: malformed JSON ({err.msg} at column "
                            f"{err.colno}). Fix: correct the item there.") from None
        if not isinstance(record, dict):
            raise DataError(f"{name}, line {line(at)}: expected a JSON object, got "
                            f"{_json_type(record)}. Fix: make every item of the array an "
                            f"object, e.g. {example}")
        yield _Row(record, f"line {line(at)}")
        at = skip(end)
        if at < len(text) and text[at] == ",":
            at = skip(at + 1)
            continue
        if at < len(text) and text[at] == "]":
            rest = skip(at + 1)
            if rest == len(text):
                return
            raise DataError(f"{name}, line {line(rest)}: text after the array's closing ']'. "
                            "Fix: remove it (a .json file holds one array).")
        raise DataError(f"{name}, line {line(min(at, len(text) - 1))}: expected ',' or the "
                        "closing ']' of the array. Fix: separate the objects with commas and "
                        "end the file with ].")


def _delimited_rows(name: str, text: str, kind: str, wanted: list[str | None],
                    text_flag: str = "--text-column") -> Iterator[_Row]:
    # TSV is read without quote handling (a literal " is text), as in most TSV corpora.
    # strict: a quote never closed is an error, not the rest of the file read as one text.
    options: dict[str, Any] = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv"
                               else {"delimiter": ",", "strict": True})
    csv.field_size_limit(max(csv.field_size_limit(), MAX_TEXT_CHARS * 4))
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    start = 1
    try:
        header = [h.strip() for h in next(reader)]
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:  # one would silently win over the other
            raise DataError(f"{name}, line 1: the header names the column '{twice[0]}' "
                            f"{header.count(twice[0])} times (columns: {', '.join(header)}). "
                            "Fix: give every column its own name.")
        missing = [c for c in wanted if c and c not in header]
        if missing:
            flag = text_flag if missing[0] == wanted[0] else "--label-column"
            raise DataError(f"{name}, line 1: no column '{missing[0]}' in the header (columns: "
                            f"{', '.join(header)}). Fix: rename the column or pass {flag}.")
        start = reader.line_num + 1  # the line the next record starts on
        for fields in reader:
            if not any(f.strip() for f in fields):
                start = reader.line_num + 1
                continue
            yield _Row(_fields(name, start, header, fields, kind), f"line {start}")
            start = reader.line_num + 1
    except csv.Error as err:
        raise csv_error(name, start, err) from None


def csv_error(name: str, line: int, err: csv.Error) -> DataError:
    """What a csv.Error in the row starting at `line` means, and the fix."""
    if "unexpected end of data" in str(err):
        return DataError(f"{name}, line {line}: a quoted field that starts in this row is never "
                         "closed (the file ends inside it). Fix: close the quote, or double a "
                         'quote that is part of the text ("").')
    return DataError(f"{name}, line {line}: cannot parse the row ({err}). Fix: check quoting (a "
                     'quote inside a quoted field is written ""); a field over the size limit '
                     "also causes this.")


def _fields(name: str, line: int, header: list[str], fields: list[str],
            kind: str) -> dict[str, str]:
    if len(fields) != len(header):
        sep = "tab" if kind == "tsv" else "comma"
        raise DataError(f"{name}, line {line}: expected {len(header)} {sep}-separated fields "
                        f"({', '.join(header)}), found {len(fields)}. Fix: quote fields that "
                        f"contain a {sep}" + (" (CSV), or remove stray tabs." if kind == "tsv"
                                              else ", or add the missing field."))
    return dict(zip(header, fields, strict=True))


def label_set(examples: Examples, task: str = "classify", multi_label: bool = False) -> list[str]:
    """The sorted distinct labels; at least two are needed to train a classifier."""
    if examples.labels is None:
        raise DataError(f"{examples.source}: no labels found. Fix: add a label column.")
    if multi_label:
        labels = sorted({name for label in examples.labels for name in split_labels(label)})
        if not labels:
            raise DataError(f"{examples.source}: no row has a label. Fix: label some rows.")
        return labels
    labels = sorted(set(examples.labels))
    if len(labels) < 2:
        raise DataError(f"{examples.source}: every row has the label '{labels[0]}'; {task} "
                        "needs at least two classes. Fix: add examples of the other classes.")
    return labels
