"""`map`: run a function over a table file (CSV, TSV, JSONL, Parquet), here or on Ray.

Each output row is the input row plus the function's result fields: a classify function
adds `label`, `score` and `scores`. Nested fields (`scores`, `spans`, `vector`) stay nested
in JSONL and Parquet and are JSON text in CSV and TSV. A result field named like an input
column is written as `predicted_<field>`, so labelled data keeps its gold column.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._artifact import check_writable, function_home
from ._data import at_place
from ._errors import DataError, TaskError, require
from ._tables import FORMATS, TableWriter, column_names, count_rows, file_format, read_chunks

PathLike = str | os.PathLike[str]
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Plan:
    """What a map run reads, computes and writes; sent as is to every Ray actor."""

    function: str
    """The function directory (absolute, so actors find it whatever their working dir)."""
    input: str
    output: str
    """A file, or (`to_directory`) a directory that receives part files."""
    input_format: str
    output_format: str
    to_directory: bool
    columns: tuple[str, ...]
    """The input columns the function reads (the text column, or a pair's two columns)."""
    text_column: str = "text"
    batch_size: int = 256
    options: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None
    names: tuple[str, ...] | None = None
    """The input's columns when known (local files): CSV and TSV read them all as text."""
    device: str = "cpu"
    """The torch device the local engine loads the function on (Ray actors use CPUs)."""
    head_factories: tuple[str, ...] = ()
    """The head factories the caller allowed (FUNCFORMER_HEAD_FACTORIES here): a cluster's
    actors do not have this process's environment."""

    @property
    def source(self) -> str:
        return Path(self.input).name

    @property
    def flat(self) -> bool:
        """Ray's own CSV writer cannot write nested values: annotate turns them into JSON."""
        return self.to_directory and self.output_format == "csv"


def map(function_dir: PathLike, input: PathLike, output: PathLike, *, engine: str = "local",
        address: str | None = None, text_column: str = "text", batch_size: int = 256,
        num_actors: int | None = None, options: dict[str, Any] | None = None,
        cache: str | None = None, progress: bool = True,
        device: str = "cpu") -> dict[str, Any]:
    """Run the function saved in `function_dir` over every row of `input`; write `output`.

    Input and output are .csv, .tsv, .jsonl or .parquet files (the output's extension picks
    its format); an output ending in "/" is a directory of part files, as Ray writes them.
    `engine="local"` streams chunks of `batch_size` rows through this process (constant
    memory); `engine="ray"` runs Ray Data with a pool of `num_actors` actors (default: one
    per CPU), each loading the function once. `address` is a Ray cluster ("auto",
    "ray://head:10001"); None starts a local Ray (or uses the one already started).
    `options` are call options (search: `{"k": 3}`); `cache` an SQLite file (per node) or
    "memory". `device` ("cuda", "cuda:1") runs the local engine's function there; Ray's actors
    each take a CPU, so `engine="ray"` runs on CPUs only. Returns {"rows", "seconds",
    "rows_per_second", "engine", "output"}.

    >>> stats = funcformer.map("fns/sentiment", "reviews.csv", "out.parquet")  # doctest: +SKIP
    >>> stats["rows"], stats["rows_per_second"]                          # doctest: +SKIP
    """
    if engine not in ENGINES:
        raise TaskError(f"Unknown engine '{engine}'. Choose local or ray.")
    check_device(device, engine)
    plan = make_plan(function_dir, input, output, text_column=text_column,
                     batch_size=batch_size, options=options or {}, cache=cache, device=device)
    if num_actors is not None and num_actors < 1:
        raise TaskError(f"num_actors must be at least 1, got {num_actors}.")
    started = time.perf_counter()
    if engine == "ray":
        from ._distributed import run

        rows = run(plan, address=address, num_actors=num_actors, progress=progress)
    else:
        for name, value in (("address", address), ("num_actors", num_actors)):
            if value is not None:
                raise TaskError(f"{name} applies to engine='ray'. Fix: add engine='ray' "
                                "(--engine ray), or leave it out.")
        rows = run_local(plan, progress=progress)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if rows is not None else None,
            "engine": engine, "output": plan.output}


