"""`funcformer map`: a function over CSV, TSV, JSONL and Parquet files, locally and on Ray."""

from __future__ import annotations

import csv
import itertools
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_reviews, run_cli

import funcformer
from funcformer import DataError, MissingExtra, TaskError
from funcformer._map import map as fmap
from funcformer._tables import TableWriter, csv_read_options


@pytest.fixture(scope="module")
def fn_dir(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, progress=False,
                          method="head")
    return fn.save(tmp_path_factory.mktemp("map") / "sentiment")


@pytest.fixture(scope="module")
def fn(fn_dir: Path) -> funcformer.Function:
    return funcformer.load(fn_dir)


def rows_of(n: int = 60) -> list[dict[str, str]]:
    """Unique texts (so order is checkable), an id column and a gold label column."""
    reviews = make_reviews(n, seed=3)[:n]
    return [{"id": f"r{i}", "text": f"{text} {i}", "label": label}
            for i, (text, label) in enumerate(reviews)]


def write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    kind = path.suffix
    if kind == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == ".tsv" else {}
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), **options)
            writer.writeheader()
            writer.writerows(rows)
    return path


def read_table(path: Path) -> list[dict]:
    """Rows of an output file or directory of part files (in file-name order)."""
    if path.is_dir():
        return [row for part in sorted(path.iterdir()) for row in read_table(part)]
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json"):
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if path.suffix == ".tsv" else {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, **options))
    for row in rows:  # CSV holds numbers and nested fields as text
        row["score"] = float(row["score"])
        row["scores"] = json.loads(row["scores"])
    return rows


def assert_matches(out: list[dict], given: list[dict], fn: funcformer.Function,
                   tolerance: float = 1e-5) -> None:
    expected = fn([r["text"] for r in given])
    assert len(out) == len(given)
    for row, source, want in zip(out, given, expected, strict=True):
        assert {k: row[k] for k in source} == source  # input columns unchanged, in order
        assert row["predicted_label"] == want.label
        assert row["score"] == pytest.approx(want.score, abs=tolerance)
        assert row["scores"] == pytest.approx(want.scores, abs=tolerance)


# --------------------------------------------------------------------------------------------
# Local engine
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "target"), [
    ("csv", "csv"), ("csv", "jsonl"), ("jsonl", "parquet"), ("parquet", "csv"),
    ("tsv", "tsv"), ("parquet", "jsonl"),
])
def test_local_map_adds_results_in_input_order(tmp_path: Path, fn_dir: Path, fn, source: str,
                                               target: str) -> None:
    given = rows_of(45)
    path = write_table(tmp_path / f"in.{source}", given)
    stats = fmap(fn_dir, path, tmp_path / f"out.{target}", batch_size=8, progress=False)
    assert stats["rows"] == 45 and stats["engine"] == "local" and stats["rows_per_second"] > 0
    out = read_table(tmp_path / f"out.{target}")
    assert list(out[0]) == ["id", "text", "label", "predicted_label", "score", "scores"]
    assert_matches(out, given, fn)


def test_nested_results_stay_nested_in_parquet(tmp_path: Path, fn_dir: Path) -> None:
    path = write_table(tmp_path / "in.csv", [{"text": "the food was great"}])
    fmap(fn_dir, path, tmp_path / "out.parquet", progress=False)
    schema = pq.read_schema(tmp_path / "out.parquet")
    assert pa.types.is_struct(schema.field("scores").type)
    assert schema.field("label").type == pa.string()  # no gold label: the result keeps its name


