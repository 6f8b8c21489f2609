"""The Ray engine of `map`: Ray Data reads the input, a pool of actors (each loading the
function once) annotates batches, and Ray writes the results.

Ray writes a directory of part files. For an output directory ("out/") those are the
result. For an output file, Ray writes Parquet parts to a temporary directory beside it and
this process joins them, in order, into the file. Order is kept (`preserve_order`): part
files are named by write task, and tasks follow the input's order.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import DataError, FuncformerError, TaskError, require
from ._map import Plan, annotate, is_remote
from ._tables import TableWriter, count_rows, csv_read_options

_RAY_SUFFIX = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}


class Annotator:
    """A Ray actor: loads the function once, then annotates each batch it is given."""

    def __init__(self, plan: Plan, threads: int = 1) -> None:
        import torch

        from ._engine import Engine
        from ._function import load

        torch.set_num_threads(threads)
        self.plan = plan
        self.fn = load(plan.function, head_factories=plan.head_factories)
        self.engine = Engine({"fn": self.fn}, cache=plan.cache)

    def __call__(self, batch: Any) -> Any:
        return annotate(self.fn, self.engine, batch, self.plan)


def run(plan: Plan, *, address: str | None = None, num_actors: int | None = None,
        progress: bool = True) -> int | None:
    """Run `plan` on Ray; returns the rows written (None when the input is remote and the
    output a directory: nothing here can count them cheaply)."""
    ray = require("ray", "ray")
    require("ray.data", "ray")
    if plan.to_directory and plan.output_format == "tsv":
        raise DataError(f"{plan.output}: Ray writes CSV, JSONL or Parquet part files, not TSV. "
                        "Fix: name the directory e.g. out.csv/ or out.parquet/, or write one "
                        ".tsv file.")
    connect(ray, address)
    actors = num_actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # One CPU (and one torch thread) per actor. The pool starts one actor short of its size,
    # so Ray Data's file listing (a 1-CPU task) can run before the last actor takes its CPU.
    with _data_context(ray, progress), _funcformer_errors():
        dataset = read(ray, plan).map_batches(
            Annotator, fn_constructor_kwargs={"plan": plan}, batch_size=plan.batch_size,
            batch_format="pyarrow", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=max(1, actors - 1), max_size=actors))
        if plan.to_directory:
            write(dataset, plan.output, plan.output_format)
            return _rows_in(plan)
        return _write_file(dataset, plan, progress)


def connect(ray: Any, address: str | None) -> None:
    """Use the Ray this process already joined, else join `address` or start a local one."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise TaskError(f"Cannot start or join {where} ({str(err)[:300]}). Fix: check the "
                        "address (auto, or ray://head-host:10001), or leave it out to start "
                        "a local Ray.") from None


def read(ray: Any, plan: Plan) -> Any:
    """The input as a Ray Dataset (CSV and TSV columns as text, as the local engine reads).
    Reading asks for no CPU: the actors hold the CPUs, and the model is the work."""
    if plan.input_format == "parquet":
        return ray.data.read_parquet(plan.input, **_no_cpu(ray.data.read_parquet))
    if plan.input_format == "jsonl":
        options = _no_cpu(ray.data.read_json)
        if "lines" in inspect.signature(ray.data.read_json).parameters:
            options["lines"] = True  # newer Ray; older ones read JSON lines by default
        return ray.data.read_json(plan.input, file_extensions=None, **options)
    options = csv_read_options(Path(plan.input), plan.input_format, list(plan.names or []))
    return ray.data.read_csv(plan.input, file_extensions=None, **options,
                             **_no_cpu(ray.data.read_csv))


def _no_cpu(reader: Any) -> dict[str, Any]:
    """num_cpus=0 for a Ray Data reader: a parameter of its own in newer Ray (which deprecates
    ray_remote_args there), inside ray_remote_args in older Ray."""
    if "num_cpus" in inspect.signature(reader).parameters:
        return {"num_cpus": 0}
    return {"ray_remote_args": {"num_cpus": 0}}


def write(dataset: Any, directory: str, fmt: str) -> None:
    """Ray's writers: part files named <write id>_<task index>.<format> in `directory`."""
    from ray.data.datasource import FilenameProvider

    common = {"filename_provider": FilenameProvider(file_format=_RAY_SUFFIX[fmt]),
              "ray_remote_args": {"num_cpus": 0}}
    if fmt == "parquet":
        dataset.write_parquet(directory, **common)
    elif fmt == "jsonl":  # pandas' JSON: keep 15 significant digits, and non-ASCII as is
        dataset.write_json(directory, force_ascii=False, double_precision=15, **common)
    else:
        dataset.write_csv(directory, **common)


def _write_file(dataset: Any, plan: Plan, progress: bool) -> int:
    """Parquet parts in a temporary directory beside the output, joined in order into it."""
    import pyarrow.parquet as pq

    from ._progress import Progress

    target = Path(plan.output)
    parts_dir = target.parent / f".{target.name}.parts-{uuid.uuid4().hex[:8]}"
    try:
        write(dataset, str(parts_dir), "parquet")
        parts = sorted(parts_dir.glob("*.parquet"))
        total = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        with TableWriter(target, plan.output_format) as writer, \
                Progress("joining parts", total=total, enabled=progress) as bar:
            for part in parts:
                for batch in pq.ParquetFile(part).iter_batches():
                    writer.write(_table(batch))
                    bar.advance(batch.num_rows)
        return writer.rows
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def _table(batch: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def _rows_in(plan: Plan) -> int | None:
    """Rows written into a directory = rows read (map keeps every row)."""
    if is_remote(plan.input):
        return None
    return count_rows(Path(plan.input), plan.input_format)


@contextlib.contextmanager
def _data_context(ray: Any, progress: bool) -> Iterator[None]:
    """Keep input order and show (or hide) Ray Data's progress bars; restore afterwards."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


@contextlib.contextmanager
def _funcformer_errors() -> Iterator[None]:
    """A funcformer error raised in an actor comes back wrapped by Ray: unwrap it."""
    try:
        yield
    except FuncformerError:
        raise
    except Exception as err:
        cause = _find_cause(err)
        if cause is None:
            raise
        raise cause from None


def _find_cause(err: BaseException) -> FuncformerError | None:
    """The funcformer error behind a Ray error. Ray Data re-raises an actor's exception as
    text inside its own (the object itself does not survive), so the last
    'funcformer._errors.<Name>: <message>' line in it is turned back into that error."""
    from . import _errors

    current: BaseException | None = err
    for _ in range(8):  # a few links: Ray's error, its cause, theirs
        if isinstance(current, FuncformerError):
            return current
        current = current and (current.__cause__ or getattr(current, "cause", None))
    found = re.findall(r"funcformer\._errors\.(\w+): ([^\n]+)", str(err))
    kind = getattr(_errors, found[-1][0], None) if found else None
    if not (isinstance(kind, type) and issubclass(kind, FuncformerError)):
        return None
    error = kind.__new__(kind)
    Exception.__init__(error, found[-1][1].strip())
    return error