def make_plan(function_dir: PathLike, input: PathLike, output: PathLike, *, text_column: str,
              batch_size: int, options: dict[str, Any], cache: str | None,
              device: str) -> Plan:
    """Check the artifact, the input's format and columns, and the output before any work."""
    from ._artifact import read_manifest
    from ._function import allowed_factories

    if batch_size < 1:
        raise TaskError(f"batch_size must be at least 1, got {batch_size}.")
    manifest = read_manifest(Path(function_dir))
    check_options(manifest.task, options)
    input_format = file_format(input, "input")
    columns = input_columns(manifest, text_column)
    names = None
    if not is_remote(input):
        names = tuple(column_names(Path(input), input_format))
        missing = [c for c in columns if c not in names]
        if missing:
            fix = ("name the text column with --text-column / text_column=" if len(columns) == 1
                   else f"this {manifest.task} function reads columns {' and '.join(columns)} "
                   "(as trained): rename yours to those")
            raise DataError(f"{Path(input).name}: no column '{missing[0]}' (columns: "
                            f"{', '.join(names) or 'none'}). Fix: {fix}.")
    target, output_format, to_directory = output_target(output, input_format, input)
    home = None if is_remote(target) else function_home(target)  # this function or another
    if home is not None:
        raise DataError(f"{output}: the output is inside the function {home}, whose "
                        "artifact it would change. Fix: write it outside that directory.")
    return Plan(function=_absolute(function_dir), input=_absolute(input), output=target,
                input_format=input_format, output_format=output_format,
                to_directory=to_directory, columns=columns, text_column=text_column,
                batch_size=batch_size, options=dict(options),
                cache=None if cache is None else str(cache), names=names, device=device,
                head_factories=tuple(sorted(allowed_factories(()))))


def check_device(device: str, engine: str) -> None:
    """Before any row is read: a device torch does not know or this machine lacks, and a GPU
    for Ray's actors, which each ask Ray for a CPU and no GPU (Ray hides the GPUs from them)."""
    from ._backbone import check_device as check_torch_device

    if engine == "ray" and str(device).partition(":")[0] != "cpu":
        raise TaskError(f"device '{device}': the Ray engine's actors run on CPUs. Fix: "
                        f"engine='local' (--engine local) to run on '{device}', or leave the "
                        "device out.")
    check_torch_device(device)


def input_columns(manifest: Any, text_column: str) -> tuple[str, ...]:
    """The columns a function reads: a pair function's two (as trained), else one."""
    if manifest.task == "pair":
        names = manifest.options.get("columns", {})
        return names.get("text_a", "text_a"), names.get("text_b", "text_b")
    return (text_column,)


def output_target(output: PathLike, input_format: str, input: PathLike) -> tuple[str, str, bool]:
    """(where, format, is a directory): "out/" or an existing directory take part files in
    the input's format (or the one its name says: "scored.parquet/")."""
    text = str(output)
    directory = text.endswith(("/", os.sep)) or Path(text).is_dir()
    suffix = Path(text.rstrip("/" + os.sep)).suffix.lower()
    if directory:
        if not is_remote(text) and Path(text).is_dir() and any(Path(text).iterdir()):
            raise DataError(f"{text}: the output directory is not empty. Fix: remove it or "
                            "choose a new one (part files would mix with old ones).")
        if not is_remote(text):
            check_writable(text, text, DataError)  # before the run, not at its end
        return _absolute(text), FORMATS.get(suffix, input_format), True
    if suffix not in FORMATS:
        raise DataError(f"{text}: unknown output file type '{suffix or '(none)'}'. Fix: name "
                        "it .csv, .tsv, .jsonl or .parquet, or end it with / for a directory "
                        "of part files.")
    if not is_remote(text) and not is_remote(input) and Path(text).resolve() == Path(
            input).resolve():
        raise DataError(f"{text}: the output is the input file. Fix: write to another file.")
    if is_remote(text):
        raise DataError(f"{text}: a remote output must be a directory. Fix: end it with /.")
    check_writable(Path(text).absolute().parent, text, DataError)
    return _absolute(text), FORMATS[suffix], False


def is_remote(path: PathLike) -> bool:
    """An URI such as s3://bucket/data.parquet (Ray reads and writes those itself)."""
    return "://" in str(path)


def _absolute(path: PathLike) -> str:
    return str(path) if is_remote(path) else str(Path(path).resolve())