def test_chunk_size_does_not_change_results(tmp_path: Path, fn_dir: Path) -> None:
    path = write_table(tmp_path / "in.jsonl", rows_of(30))
    fmap(fn_dir, path, tmp_path / "a.jsonl", batch_size=1, progress=False)
    fmap(fn_dir, path, tmp_path / "b.jsonl", batch_size=1000, progress=False)
    a, b = read_table(tmp_path / "a.jsonl"), read_table(tmp_path / "b.jsonl")
    assert [r["predicted_label"] for r in a] == [r["predicted_label"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-5)


def test_text_column_and_values_kept_verbatim(tmp_path: Path, fn_dir: Path, fn) -> None:
    path = tmp_path / "in.csv"
    path.write_text('n,review\n007,"the food was great, really"\n1e3,"the room, was ""dirty"""\n',
                    "utf-8")
    fmap(fn_dir, path, tmp_path / "out.jsonl", text_column="review", progress=False)
    out = read_table(tmp_path / "out.jsonl")
    assert [r["n"] for r in out] == ["007", "1e3"]  # CSV values stay text, as written
    assert out[1]["review"] == 'the room, was "dirty"'
    assert out[0]["label"] == fn("the food was great, really").label


def test_header_names_are_stripped_as_the_columns_check_strips_them(tmp_path: Path,
                                                                    fn_dir: Path, fn) -> None:
    # ' review ' passed the column check (stripped) but pyarrow kept it: internal KeyError
    for name, text in (("in.csv", " n , review \n007,the food was great\n"),
                       ("in.tsv", " n \t review \n007\tthe food was great\n"),
                       ("quoted.csv", '"n\nb",review\n007,the food was great\n')):
        (tmp_path / name).write_text(text, "utf-8")
        out = tmp_path / f"{name}.jsonl"
        fmap(fn_dir, tmp_path / name, out, text_column="review", progress=False)
        rows = read_table(out)  # one row (a header over two lines gave a garbage row), as text
        assert [r["review"] for r in rows] == ["the food was great"]
        assert [r["n" if "n" in r else "n\nb"] for r in rows] == ["007"]
        assert rows[0]["label"] == fn("the food was great").label
    # a remote input is read by Ray as it is: the options must not open it here
    assert csv_read_options(Path("s3://bucket/in.csv"), "csv", ["review"])["convert_options"]


def test_output_directory_gets_a_part_file(tmp_path: Path, fn_dir: Path, fn) -> None:
    given = rows_of(12)
    path = write_table(tmp_path / "in.parquet", given)
    fmap(fn_dir, path, f"{tmp_path / 'out'}/", progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-00000.parquet"]
    assert_matches(read_table(tmp_path / "out"), given, fn)


def test_pair_function_reads_its_two_columns(tmp_path: Path, tiny_backbone: Path) -> None:
    reviews = [text for text, _ in make_reviews(12)]
    train = [{"first": a, "second": b, "score": float(i % 3)}
             for i, (a, b) in enumerate(itertools.pairwise(reviews))]
    pair = funcformer.train("pair", train, backbone=tiny_backbone, method="head", epochs=1,
                            text_a_column="first", text_b_column="second", progress=False)
    given = [{"first": a, "second": b} for a, b in zip(reviews, reviews[3:], strict=False)]
    fmap(pair.save(tmp_path / "pair"), write_table(tmp_path / "in.csv", given),
         tmp_path / "out.jsonl", batch_size=4, progress=False)
    out = read_table(tmp_path / "out.jsonl")
    assert [{k: r[k] for k in ("first", "second")} for r in out] == given
    want = pair([(r["first"], r["second"]) for r in given])
    assert [r["score"] for r in out] == pytest.approx([w.score for w in want], abs=1e-5)
    texts = write_table(tmp_path / "texts.csv", [{"text": "the food was great"}])
    with pytest.raises(DataError, match=r"no column 'first'.*reads columns first and second"):
        fmap(tmp_path / "pair", texts, tmp_path / "out.csv", progress=False)


def test_writer_merges_parquet_chunks_whose_types_differ(tmp_path: Path) -> None:
    spans = pa.list_(pa.struct([("label", pa.string()), ("start", pa.int64())]))
    with TableWriter(tmp_path / "out.parquet", "parquet") as writer:
        writer.write(pa.table({"text": ["a"], "spans": pa.array([[]])}))  # list<null>
        writer.write(pa.table({"text": ["b"], "spans": pa.array([[{"label": "X", "start": 0}]],
                                                                spans)}))
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("spans").type == spans
    assert table.to_pylist() == [{"text": "a", "spans": []},
                                 {"text": "b", "spans": [{"label": "X", "start": 0}]}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no parts left over


def test_parquet_chunks_whose_types_cannot_merge_name_the_file_and_fix(tmp_path: Path) -> None:
    merge_error = pytest.raises(DataError, match=r"out\.parquet: the rows' column types differ "
                                r"between chunks and cannot be merged .*Fix: write \.jsonl")
    with merge_error, TableWriter(tmp_path / "out.parquet", "parquet") as writer:
        writer.write(pa.table({"id": [1], "text": ["a"]}))
        writer.write(pa.table({"id": ["x7"], "text": ["b"]}))  # a number, then a text
    assert list(tmp_path.iterdir()) == []  # neither the parts nor a half-written output


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

def test_missing_text_column_names_file_column_and_fix(tmp_path: Path, fn_dir: Path) -> None:
    path = write_table(tmp_path / "in.csv", [{"review": "the food was great"}])
    with pytest.raises(DataError, match=r"in\.csv: no column 'text' \(columns: review\).*"
                                        r"--text-column"):
        fmap(fn_dir, path, tmp_path / "out.csv", progress=False)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("in.xlsx", "x", r"unknown input file type '\.xlsx'.*Fix: use \.csv"),
    ("in.jsonl", '{"text": "fine"}\n{"text": broken}\n', r"in\.jsonl, line 2: malformed JSON"),
    ("in.jsonl", '{"text": "fine"}\n["a list"]\n', r"in\.jsonl, line 2: expected a JSON object"),
    ("in.csv", "text\nthe food was great\n   \n",
     r"in\.csv, row 2 after the header, field 'text': the text is empty"),
    ("in.jsonl", '{"text": "ok"}\n{"text": 5}\n', r"in\.jsonl, row 2, field 'text': expected a "
                                                  "string"),
    ("in.parquet", "not parquet", r"in\.parquet: not a readable Parquet file"),
    # it wrote a 0-byte CSV, without even a header
    ("in.csv", "text\n", r"in\.csv: no rows to run over \(only a header, or nothing\)"),
    # pyarrow's message named no line
    ("in.csv", "text\ngood\nbad,extra\n", r"in\.csv, line 3: expected 1 comma-separated "
                                           r"fields \(text\), found 2\. Fix: "),
    ("in.tsv", "text\tid\ngood\t1\n\nbad\t2\t3\n", r"in\.tsv, line 4: expected 2 "
                                                   r"tab-separated fields"),
    # pyarrow would read the rest of the file as that one text
    ("in.csv", 'text\ngood\n"never closed\nfine\nmore\n',
     r"in\.csv, line 3: a quoted field that starts in this row is never closed"),
])
def test_bad_input_is_a_data_error(tmp_path: Path, fn_dir: Path, name: str, content: str,
                                   message: str) -> None:
    path = tmp_path / name
    path.write_text(content, "utf-8")
    with pytest.raises(DataError, match=message):
        fmap(fn_dir, path, tmp_path / "out.jsonl", batch_size=1, progress=False)
    assert not (tmp_path / "out.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_a_column_named_twice_is_a_data_error(tmp_path: Path, fn_dir: Path, kind: str) -> None:
    """It was 'internal error: KeyError: Field "text" exists 2 times in schema'."""
    path = tmp_path / f"in.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]),
                       path)
    else:
        path.write_text("text,text\nhello,world\n".replace(",", "," if kind == "csv" else "\t"))
    where = ": the Parquet schema" if kind == "parquet" else ", line 1: the header"
    with pytest.raises(DataError, match=rf"in\.{kind}{where} names the column 'text' 2 "
                                        r"times \(columns: text, text\)\. Fix: "):
        fmap(fn_dir, path, tmp_path / "out.csv", progress=False)


@pytest.mark.parametrize("batch_size", [1, 2, 256])
def test_jsonl_values_of_two_types_name_the_line_and_field(tmp_path: Path, fn_dir: Path,
                                                           batch_size: int) -> None:
    """In one chunk it said 'a field holds values of different types (Expected bytes, got a
    'int' object)', naming neither; one line per chunk reached the text check instead."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "good"}\n\n{"text": 5}\n', "utf-8")
    message = (r"in\.jsonl, row 2, field 'text': expected a string" if batch_size == 1 else
               r"in\.jsonl, line 3, field 'text': a number, where the lines before hold a "
               r"string\. Fix: ")
    with pytest.raises(DataError, match=message):
        fmap(fn_dir, path, tmp_path / "out.jsonl", batch_size=batch_size, progress=False)
    path.write_text('{"text": "a", "n": [1]}\n{"text": "b", "n": ["x"]}\n', "utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl, line 2, field 'n': a value that does not "
                                        r"fit one column \(Could not convert 'x'"):
        fmap(fn_dir, path, tmp_path / "out.jsonl", batch_size=256, progress=False)


@pytest.mark.parametrize("batch_size", [1, 256])
@pytest.mark.parametrize("target", ["jsonl", "csv", "parquet"])
def test_a_jsonl_key_first_seen_late_is_kept(tmp_path: Path, fn_dir: Path, target: str,
                                             batch_size: int) -> None:
    """A key absent from the first chunk's lines was dropped from the output, silently.
    JSONL keeps each line's own keys; CSV and Parquet get the column, empty where absent."""
    path = tmp_path / "in.jsonl"
    lines = [{"text": "the food was great"}] * 3 + [{"text": "x", "extra": "k"},
                                                    {"text": "y", "extra": None}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), "utf-8")
    fmap(fn_dir, path, tmp_path / f"out.{target}", batch_size=batch_size, progress=False)
    if target == "jsonl":
        out = read_table(tmp_path / "out.jsonl")
        assert [[k for k in row if k in ("text", "extra")] for row in out] == \
            [["text"]] * 3 + [["text", "extra"]] * 2
        assert [row.get("extra", "absent") for row in out] == ["absent"] * 3 + ["k", None]
    elif target == "csv":
        with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
            out = list(csv.DictReader(handle))
        assert list(out[0])[:3] == ["text", "extra", "label"]
        assert [row["extra"] for row in out] == ["", "", "", "k", ""]
    else:
        table = pq.read_table(tmp_path / "out.parquet")
        assert table.column_names[:3] == ["text", "extra", "label"]
        assert table.column("extra").to_pylist() == [None, None, None, "k", None]
        assert table.schema.metadata is None or b"funcformer.absent" not in \
            table.schema.metadata


