"""Reading and validating examples: `read_examples`, `read_texts`, `label_set`.

Every bad input must be a `DataError` whose message names the source (file name or
`<list>`/`<dict>`/`<DataFrame>`), where in it (line or index), the field, and a fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from funcformer import DataError, FuncformerError
from funcformer._data import (
    MAX_LABEL_CHARS,
    MAX_TEXT_CHARS,
    label_set,
    number_field,
    read_examples,
    read_texts,
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def error_of(data, *, reader=read_examples, **kwargs) -> str:
    """The message of the DataError that reading `data` raises."""
    with pytest.raises(DataError) as info:
        reader(data, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Good inputs
# --------------------------------------------------------------------------------------------

def test_csv_with_quoted_comma_and_multiline_field(tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv",
                 'text,label\n'
                 '"Great food, friendly staff",pos\n'
                 '"first line\nsecond line",neg\n'
                 'plain text,pos\n')
    ex = read_examples(path)
    assert ex.texts == ["Great food, friendly staff", "first line\nsecond line", "plain text"]
    assert ex.labels == ["pos", "neg", "pos"]
    assert ex.source == "reviews.csv"
    assert len(ex) == 3


def test_csv_accepts_a_path_given_as_str(tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv", "text,label\ngood,pos\nbad,neg\n")
    assert read_examples(str(path)).labels == ["pos", "neg"]


def test_csv_header_names_are_stripped_and_extra_columns_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "id, text , label\n1,good,pos\n2,bad,neg\n")
    ex = read_examples(path)
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "neg"]


def test_tsv_keeps_literal_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, "r.tsv", 'text\tlabel\nhe said "hi\tpos\n"quoted"\tneg\n')
    ex = read_examples(path)
    assert ex.texts == ['he said "hi', '"quoted"']
    assert ex.labels == ["pos", "neg"]


def test_tab_extension_is_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "r.tab", "text\tlabel\na, b\tpos\nc\tneg\n")
    assert read_examples(path).texts == ["a, b", "c"]


def test_jsonl_skips_blank_lines_and_stringifies_integer_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "r.jsonl",
                 '{"text": "good", "label": 1}\n'
                 '\n'
                 '   \n'
                 '{"text": "bad", "label": 0}\n'
                 '{"text": "ok", "label": "mid", "extra": [1, 2]}\n')
    ex = read_examples(path)
    assert ex.texts == ["good", "bad", "ok"]
    assert ex.labels == ["1", "0", "mid"]
    assert all(isinstance(label, str) for label in ex.labels)
    # blank lines are skipped but still counted
    assert ex.places == ["line 1", "line 4", "line 5"]
    assert ex.where(1) == "r.jsonl, line 4"


def test_ndjson_extension_is_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "r.ndjson", '{"text": "a", "label": "x"}\n')
    assert read_examples(path).labels == ["x"]


def test_label_whitespace_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, "r.jsonl", '{"text": "a", "label": "  pos "}\n')
    assert read_examples(path).labels == ["pos"]


def test_txt_via_read_texts_one_text_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "inputs.txt", "the food was great\nthe staff, rude\n\"quoted\"\n")
    ex = read_texts(path)
    assert ex.texts == ["the food was great", "the staff, rude", '"quoted"']
    assert ex.labels is None
    assert ex.places == ["line 1", "line 2", "line 3"]


def test_read_texts_from_labelled_csv_ignores_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "text,label\na,x\nb,y\n")
    ex = read_texts(path)
    assert ex.texts == ["a", "b"]
    assert ex.labels is None


def test_read_texts_from_csv_without_label_column(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "text\na\nb\n")
    assert read_texts(path).texts == ["a", "b"]


def test_list_of_strings_via_read_texts() -> None:
    ex = read_texts(["one", "two"])
    assert ex.texts == ["one", "two"]
    assert ex.labels is None
    assert ex.source == "<list>"
    assert ex.where(1) == "<list>, index 1"


def test_list_of_dicts() -> None:
    ex = read_examples([{"text": "good", "label": "pos"}, {"text": "bad", "label": 3}])
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "3"]


def test_list_of_tuples_and_lists() -> None:
    ex = read_examples([("good", "pos"), ["bad", "neg"]])
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "neg"]


def test_tuple_of_pairs_is_a_sequence() -> None:
    ex = read_examples((("good", "pos"), ("bad", "neg")))
    assert ex.labels == ["pos", "neg"]


def test_dict_of_columns() -> None:
    ex = read_examples({"text": ["good", "bad"], "label": ["pos", "neg"]})
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "neg"]
    assert ex.source == "<dict>"
    assert ex.where(0) == "<dict>, index 0"


def test_pandas_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["good", "bad"], "label": ["pos", "neg"], "id": [1, 2]})
    ex = read_examples(frame)
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "neg"]
    assert ex.source == "<DataFrame>"


def test_pandas_dataframe_integer_labels_become_strings() -> None:
    pd = pytest.importorskip("pandas")
    ex = read_examples(pd.DataFrame({"text": ["good", "bad"], "label": [1, 0]}))
    assert ex.labels == ["1", "0"]


def test_examples_pass_through_unchanged() -> None:
    ex = read_examples([("good", "pos"), ("bad", "neg")])
    assert read_examples(ex) is ex


def test_utf8_bom_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbftext,label\ncaf\xc3\xa9,pos\nb,neg\n")
    ex = read_examples(path)  # the header's first column is 'text', not '\ufefftext'
    assert ex.texts == ["café", "b"]


def test_utf8_bom_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.jsonl", b'\xef\xbb\xbf{"text": "a", "label": "x"}\n')
    assert read_examples(path).texts == ["a"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_wide_unicode_with_a_byte_order_mark(tmp_path: Path, codec: str) -> None:
    # Excel's "Unicode Text" export: UTF-16 (little-endian, with a mark), tab-separated
    body = "text\tlabel\ncafé crème\tpos\nbad\tneg\n"
    mark = "\ufeff" if codec.endswith("-be") else ""  # the -be codec writes no mark itself
    path = write(tmp_path, "excel.tsv", (mark + body).encode(codec))
    ex = read_examples(path)
    assert ex.texts == ["café crème", "bad"] and ex.labels == ["pos", "neg"]


def test_json_array_of_objects(tmp_path: Path) -> None:
    path = write(tmp_path, "export.json", '[\n  {"text": "good", "label": "pos"},\n'
                                          '  {"text": "bad", "label": 1}\n]\n')
    ex = read_examples(path)
    assert ex.texts == ["good", "bad"] and ex.labels == ["pos", "1"]
    assert ex.where(1) == "export.json, line 3"
    assert read_texts(write(tmp_path, "t.json", '[{"text": "only"}]')).texts == ["only"]


@pytest.mark.parametrize("content, where, says", [
    ('{"text": "a", "label": "x"}', "line 1", "must hold one array of objects"),
    ('[\n{"text": "a", "label": "x"},\n{"text": "b" "label": "y"}]', "line 3", "malformed JSON"),
    ('[\n{"text": "a", "label": "x"},\n5]', "line 3", "expected a JSON object, got a number"),
    ('[{"text": "a", "label": "x"} {"text": "b", "label": "y"}]', "line 1", "expected ','"),
    ('[{"text": "a", "label": "x"}]\n\nmore', "line 3", "text after the array's closing"),
    ('[{"text": "a", "label": "x"},\n{"text": " ", "label": "y"}]', "line 2, field 'text'",
     "empty or only whitespace"),
])
def test_bad_json_array(tmp_path: Path, content: str, where: str, says: str) -> None:
    msg = error_of(write(tmp_path, "bad.json", content))
    assert msg.startswith(f"bad.json, {where}: ") and says in msg and "Fix: " in msg, msg


def test_crlf_line_endings_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "crlf.csv", b"text,label\r\ngood,pos\r\nbad,neg\r\n")
    ex = read_examples(path)
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "neg"]  # no stray '\r'


def test_crlf_line_endings_jsonl_and_txt(tmp_path: Path) -> None:
    jsonl = write(tmp_path, "crlf.jsonl", b'{"text": "a", "label": "x"}\r\n{"text": "b", '
                                          b'"label": "y"}\r\n')
    assert read_examples(jsonl).labels == ["x", "y"]
    assert read_examples(jsonl).places == ["line 1", "line 2"]
    txt = write(tmp_path, "crlf.txt", b"one\r\ntwo\r\n")
    assert read_texts(txt).texts == ["one", "two"]


def test_custom_text_and_label_columns_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "review,sentiment\ngood,pos\nbad,neg\n")
    ex = read_examples(path, text_column="review", label_column="sentiment")
    assert ex.texts == ["good", "bad"]
    assert ex.labels == ["pos", "neg"]


def test_custom_columns_jsonl_and_python_objects(tmp_path: Path) -> None:
    path = write(tmp_path, "r.jsonl", '{"body": "good", "y": "pos"}\n')
    assert read_examples(path, text_column="body", label_column="y").labels == ["pos"]
    rows = [{"body": "good", "y": "pos"}]
    assert read_examples(rows, text_column="body", label_column="y").texts == ["good"]
    columns = {"body": ["good"], "y": ["pos"]}
    assert read_examples(columns, text_column="body", label_column="y").labels == ["pos"]
    assert read_texts(["a"], text_column="body").texts == ["a"]


def test_text_and_label_at_the_limits_are_accepted() -> None:
    ex = read_examples([("x" * MAX_TEXT_CHARS, "y" * MAX_LABEL_CHARS)])
    assert len(ex.texts[0]) == MAX_TEXT_CHARS
    assert len(ex.labels[0]) == MAX_LABEL_CHARS


def test_long_text_in_csv_is_read(tmp_path: Path) -> None:
    # a quoted field of nearly MAX_TEXT_CHARS characters parses
    text = "word " * (MAX_TEXT_CHARS // 5 - 1)
    path = write(tmp_path, "long.csv", f'text,label\n"{text}",pos\n')
    assert read_examples(path).texts == [text]


def test_label_set_sorted_distinct() -> None:
    ex = read_examples([("a", "pos"), ("b", "neg"), ("c", "pos"), ("d", "mid")])
    assert label_set(ex) == ["mid", "neg", "pos"]


def test_data_error_is_a_value_error_and_funcformer_error() -> None:
    assert issubclass(DataError, ValueError)
    assert issubclass(DataError, FuncformerError)


# --------------------------------------------------------------------------------------------
# Bad inputs: files
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"   \n\n\t\n"], ids=["zero-bytes", "whitespace"])
@pytest.mark.parametrize("name, fill", [
    ("empty.csv", "a header line and rows"), ("empty.tsv", "a header line and rows"),
    ("empty.jsonl", "one JSON object per line"), ("empty.json", "an array of objects"),
    ("empty.txt", "one text per line")])  # a .txt has no header line
def test_empty_file(tmp_path: Path, name: str, fill: str, content: bytes) -> None:
    msg = error_of(write(tmp_path, name, content), reader=read_texts)
    assert msg == f"{name}: the file is empty. Fix: add {fill}."


def test_duplicate_header_columns_are_refused(tmp_path: Path) -> None:
    # before, the last 'text' column silently won
    msg = error_of(write(tmp_path, "dup.csv", "text,text,label\na,b,x\n"))
    assert msg == ("dup.csv, line 1: the header names the column 'text' 2 times (columns: text, "
                   "text, label). Fix: give every column its own name.")


def test_text_and_label_column_must_differ(tmp_path: Path) -> None:
    # before, every text became its own label
    msg = error_of(write(tmp_path, "r.csv", "text,label\na,x\n"), label_column="text")
    assert "both 'text'" in msg and "Fix: name two columns" in msg


def test_bom_only_file_is_empty(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bom.csv", b"\xef\xbb\xbf\n"))
    assert "bom.csv" in msg and "empty" in msg


def test_header_only(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "head.csv", "text,label\n"))
    assert msg.startswith("head.csv: ")
    assert "no examples" in msg
    assert "'text'" in msg and "'label'" in msg
    assert "Fix:" in msg


def test_header_and_blank_lines_only(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "head.csv", "text,label\n\n\n"))
    assert "head.csv" in msg and "no examples" in msg


def test_missing_text_column(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.csv", "review,label\ngood,pos\n"))
    assert "bad.csv, line 1" in msg
    assert "'text'" in msg
    assert "review, label" in msg  # lists the columns there are
    assert "--text-column" in msg
    assert "Fix:" in msg


def test_missing_label_column(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.tsv", "text\tsentiment\ngood\tpos\n"))
    assert "bad.tsv, line 1" in msg
    assert "'label'" in msg
    assert "text, sentiment" in msg
    assert "--label-column" in msg
    assert "--text-column" not in msg


def test_missing_custom_text_column(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.csv", "text,label\na,b\n"), text_column="body")
    assert "'body'" in msg and "--text-column" in msg


def test_missing_text_field_jsonl(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.jsonl",
                         '{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n'))
    assert "bad.jsonl, line 2" in msg
    assert "'text'" in msg
    assert "body, label" in msg  # the fields that are there
    assert "--text-column" in msg


def test_empty_label_jsonl_exact_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl",
                 '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "  "}\n')
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 3, field 'label': ")
    assert "label is empty" in msg
    assert "Fix:" in msg


def test_empty_label_csv(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.csv", "text,label\ngood,pos\nbad,\n"))
    assert re.match(r"bad\.csv, line \d+, field 'label': ", msg)
    assert "label is empty" in msg
    assert "Fix:" in msg


@pytest.mark.parametrize("text", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_empty_or_whitespace_text_jsonl(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "bad.jsonl",
                 '{"text": "a", "label": "x"}\n' + json.dumps({"text": text, "label": "y"}) + "\n")
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 2, field 'text': ")
    assert "empty or only whitespace" in msg
    assert "Fix:" in msg


@pytest.mark.parametrize("text", ["", '"   "'], ids=["empty", "spaces"])
def test_empty_or_whitespace_text_csv(tmp_path: Path, text: str) -> None:
    msg = error_of(write(tmp_path, "bad.csv", f"text,label\ngood,pos\n{text},neg\n"))
    assert re.match(r"bad\.csv, line \d+, field 'text': ", msg)
    assert "empty or only whitespace" in msg
    assert "Fix:" in msg


def test_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", b"text,label\nhello,pos\ncaf\xe9,neg\n")
    msg = error_of(path)
    assert msg.startswith("bad.csv, line 3: ")
    assert "not valid UTF-8" in msg
    assert "0xe9" in msg
    assert "byte offset 24" in msg  # len(b"text,label\nhello,pos\ncaf")
    assert "encoding is unknown" in msg
    assert "convert it to UTF-8" in msg
    assert "iconv" in msg


def test_invalid_utf8_offset_counts_the_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", b'\xef\xbb\xbf{"text": "a", "label": "x"}\n'
                                        b'{"text": "caf\xe9", "label": "y"}\n')
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 2: ")
    offset = len(b'\xef\xbb\xbf{"text": "a", "label": "x"}\n{"text": "caf')
    assert f"byte offset {offset}" in msg


def test_invalid_utf8_in_txt_for_read_texts(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "in.txt", b"ok\n\xff\xfe\n"), reader=read_texts)
    assert msg.startswith("in.txt, line 2: ") and "UTF-8" in msg


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl",
                 '{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 3: ")
    assert "malformed JSON" in msg
    assert "column" in msg
    assert "Fix:" in msg


def test_jsonl_line_is_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n')
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 2: ")
    assert "JSON object" in msg
    assert "a list" in msg


@pytest.mark.parametrize(("value", "kind"), [("3", "a number"), ("null", "null"),
                                             ("true", "a boolean"), ('["a"]', "a list")])
def test_jsonl_text_not_a_string(tmp_path: Path, value: str, kind: str) -> None:
    path = write(tmp_path, "bad.jsonl",
                 '{"text": "a", "label": "x"}\n{"text": ' + value + ', "label": "y"}\n')
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 2, field 'text': ")
    assert f"expected a string, got {kind}" in msg
    # a null has no text to quote
    assert ("Fix: fill in the text or remove the row" if kind == "null"
            else "Fix: put the text in quotes") in msg


@pytest.mark.parametrize(("value", "kind"), [("true", "a boolean"), ("1.5", "a number"),
                                             ('{"a": 1}', "an object")])
def test_jsonl_label_of_wrong_type(tmp_path: Path, value: str, kind: str) -> None:
    path = write(tmp_path, "bad.jsonl", '{"text": "a", "label": ' + value + "}\n")
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 1, field 'label': ")
    assert kind in msg


def test_jsonl_null_label_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"text": "a", "label": null}\n')
    msg = error_of(path)
    assert msg.startswith("bad.jsonl, line 1, field 'label': ")
    assert "label is empty" in msg


@pytest.mark.parametrize(("row", "found"), [("a,b,c", 3), ("just text", 1)])
def test_csv_wrong_number_of_fields(tmp_path: Path, row: str, found: int) -> None:
    msg = error_of(write(tmp_path, "bad.csv", f"text,label\ngood,pos\n{row}\n"))
    assert re.match(r"bad\.csv, line \d+: ", msg)
    assert f"expected 2 comma-separated fields (text, label), found {found}" in msg
    assert "Fix:" in msg and "quote" in msg


@pytest.mark.parametrize(("rows", "line", "words"), [
    ('good,pos\n"first\nsecond",neg\n"never closed,pos\nbad,neg\n', 5,
     "a quoted field that starts in this row is never closed"),
    ('good,pos\n"a"b,neg\n', 3, "cannot parse the row (',' expected after '\"')"),
])
def test_csv_broken_quotes_name_the_row(tmp_path: Path, rows: str, line: int,
                                        words: str) -> None:
    """An unclosed quote used to read the rest of the file as one text, without a word."""
    msg = error_of(write(tmp_path, "bad.csv", "text,label\n" + rows))
    assert msg.startswith(f"bad.csv, line {line}: {words}")
    assert "Fix:" in msg and '""' in msg


def test_tsv_wrong_number_of_fields(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.tsv", "text\tlabel\na\tb\tc\n"))
    assert re.match(r"bad\.tsv, line \d+: ", msg)
    assert "expected 2 tab-separated fields" in msg
    assert "stray tabs" in msg


def test_single_class() -> None:
    ex = read_examples([("a", "pos"), ("b", "pos"), ("c", "pos")])
    with pytest.raises(DataError) as info:
        label_set(ex)
    msg = str(info.value)
    assert msg.startswith("<list>: ")
    assert "'pos'" in msg
    assert "at least two" in msg
    assert "Fix:" in msg


def test_single_class_from_file_names_file_and_task(tmp_path: Path) -> None:
    ex = read_examples(write(tmp_path, "one.csv", "text,label\na,pos\nb,pos\n"))
    with pytest.raises(DataError, match=r"^one\.csv: .*'pos'.*classify needs at least two"):
        label_set(ex, "classify")


def test_label_set_without_labels() -> None:
    with pytest.raises(DataError, match="no labels"):
        label_set(read_texts(["a", "b"]))


def test_text_over_limit_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "big.jsonl",
                 '{"text": "a", "label": "x"}\n'
                 + json.dumps({"text": "x" * (MAX_TEXT_CHARS + 1), "label": "y"}) + "\n")
    msg = error_of(path)
    assert msg.startswith("big.jsonl, line 2, field 'text': ")
    assert f"{MAX_TEXT_CHARS + 1:,}" in msg
    assert f"limit of {MAX_TEXT_CHARS:,}" in msg
    assert "Fix:" in msg


def test_text_over_limit_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", f"text,label\n{'x' * (MAX_TEXT_CHARS + 1)},pos\n")
    msg = error_of(path)
    assert re.match(r"big\.csv, line \d+, field 'text': ", msg)
    assert f"limit of {MAX_TEXT_CHARS:,}" in msg


def test_label_over_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "big.jsonl",
                 json.dumps({"text": "a", "label": "y" * (MAX_LABEL_CHARS + 1)}) + "\n")
    msg = error_of(path)
    assert msg.startswith("big.jsonl, line 1, field 'label': ")
    assert f"limit of {MAX_LABEL_CHARS}" in msg
    assert "Fix:" in msg


def test_text_over_limit_python_object() -> None:
    msg = error_of([("x" * (MAX_TEXT_CHARS + 1), "pos")])
    assert msg.startswith("<list>, index 0, field 'text': ")
    assert f"limit of {MAX_TEXT_CHARS:,}" in msg


@pytest.mark.parametrize("name", ["data.xlsx", "data", "data.yaml"])
def test_unknown_file_extension(tmp_path: Path, name: str) -> None:
    msg = error_of(write(tmp_path, name, "text,label\na,b\n"))
    assert msg.startswith(f"{name}: unknown file type")
    assert ".csv" in msg and ".jsonl" in msg and ".json (an array of objects)" in msg


def test_nonexistent_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    msg = error_of(missing)
    assert "missing.csv" in msg
    assert "no such file" in msg
    assert "Fix:" in msg


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    assert "dir.csv is a directory, not a data file" in error_of(tmp_path / "dir.csv")
    assert error_of(tmp_path) == (f"{tmp_path} is a directory, not a data file. Fix: give the "
                                  "path of a file in it.")  # was "unknown file type ''"


def test_txt_without_labels_cannot_train(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "in.txt", "one\ntwo\n"))
    assert msg.startswith("in.txt: a .txt file holds texts only")
    assert "Fix: use .csv, .tsv, .jsonl or .json" in msg


# --------------------------------------------------------------------------------------------
# Bad inputs: Python objects
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [5, 3.5, None, object()], ids=["int", "float", "None", "object"])
def test_unsupported_python_object(data) -> None:
    msg = error_of(data)
    assert f"a {type(data).__name__}" in msg
    assert "Fix:" in msg
    assert "DataFrame" in msg


def test_dict_of_columns_with_different_lengths() -> None:
    msg = error_of({"text": ["a", "b", "c"], "label": ["x", "y"]})
    assert msg.startswith("<dict>: ")
    assert "different lengths" in msg
    assert "'text': 3" in msg and "'label': 2" in msg
    assert "Fix:" in msg


def test_empty_list_and_dict() -> None:
    assert "no examples" in error_of([])
    assert "no examples" in error_of({"text": [], "label": []})


def test_list_item_of_wrong_shape() -> None:
    msg = error_of([("a", "x"), ("b", "y", "z")])
    assert msg.startswith("<list>, index 1: ")
    assert "(text, label) pair" in msg


def test_read_texts_rejects_pairs() -> None:
    msg = error_of(["a", ("b", "y")], reader=read_texts)
    assert msg.startswith("<list>, index 1: ")
    assert "expected a text or a dict with one, got tuple ('b', 'y')" in msg  # it said "or a
    assert "pair" not in msg.split("Fix")[0]  # (text, label) pair, got tuple"


def test_list_empty_text_names_index() -> None:
    msg = error_of(["good", "  "], reader=read_texts)
    assert msg.startswith("<list>, index 1, field 'text': ")
    assert "empty" in msg


def test_list_text_not_a_string() -> None:
    msg = error_of([{"text": 7, "label": "x"}])
    assert msg.startswith("<list>, index 0, field 'text': expected a string, got a number")


def test_list_of_dicts_missing_text() -> None:
    msg = error_of([{"text": "a", "label": "x"}, {"body": "b", "label": "y"}])
    assert msg.startswith("<list>, index 1: field 'text' is missing")
    assert "--text-column" in msg


def test_list_of_dicts_empty_label() -> None:
    msg = error_of([{"text": "a", "label": "x"}, {"text": "b", "label": ""}])
    assert msg.startswith("<list>, index 1, field 'label': ")
    assert "label is empty" in msg


def test_dict_of_columns_empty_text_names_index() -> None:
    msg = error_of({"text": ["a", ""], "label": ["x", "y"]})
    assert msg.startswith("<dict>, index 1, field 'text': ")


def test_dataframe_empty_text_names_row() -> None:
    pd = pytest.importorskip("pandas")
    msg = error_of(pd.DataFrame({"text": ["a", " "], "label": ["x", "y"]}))
    assert msg.startswith("<DataFrame>, row 1, field 'text': ")


def test_dataframe_missing_text_column() -> None:
    pd = pytest.importorskip("pandas")
    msg = error_of(pd.DataFrame({"review": ["a"], "label": ["x"]}))
    assert "<DataFrame>, row 0: field 'text' is missing" in msg
    assert "review, label" in msg


# --------------------------------------------------------------------------------------------
# Every message names a fix (the module's promise)
# --------------------------------------------------------------------------------------------



@pytest.mark.parametrize(("name", "content"), [
    ("a.csv", "text,label\na,\n"),
    ("a.csv", "text,label\n,pos\n"),
    ("a.csv", "text,label\na,b,c\n"),
    ("a.csv", "review,label\na,b\n"),
    ("a.csv", "text,label\n"),
    ("a.csv", b"text,label\n\xe9,x\n"),
    ("a.jsonl", '{"text": 1, "label": "x"}\n'),
    ("a.jsonl", "{oops\n"),
    pytest.param("a.jsonl", '["a", "x"]\n', id="jsonl-list"),
    pytest.param("a.jsonl", '{"text": "a", "label": true}\n', id="bool-label"),
    ("a.xlsx", "x"),
])
def test_file_error_messages_give_a_fix(tmp_path: Path, name: str, content) -> None:
    assert "Fix:" in error_of(write(tmp_path, name, content))


@pytest.mark.parametrize("data", [
    5,
    {"text": ["a"], "label": []},
    [("a", "")],
    pytest.param([("a", "x", "y")], id="list-item-shape"),
])
def test_object_error_messages_give_a_fix(data) -> None:
    assert "Fix:" in error_of(data)


# --------------------------------------------------------------------------------------------
# Line numbers
# --------------------------------------------------------------------------------------------

def test_jsonl_line_numbers_after_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "r.jsonl",
                 '\n{"text": "a", "label": "x"}\n\n\n{"text": "", "label": "y"}\n')
    assert error_of(path).startswith("r.jsonl, line 5, field 'text'")


def test_txt_blank_lines_are_skipped_and_places_keep_line_numbers(tmp_path: Path) -> None:
    examples = read_texts(write(tmp_path, "in.txt", "one\n\n   \ntwo\n"))
    assert examples.texts == ["one", "two"]
    assert examples.places == ["line 1", "line 4"]


def test_utf8_error_line_after_multiline_field(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", b'text,label\n"a\nb\nc",x\nd,\xe9\n')
    assert error_of(path).startswith("r.csv, line 5: ")


def test_csv_places_are_the_rows_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "text,label\ngood,pos\nbad,neg\n")
    assert read_examples(path).places == ["line 2", "line 3"]


def test_tsv_places_are_the_rows_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "r.tsv", "text\tlabel\ngood\tpos\nbad\tneg\n")
    assert read_examples(path).places == ["line 2", "line 3"]


@pytest.mark.parametrize(("content", "line", "field"), [
    ("text,label\ngood,pos\nbad,\n", 3, "label"),
    ("text,label\ngood,pos\n,neg\n", 3, "text"),
    ("text,label\n\n\ngood,pos\n\nbad,\n", 6, "label"),
    ('text,label\n"one\ntwo\nthree",pos\nbad,\n', 5, "label"),
    ('text,label\n"x, y",pos\n"multi\nline",neg\n\nc,\n', 6, "label"),
    ("text,label\r\ngood,pos\r\n\r\nbad,\r\n", 4, "label"),
], ids=["empty-label", "empty-text", "blank-lines", "multiline", "mixed", "crlf"])
def test_csv_line_numbers(tmp_path: Path, content: str, line: int, field: str) -> None:
    msg = error_of(write(tmp_path, "bad.csv", content))
    assert msg.startswith(f"bad.csv, line {line}, field '{field}'")


def test_csv_wrong_field_count_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "bad.csv", 'text,label\n"a\nb",x\n\nc,d,e\n'))
    assert msg.startswith("bad.csv, line 5: ")


def test_csv_text_over_limit_line(tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", f"text,label\na,b\n{'x' * (MAX_TEXT_CHARS + 1)},pos\n")
    assert error_of(path).startswith("big.csv, line 3, field 'text'")


def test_csv_label_over_limit_line(tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", f"text,label\na,{'y' * (MAX_LABEL_CHARS + 1)}\n")
    msg = error_of(path)
    assert msg.startswith("big.csv, line 2, field 'label'")
    assert f"limit of {MAX_LABEL_CHARS}" in msg


def test_csv_bom_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbftext,label\r\na,x\r\n,y\r\n")
    assert error_of(path).startswith("bom.csv, line 3, field 'text'")


@pytest.mark.parametrize("value", [True, None, "high", float("inf"), [1]])
def test_number_field_names_the_value_given(value: object) -> None:
    with pytest.raises(DataError) as info:  # a bool was reported as "got None"
        number_field(value, "p.jsonl, line 1", "score", "give a numeric score.")
    assert str(info.value) == (f"p.jsonl, line 1, field 'score': expected a number, got "
                               f"{value!r}. Fix: give a numeric score.")
    assert number_field("0.5", "x", "score", "") == 0.5


@pytest.mark.parametrize("text", ["\x00", "\u200f", "\ufeff ", "\u200b\t"])
def test_invisible_only_text_is_empty(text: str) -> None:
    # NUL, marks and zero-width spaces passed the check and were predicted as an empty input
    assert "the text is empty or only whitespace" in error_of([text], reader=read_texts)
    assert read_texts(["ok" + text]).texts == ["ok" + text]


def test_bytes_are_no_data() -> None:
    # a bytes object is a sequence of ints: it said "expected a string, got int"
    assert error_of(b"text,label\na,x\n").startswith("Cannot read examples from bytes. Fix: ")