def run_local(plan: Plan, progress: bool = True) -> int:
    """Stream the input in chunks through one loaded function; returns rows written."""
    from ._engine import Engine
    from ._function import load
    from ._progress import Progress

    if is_remote(plan.input) or is_remote(plan.output):
        raise DataError("The local engine reads and writes local files. Fix: use "
                        "engine='ray' (--engine ray) for remote storage.")
    fn = load(plan.function, device=plan.device, head_factories=plan.head_factories)
    engine = Engine({"fn": fn}, cache=plan.cache)
    path = Path(plan.input)
    target = Path(plan.output)
    if plan.to_directory:
        target = target / f"part-00000.{_extension(plan.output_format)}"
    total = count_rows(path, plan.input_format)
    if total == 0:  # the output would be an empty file, without even a header
        raise DataError(f"{path.name}: no rows to run over (only a header, or nothing). Fix: "
                        "add rows.")
    with removed_on_failure(target.parent), TableWriter(target, plan.output_format) as writer, \
            Progress("map", total=total, enabled=progress) as bar:
        for chunk in read_chunks(path, plan.input_format, plan.batch_size, plan.names):
            writer.write(annotate(fn, engine, chunk, plan, offset=writer.rows))
            bar.advance(chunk.num_rows)
    return writer.rows


@contextlib.contextmanager
def removed_on_failure(directory: Path) -> Iterator[None]:
    """If the block fails, remove `directory` and the parents made with it, when they did not
    exist before and are empty (the writer has discarded its temporary files by then): a failed
    run leaves no empty output directory behind, and never touches one that was there."""
    made = []
    while not directory.exists() and directory != directory.parent:
        made.append(directory)  # deepest first
        directory = directory.parent
    try:
        yield
    except BaseException:
        for path in made:
            with contextlib.suppress(OSError):  # not empty, or already gone: leave it
                path.rmdir()
        raise


def annotate(fn: Any, engine: Any, table: Any, plan: Plan, offset: int | None = None) -> Any:
    """`table` (a pyarrow Table) with the function's result fields appended as columns.

    `offset` is the row number of the table's first row in the input (for messages); Ray
    batches do not know theirs.
    """
    rows = table.select(list(plan.columns)).to_pylist()
    try:
        inputs = fn.read_inputs(rows, text_column=plan.text_column)
    except DataError as err:
        raise DataError(_relocate(str(err), plan.source, offset)) from None
    results = fn.predict(inputs, **plan.options) if plan.options else engine("fn", inputs)
    return add_results(table, [r.to_dict() for r in results], flat=plan.flat)


def add_results(table: Any, results: list[dict[str, Any]], flat: bool = False) -> Any:
    """Append one column per result field (in the result's field order)."""
    pa = require("pyarrow", "map")
    fields = list(dict.fromkeys(name for result in results for name in result))
    for name in fields:
        values = [result.get(name) for result in results]
        if flat:
            values = [json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                      for v in values]
        column = name
        while column in table.column_names:
            column = f"predicted_{column}"
        table = table.append_column(column, pa.array(values))
    return table


def check_options(task: str, options: dict[str, Any]) -> None:
    """Refuse call options the task's `predict` does not take (before anything is loaded)."""
    if not options:
        return
    from ._function import options_text, unknown_option

    predict = function_class(task).predict
    unknown = unknown_option(predict, options)
    if unknown is not None:  # worded as fn(...) words it
        raise TaskError(f"'{unknown}' is not a call option of {task} functions. "
                        f"Options: {options_text(predict)}.")


def function_class(task: str) -> type:
    """The Function subclass that a task's artifacts load as (its `load`'s return type)."""
    import typing

    from ._function import Classifier
    from ._tasks import task_module

    if task == "classify":
        return Classifier
    return typing.get_type_hints(task_module(task).load)["return"]


def _relocate(message: str, source: str, offset: int | None) -> str:
    """'<list>, index 4: ...' -> 'data.csv, row 1005 after the header: ...' (rows counted
    from 1; the other commands' readers name a CSV's file line, one more than this where no
    text spans lines, so the header is said to be left out)."""
    header = " after the header" if source.lower().endswith((".csv", ".tsv")) else ""

    def where(index: int) -> str:
        if offset is None:
            return f"{source}, a row in a Ray batch (engine='local' names its row number)"
        return f"{source}, row {offset + index + 1}{header}"

    return at_place(message, where)


def _extension(fmt: str) -> str:
    return next(suffix for suffix, kind in FORMATS.items() if kind == fmt).lstrip(".")