@pytest.mark.parametrize("output", ["out/", "new/sub/out.csv", "kept/"])
def test_a_failed_run_removes_the_directories_it_made(tmp_path: Path, fn_dir: Path,
                                                      output: str) -> None:
    """A bad row in the sixth chunk left the empty out/ that map had made."""
    rows = [{"text": f"the food was great {i}"} for i in range(20)] + [{"text": " "}]
    path = write_table(tmp_path / "in.csv", rows + rows[:5])
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError, match=r"in\.csv, row 21 after the header, field 'text': "
                                        "the text is empty"):
        fmap(fn_dir, path, f"{tmp_path}/{output}", batch_size=4, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "kept"]
    assert not any((tmp_path / "kept").iterdir())


def test_utf16_input_gets_a_clear_error(tmp_path: Path, fn_dir: Path) -> None:
    # Excel's "Unicode Text": train/eval read it (docs/data.md), map's streaming readers do not
    path = tmp_path / "in.csv"
    path.write_bytes("text\nthe food was great\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"in\.csv: the file is UTF-16 .* iconv -f UTF-16 -t "
                                        r"UTF-8 in\.csv > fixed\.csv"):
        fmap(fn_dir, path, tmp_path / "out.jsonl", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def test_bad_outputs_and_settings(tmp_path: Path, fn_dir: Path) -> None:
    path = write_table(tmp_path / "in.csv", rows_of(3))
    with pytest.raises(DataError, match="no such file"):
        fmap(fn_dir, tmp_path / "missing.csv", tmp_path / "out.csv", progress=False)
    with pytest.raises(DataError, match=r"unknown output file type '\.txt'.*end it with /"):
        fmap(fn_dir, path, tmp_path / "out.txt", progress=False)
    with pytest.raises(DataError, match="the output is the input file"):
        fmap(fn_dir, path, path, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.csv").write_text("x\n")
    with pytest.raises(DataError, match="not empty"):
        fmap(fn_dir, path, tmp_path / "full", progress=False)
    for under_a_file in (f"{path}/out.csv", f"{path}/parts/"):  # said before any row runs
        with pytest.raises(DataError, match=r"in\.csv is a file, so no directory can be made"):
            fmap(fn_dir, path, under_a_file, progress=False)
    with pytest.raises(TaskError, match="Unknown engine 'spark'"):
        fmap(fn_dir, path, tmp_path / "out.csv", engine="spark", progress=False)
    with pytest.raises(TaskError, match="address applies to engine='ray'"):
        fmap(fn_dir, path, tmp_path / "out.csv", address="auto", progress=False)
    with pytest.raises(TaskError, match="num_actors applies to engine='ray'"):  # was ignored
        fmap(fn_dir, path, tmp_path / "out.csv", num_actors=2, progress=False)
    other = tmp_path / "other-function"  # any function's folder, not only this one's
    other.mkdir()
    (other / "funcformer.json").write_text("{}", "utf-8")
    for inside in (fn_dir / "scored.csv", f"{fn_dir}/parts/", other / "scored.csv"):
        with pytest.raises(DataError, match="the output is inside the function"):
            fmap(fn_dir, path, inside, progress=False)
    with pytest.raises(TaskError, match="'k' is not a call option of classify functions"):
        fmap(fn_dir, path, tmp_path / "out.csv", options={"k": 3}, progress=False)
    with pytest.raises(funcformer.ArtifactError):
        fmap(tmp_path, path, tmp_path / "out.csv", progress=False)
    with pytest.raises(TaskError, match="device 'tpu' is not a torch device"):
        fmap(fn_dir, path, tmp_path / "out.csv", device="tpu", progress=False)
    with pytest.raises(TaskError, match=r"device 'cuda': the Ray engine's actors run on CPUs\. "
                                        r"Fix: engine='local'"):  # said before Ray is needed
        fmap(fn_dir, path, tmp_path / "out.csv", engine="ray", device="cuda", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "in.csv", "other-function"]


def test_the_local_engine_loads_the_function_on_the_device(
        tmp_path: Path, fn_dir: Path, fn, monkeypatch: pytest.MonkeyPatch) -> None:
    """'cuda:1' reaches `load` (recorded, then loaded on the CPU: this machine has no GPU)."""
    import funcformer._function

    devices = []
    real_load = funcformer._function.load

    def load(path: Path, *, device: str = "cpu", **kwargs: object) -> funcformer.Function:
        devices.append(device)
        return real_load(path, **kwargs)

    monkeypatch.setattr("funcformer._backbone.check_device", lambda device: None)
    monkeypatch.setattr(funcformer._function, "load", load)
    given = rows_of(5)
    path = write_table(tmp_path / "in.csv", given)
    fmap(fn_dir, path, tmp_path / "out.jsonl", device="cuda:1", progress=False)
    assert devices == ["cuda:1"]
    assert_matches(read_table(tmp_path / "out.jsonl"), given, fn)


def test_ray_engine_without_ray_names_the_extra(tmp_path: Path, fn_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    path = write_table(tmp_path / "in.csv", rows_of(3))
    with pytest.raises(MissingExtra, match=r"pip install 'funcformer\[ray\]'"):
        fmap(fn_dir, path, tmp_path / "out.csv", engine="ray", progress=False)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def test_cli_map(capsys, tmp_path: Path, fn_dir: Path, fn) -> None:
    given = rows_of(10)
    path = write_table(tmp_path / "in.tsv", given)
    code = run_cli("map", fn_dir, path, tmp_path / "out.csv", "--batch-size", "4")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Wrote 10 rows to" in out and "local engine" in out
    assert_matches(read_table(tmp_path / "out.csv"), given, fn)


def test_cli_map_help_and_errors(capsys, tmp_path: Path, fn_dir: Path) -> None:
    assert run_cli("map", "--help") == 0
    out = capsys.readouterr().out
    for option in ("--engine", "--address", "--text-column", "--batch-size", "--num-actors",
                   "--set", "--cache", "--device"):
        assert option in out
    path = write_table(tmp_path / "in.csv", rows_of(3))
    for args, message in ([("--text-column", "body"), "no column 'body'"],
                          [("--set", "k=3"), "'k' is not a call option"],
                          [("--engine", "spark"), "Unknown engine"],
                          [("--device", "tpu"), "device 'tpu' is not a torch device"],
                          [("--engine", "ray", "--device", "cuda:0"), "actors run on CPUs"]):
        assert run_cli("map", fn_dir, path, tmp_path / "out.csv", *args) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# Ray engine: a local Ray with 2 CPUs, compared row by row with the local engine
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_matches_the_local_engine_row_by_row(local_ray, tmp_path: Path, fn_dir: Path,
                                                 fn) -> None:
    source, target = "csv", "jsonl"
    given = rows_of(150)
    path = write_table(tmp_path / f"in.{source}", given)
    local = fmap(fn_dir, path, tmp_path / f"local.{target}", progress=False)
    remote = fmap(fn_dir, path, tmp_path / f"ray.{target}", engine="ray", batch_size=16,
                  progress=False)
    assert remote["rows"] == local["rows"] == 150 and remote["engine"] == "ray"
    out = read_table(tmp_path / f"ray.{target}")
    assert out[0].keys() == read_table(tmp_path / f"local.{target}")[0].keys()
    assert_matches(out, given, fn, tolerance=1e-4)  # other batch shapes round differently
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"in.{source}", f"local.{target}", f"ray.{target}"])  # the parts directory is gone


@pytest.mark.ray
def test_ray_writes_part_files_into_a_directory(local_ray, tmp_path: Path, fn_dir: Path,
                                                fn, capsys) -> None:
    given = rows_of(80)
    path = write_table(tmp_path / "in.parquet", given)
    code = run_cli("map", fn_dir, path, f"{tmp_path / 'out.csv'}/", "--engine", "ray",
                   "--batch-size", "16", "--num-actors", "2")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Wrote 80 rows" in out
    parts = sorted((tmp_path / "out.csv").iterdir())
    assert parts and all(p.suffix == ".csv" for p in parts)
    assert_matches(read_table(tmp_path / "out.csv"), given, fn, tolerance=1e-4)


@pytest.mark.ray
def test_ray_bad_row_is_a_data_error(local_ray, tmp_path: Path, fn_dir: Path) -> None:
    path = write_table(tmp_path / "in.jsonl", [*rows_of(5), {"id": "x", "text": " ",
                                                             "label": "positive"}])
    with pytest.raises(DataError, match=r"in\.jsonl, a row in a Ray batch.*the text is empty"):
        fmap(fn_dir, path, tmp_path / "out.jsonl", engine="ray", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_the_plan_carries_the_allowed_head_factories(tmp_path: Path, fn_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray actors on a cluster lack this process's environment: the head factories allowed
    here (FUNCFORMER_HEAD_FACTORIES) travel in the plan that every actor loads from."""
    from funcformer._map import make_plan

    source = tmp_path / "in.csv"
    source.write_text("text\ngreat food\n", "utf-8")
    monkeypatch.setenv("FUNCFORMER_HEAD_FACTORIES", "pkg.heads:b, pkg.heads:a")
    plan = make_plan(fn_dir, source, tmp_path / "out.csv", text_column="text", batch_size=8,
                     options={}, cache=None, device="cpu")
    assert plan.head_factories == ("pkg.heads:a", "pkg.heads:b")
