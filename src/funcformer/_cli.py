"""The `funcformer` command line: a thin layer over the library.

Every error is one message on stderr and a non-zero exit (1: the input or artifact was bad,
2: the command line was). `--debug` anywhere on the line shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._errors import DataError, FuncformerError, TaskError

app = typer.Typer(
    name="funcformer", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Train, run and serve small functions built on pretrained transformers.")

Data = Annotated[str, typer.Argument(help="Data file: .csv, .tsv, .jsonl or .json (fields by "
                                     "task: see docs/tasks.md).")]
FunctionDir = Annotated[Path, typer.Argument(help="A function directory (from train --out).")]
TextColumn = Annotated[str, typer.Option("--text-column", help="Column holding the text.")]
Runtime = Annotated[str, typer.Option("--runtime", help="torch, onnx or onnx-int8 (after "
                                      "funcformer export).")]
CacheFile = Annotated[str | None, typer.Option("--cache", help="SQLite file caching features "
                                               "and results across runs.")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Column holding the label.")]
Device = Annotated[str, typer.Option("--device", help="Torch device to run on: cpu, cuda, "
                                     "cuda:1 ...")]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from ._version import __version__

        print(f"funcformer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    """Train, run and serve small functions built on pretrained transformers."""


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="What to train: classify, zero_shot, embed, "
                                        "search, tag, pair or generate.")],
    data: Data,
    out: Annotated[Path, typer.Option("--out", help="Directory to save the function to.")],
    method: Annotated[str | None, typer.Option(
        help="auto (default for classify: chosen from the data), head (fast, frozen backbone), "
        "full, lora (small adapter; --set lora='{\"r\": 16}'), contrastive (few examples "
        "per label), or, for classify, adalora, ia3, prompt or prefix (other PEFT adapters; "
        "--set peft='{\"num_virtual_tokens\": 10}'); default for other tasks: full.")] = None,
    eval_data: Annotated[str | None, typer.Option("--eval", help="Eval data for early stopping "
                                                  "and metrics; default: hold out 10%.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone directory or name "
                                                 "(default all-MiniLM-L6-v2).")] = None,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Token limit.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Random seed; same seed, same result (default 42).")] = None,
    cache: CacheFile = None,
    init: Annotated[str | None, typer.Option("--init", help="zero_shot: start the head from "
                                             "the label names' embeddings.")] = None,
    multi_label: Annotated[bool | None, typer.Option(
        "--multi-label/--single-label", help="classify: several labels per text ('a|b'); "
        "default: detected from the data.")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A training or task option as KEY=VALUE (VALUE read as JSON when it "
        "parses), e.g. --set optimizer=sgd, --set head=mlp, --set loss=focal, --set "
        "template='This review is {}.' or --set pairs=logs.csv; repeatable.")] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="A .yaml or .json file of training settings (funcformer.TrainConfig's "
        "fields); flags and --set override its values.")] = None,
    class_weight: Annotated[str | None, typer.Option(
        "--class-weight", help="classify: 'balanced' weighs each label by the inverse of its "
        "frequency (imbalanced data), or a JSON {label: weight}.")] = None,
    checkpoint_dir: Annotated[str | None, typer.Option(
        "--checkpoint-dir", help="Write checkpoints here at each epoch's end (for --resume).")
    ] = None,
    checkpoint_steps: Annotated[int | None, typer.Option(
        "--checkpoint-steps", help="Also checkpoint every N steps.")] = None,
    log_dir: Annotated[str | None, typer.Option(
        "--log-dir", help="Write TensorBoard scalars here (loss, learning rate, eval metric; "
        "pip install 'funcformer[tensorboard]').")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a killed run from its last checkpoint (same data, options "
        "and seed give the same result as an uninterrupted run).")] = False,
    unlabeled: Annotated[str | None, typer.Option(
        "--unlabeled", help="classify: texts without labels (.txt, .csv, .tsv, .jsonl, .json) "
        "for self-training: confident predictions become pseudo-labels for more rounds of "
        "training; set rounds and threshold with --set self_training='{\"rounds\": 3, "
        "\"threshold\": 0.9}' (default threshold: 0.9 for two labels, lower for more).")] = None,
    device: Device = "cpu",
) -> None:
    """Train a function on data and save it (zero_shot: DATA lists the labels)."""
    from ._artifact import check_target, check_writable
    from ._config import read_config_file
    from ._function import train as train_function

    _check_device(device)
    check_target(out)  # refuse a bad --out before minutes of training, not after
    options = _settings(settings or [], {"task": "its TASK argument",
                                          "data": "its DATA argument",
                                          "config": "--config FILE", "device": "--device"})
    options.update({k: v for k, v in {
        "checkpoint_dir": checkpoint_dir, "checkpoint_steps": checkpoint_steps,
        "resume": resume or None, "multi_label": multi_label, "log_dir": log_dir or None,
        "class_weight": _json_or_text(class_weight)}.items() if v is not None})
    flags = {"eval_data": eval_data, "backbone": backbone, "method": method,
             "text_column": text_column, "label_column": label_column, "epochs": epochs,
             "learning_rate": learning_rate, "batch_size": batch_size,
             "max_length": max_length, "seed": seed, "cache": cache, "init": init,
             "unlabeled": unlabeled}
    for key, value in options.items():  # --set epochs=2 is --epochs 2, unless both disagree
        if key in flags and flags[key] not in (None, value):
            raise DataError(f"--set {key}={value!r} contradicts --{key.replace('_', '-')} "
                            f"{flags[key]!r}; give it once.")
        flags[key] = value
    if config_file is not None:  # the file's values where no flag gave one
        for key, value in read_config_file(config_file).items():
            if flags.get(key) is None:
                flags[key] = value
    for key in ("checkpoint_dir", "log_dir"):  # also before training, as --out
        if flags.get(key):
            flag = f"--{key.replace('_', '-')} {flags[key]}"
            check_writable(flags[key], flag, TaskError)
            inside = Path(flags[key]).resolve()
            if inside == out.resolve() or out.resolve() in inside.parents:  # refused at save
                raise DataError(f"{flag} is inside --out {out}, where the function is saved. "
                                "Fix: give a directory outside --out.")
    if flags.get("resume") and not flags.get("checkpoint_dir"):
        raise DataError("--resume needs --checkpoint-dir: the directory the killed run "
                        "wrote its checkpoints to.")
    replaced = _function_at(out)
    fn = train_function(task, data, device=device, **flags)
    fn.save(out)
    _print_training(fn, out, replaced)


def _function_at(path: Path) -> str | None:
    """'the classify function (version 3f2a..., 2026-11-30 14:02)' saved at `path`, which a
    save there replaces; None when there is none."""
    from ._artifact import MANIFEST, read_manifest

    if not (path / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(path)
    except FuncformerError:  # damaged: it is replaced all the same
        return "a damaged function"
    when = manifest.created_at[:16].replace("T", " ")
    return (f"the {manifest.task} function (version "
            f"{manifest.digest.removeprefix('sha256:')[:12]}, {when})")


def _json_or_text(value: str | None) -> Any:
    """A flag's value as JSON when it parses ('{"spam": 3}'), else as the text itself."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _settings(items: list[str], own: dict[str, str] | None = None) -> dict[str, Any]:
    """--set KEY=VALUE pairs; a VALUE that parses as JSON is taken as JSON, else as text.
    `own` maps the names the command gives its function itself to where they are given (an
    argument or a flag): such a KEY is refused, rather than passed twice."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise DataError(f"--set {item!r}: expected KEY=VALUE, e.g. --set threshold=0.4.")
        if own and key in own:
            raise DataError(f"--set {key}: this command takes it as {own[key]}. Fix: give it "
                            "there instead.")
        options[key] = _json_or_text(value)
    return options


def _with_flags(options: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """--set options plus the flags given (not None); one given both ways is refused, not
    silently decided by the flag."""
    given = {k: v for k, v in flags.items() if v is not None}
    both = sorted(set(given) & set(options))
    if both:
        flag = "--" + both[0].replace("_", "-")
        raise DataError(f"{both[0]} is given twice: {flag} {given[both[0]]} and --set "
                        f"{both[0]}={options[both[0]]}. Fix: give it once.")
    return {**options, **given}


def _new_function_dir(source: Path, out: Path, command: str) -> None:
    """`update` and `distill` write a new function and keep their source as it is: an --out
    that is the source would replace it (its weights lost, only its digest left in the
    lineage), so that is refused before any work is done."""
    from ._artifact import check_target, function_home

    if Path(out).resolve() == Path(source).resolve():
        raise DataError(f"--out {out} is the function {command} starts from, which would be "
                        f"replaced. Fix: give a new directory (the original stays as it is, "
                        f"so you can compare the two or go back).")
    home = function_home(out)  # the source or any other function
    if home is not None:
        raise DataError(f"--out {out} is inside the function {home}, whose artifact it would "
                        "change. Fix: give a directory outside it.")
    check_target(out)


def _check_output_file(output: Path, flag: str, *, keep: tuple[Path | str | None, ...] = ()
                       ) -> None:
    """Refuse, before any work, an output file that cannot be written or would destroy data:
    an empty path, a directory, a path under a file, the input itself, or a file inside the
    function directory or any other (`keep`: the input file and the function directory)."""
    from ._artifact import check_writable, function_home

    text = str(output)
    if not text.strip():
        raise DataError(f"{flag} is empty. Fix: give a file path, e.g. {flag} results.jsonl.")
    path = Path(output)
    if path.is_dir():
        example = "why.html" if flag == "--html" else "results.jsonl"
        raise DataError(f"{flag} {output} is a directory. Fix: give a file path, e.g. "
                        f"{flag} {path / example}.")
    resolved = path.resolve()
    for kept in keep:
        if kept is None or str(kept) == "-":
            continue
        kept = Path(kept).resolve()
        # under the input file: no directory can be made there (check_writable says so)
        if resolved == kept or (kept.is_dir() and kept in resolved.parents):
            what = "the input file" if resolved == kept else f"inside the function {kept}"
            raise DataError(f"{flag} {output} is {what}, which writing would destroy. Fix: "
                            "give another file path.")
    home = function_home(resolved)
    if home is not None:  # another function's folder: a server watching it would take the file
        raise DataError(f"{flag} {output} is inside the function {home}, which writing would "
                        "change. Fix: give a path outside function directories.")
    check_writable(path.parent, f"{flag} {output}", DataError)


def _rows(report: dict[str, Any], key: str) -> str:
    """" (N rows)" after an update report's figure: how many eval rows it rests on."""
    counts = report.get("eval_rows") or {}  # single-label: rows of old and of new labels
    part = next((k for k in ("old_labels", "new_labels") if key.startswith(k)), None)
    count = counts.get(part) if part else report.get("examples")
    return f"  ({count} rows)" if count is not None else ""


def _flags(*names: str) -> dict[str, str]:
    """`own` for `_settings`: each option name to its flag (text_column -> --text-column)."""
    return {name: "--" + name.replace("_", "-") for name in names}


def _check_device(device: str) -> None:
    """A device torch does not know, or this machine lacks, is refused at the command's start:
    before a file is read, a model loaded or a minute trained."""
    from ._backbone import check_device

    check_device(device)


def _output_line(given: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The input under "text" (or "input" when it is not a text or the result has a "text"
    field, as a Generation does), then the result's fields."""
    key = "text" if isinstance(given, str) and "text" not in result else "input"
    return {key: given, **result}


def _check_call_options(fn: Any, options: dict[str, Any]) -> None:
    from ._function import options_text, unknown_option

    unknown = unknown_option(fn.predict, options)
    if unknown is not None:
        raise DataError(f"--set {unknown}: not an option of {fn.manifest.task} functions. "
                        f"Options: {options_text(fn.predict)}.")


def _print_training(fn: Any, out: Path, replaced: str | None = None) -> None:
    console = _console()
    report = fn.manifest.training
    metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in fn.metrics.items())
    if fn.manifest.task == "zero_shot":  # nothing trains: it was "(none) on 0 examples"
        console.print(f"Made a zero_shot function of {len(fn.labels)} labels (no training); "
                      f"eval data: {report.get('eval_source', 'none')}.")
    else:
        console.print(f"Trained {fn.manifest.task} ({fn.manifest.method}) on "
                      f"{report.get('examples', 0)} examples in "
                      f"{report.get('seconds', 0):.1f}s; eval data: "
                      f"{report.get('eval_source', 'none')}.")
    if metrics:
        console.print(f"Metrics: {metrics}")
    if "self_training" in report:
        console.print(_self_training_line(report["self_training"]))
    console.print(f"Saved to {out}" + (f", replacing {replaced} that was there" if replaced
                                       else ""))


def _self_training_line(report: dict[str, Any]) -> str:
    """'Self-training: pseudo-labels per round 0, 132, 472; accuracy 0.6500 -> 0.7000
    (+0.0500); kept round 2.'"""
    added = ", ".join(str(r["pseudo_labels"]) for r in report["rounds"])
    line = f"Self-training: pseudo-labels per round {added}"
    if "gain" in report:
        kept = report["rounds"][report["kept_round"]]["eval_metric"]
        line += (f"; {report['metric']} {report['labelled_only']:.4f} -> {kept:.4f} "
                 f"({report['gain']:+.4f})")
    return line + f"; kept round {report['kept_round']}."


@app.command()
def predict(
    function: FunctionDir,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to run on.")] = None,
    input_file: Annotated[str | None, typer.Option("--input", help="File of texts: .txt (one "
                                                   "per line), .csv, .tsv, .jsonl, .json; - "
                                                   "for stdin.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write JSON lines here "
                                                "instead of stdout.")] = None,
    text_column: TextColumn = "text",
    runtime: Runtime = "torch",
    cache: CacheFile = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A call option as KEY=VALUE, e.g. --set k=3 (search), --set answer=true "
        "(FAQ answers), --set max_new_tokens=50 (generate); repeatable.")] = None,
    device: Device = "cpu",
) -> None:
    """Run a function; prints one JSON line per input, in input order."""
    from ._engine import Engine
    from ._function import load

    _check_device(device)
    if output is not None:
        _check_output_file(output, "--output", keep=(input_file, function))
    fn = load(function, runtime=runtime, device=device)
    inputs = _prediction_inputs(texts, input_file, text_column, fn.read_inputs)
    options = _settings(settings or [])
    _check_call_options(fn, options)
    results = (fn.predict(inputs, **options) if options
               else Engine({"fn": fn}, cache=cache)("fn", inputs))
    lines = (json.dumps(_output_line(x, result.to_dict()), ensure_ascii=False)
             for x, result in zip(inputs, results, strict=True))
    if output is None:
        for line in lines:
            print(line)
        return
    from ._artifact import atomic_file

    count = 0
    with atomic_file(output) as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    _console().print(f"Wrote {count} results to {output}")


def _stdin_text() -> str:
    """Standard input decoded as UTF-8 (or UTF-16/32 after a byte-order mark), or a DataError
    naming stdin and the conversion (Python's default would turn a stray byte into a lone
    surrogate, reported as if it were in the text)."""
    from ._data import wide_encoding

    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream without bytes (a notebook, a test's StringIO)
        return sys.stdin.read()
    raw = buffer.read()
    encoding = wide_encoding(raw) or "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"stdin: not valid {encoding.removesuffix('-sig').upper()} (byte "
                        f"0x{raw[err.start]:02x} at offset {err.start}). Fix: convert it, e.g. "
                        "iconv -f <its encoding> -t UTF-8 FILE | funcformer predict DIR "
                        "--input -") from None


def _prediction_inputs(texts: list[str] | None, input_file: str | None, text_column: str,
                       read_inputs: Any) -> list[Any]:
    if texts and input_file:
        raise DataError("Give texts on the command line or --input, not both.")
    if input_file == "-":
        numbered = [(n, line.rstrip("\r\n"))
                    for n, line in enumerate(_stdin_text().splitlines(), start=1) if line.strip()]
        if not numbered:
            raise DataError("stdin: no texts (the input was empty or only blank lines). Fix: "
                            "pipe one text per line, e.g. printf 'one\\ntwo\\n' | "
                            "funcformer predict DIR --input -")
        return _named(read_inputs, [line for _, line in numbered],
                      lambda i: f"stdin, line {numbered[i][0]}")
    if input_file:
        return read_inputs(input_file, text_column=text_column)
    if not texts:
        raise DataError("Nothing to predict. Fix: give texts as arguments, or --input FILE "
                        "(--input - reads standard input, one text per line).")
    return _named(read_inputs, texts, lambda i: f"argument {i + 1}")


def _named(read_inputs: Any, values: list[str], where: Any) -> list[Any]:
    """`read_inputs(values)`, an error naming the argument or stdin line at fault, not the
    Python list's '<list>, index 0'."""
    from ._data import at_place

    try:
        return read_inputs(values)
    except DataError as err:
        raise DataError(at_place(str(err), where)) from None


@app.command("map")
def map_command(
    function: FunctionDir,
    input_file: Annotated[str, typer.Argument(metavar="INPUT", help="Rows to run over: .csv, "
                                              ".tsv, .jsonl or .parquet.")],
    output: Annotated[str, typer.Argument(metavar="OUTPUT", help="The input's columns plus "
                                          "the results: a .csv, .tsv, .jsonl or .parquet "
                                          "file, or a directory (ending in /) of part "
                                          "files.")],
    engine: Annotated[str, typer.Option("--engine", help="local (this process, streaming) or "
                                        "ray (Ray Data with a pool of actors).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join: auto "
                                                "or ray://host:10001; default: start a local "
                                                "Ray.")] = None,
    text_column: TextColumn = "text",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch.")] = 256,
    num_actors: Annotated[int | None, typer.Option("--num-actors", help="Ray actors, each "
                                                   "loading the function once; default: one "
                                                   "per CPU.")] = None,
    cache: CacheFile = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A call option as KEY=VALUE, e.g. --set k=3 (search); repeatable.")
    ] = None,
    device: Device = "cpu",
) -> None:
    """Run a function over every row of a file, here or on a Ray cluster."""
    from ._map import map as run_map

    stats = run_map(function, input_file, output, engine=engine, address=address,
                    text_column=text_column, batch_size=batch_size, num_actors=num_actors,
                    options=_settings(settings or []), cache=cache, device=device)
    rows = "?" if stats["rows"] is None else f"{stats['rows']:,}"
    rate = "" if stats["rows_per_second"] is None else f", {stats['rows_per_second']:,} rows/s"
    _console().print(f"Wrote {rows} rows to {output} in {stats['seconds']:.1f}s "
                     f"({engine} engine{rate}).")


@app.command("eval")
def evaluate(
    function: FunctionDir,
    data: Data,
    report: Annotated[Path | None, typer.Option("--report", help="Also write a report to this "
                                                "directory: metrics.json, per_class.csv, "
                                                "confusion_matrix.png, reliability.png, "
                                                "misclassified.jsonl and report.html.")] = None,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    runtime: Runtime = "torch",
    device: Device = "cpu",
) -> None:
    """Evaluate a function on labelled data: accuracy, macro-F1, per-class scores."""
    from ._function import load

    _check_device(device)
    if report is not None:
        from ._artifact import check_writable, function_home

        if report.exists() and not report.is_dir():
            raise DataError(f"--report {report} is a file; the report is a directory of files. "
                            "Fix: give a directory path (new or existing).")
        home = Path(function).resolve() if Path(function).resolve() == report.resolve() \
            else function_home(report)  # this function or any other
        if home is not None:
            raise DataError(f"--report {report} is inside the function {home}, whose "
                            "artifact the report's files would change. Fix: give a directory "
                            "outside it.")
        check_writable(report, f"--report {report}", DataError)
    fn = load(function, runtime=runtime, device=device)
    if report is None:
        metrics = fn.evaluate(data, text_column=text_column, label_column=label_column)
    else:
        from ._report import write_report

        metrics = write_report(fn, data, report, text_column=text_column,
                               label_column=label_column)
    _print_metrics(metrics)
    if report is not None:
        _console().print(f"Report written to {report}/ (open {report / 'report.html'})")


def _print_metrics(metrics: dict[str, Any]) -> None:
    from ._metrics import metrics_table

    console = _console()
    scalars = [f"{k.replace('_f1', '-F1').replace('_', ' ')} {v:.4f}" for k, v in metrics.items()
               if isinstance(v, float)]
    count = metrics.get("examples")
    console.print("   ".join(scalars) + (f"   ({count} examples)" if count is not None else ""))
    rows = metrics.get("per_class") or metrics.get("per_type")  # classes, or entity types
    if rows:
        console.print(metrics_table({"per_class": rows}))


@app.command("explain")
def explain_command(
    function: FunctionDir,
    text: Annotated[list[str], typer.Argument(help="The text to explain (quoted); for a pair "
                                              "function, its two texts.")],
    target: Annotated[str | None, typer.Option("--target", help="The label to explain "
                                               "(default: the predicted one; tag: entities of "
                                               "this type).")] = None,
    method: Annotated[str, typer.Option("--method", help="auto (ig when captum is installed), "
                                        "ig (Integrated Gradients) or occlusion.")] = "auto",
    steps: Annotated[int, typer.Option("--steps", help="Integrated Gradients steps.")] = 32,
    html_file: Annotated[Path | None, typer.Option("--html", help="Also write a "
                                                   "self-contained HTML page here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of "
                                          "coloured text.")] = False,
    runtime: Runtime = "torch",
    device: Device = "cpu",
) -> None:
    """Show which words drove a prediction: green words raise the target's score, red ones
    lower it (classify, pair and tag functions)."""
    import os

    from ._explain import explain
    from ._function import load
    from ._render import html_page

    _check_device(device)
    if html_file is not None:  # before the work, and never over the function's own files
        _check_output_file(html_file, "--html", keep=(function,))
    fn = load(function, runtime=runtime, device=device)
    result = explain(fn, _explain_input(fn, text), target=target, method=method, steps=steps)
    explanations = result if isinstance(result, list) else [result]
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for item in explanations:
        print(json.dumps(item.to_dict(), ensure_ascii=False) if as_json
              else item.to_terminal(color=color))
    if not explanations:
        _console(stderr=True).print("No entities found" + (f" of type {target}" if target
                                                           else "") + "; nothing to explain.")
    if html_file is not None:
        from ._artifact import atomic_file

        with atomic_file(html_file) as handle:
            handle.write(html_page(explanations, title=f"funcformer explain: {function.name}"))
        _console(stderr=True).print(f"Wrote {html_file}")


def _explain_input(fn: Any, texts: list[str]) -> Any:
    """One text, or for a pair function two texts (or one holding both, tab-separated)."""
    if fn.manifest.task == "pair" and len(texts) == 2:
        return tuple(texts)
    if len(texts) != 1:
        want = "one pair: two texts" if fn.manifest.task == "pair" else "one text"
        raise DataError(f"explain takes {want}, got {len(texts)} arguments. Fix: put a text "
                        "with spaces in quotes.")
    return _named(fn.read_inputs, texts, lambda i: f"argument {i + 1}")[0]


@app.command()
def export(
    function: FunctionDir,
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (encoder, pooling and "
                                       "head in one graph).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also quantize weights to int8 "
                                       "(dynamic quantization).")] = False,
) -> None:
    """Export a function for another runtime; load it with --runtime onnx or onnx-int8.
    Given a directory of functions (what `funcformer serve` serves), exports each of them."""
    from ._artifact import MANIFEST
    from ._serving import artifacts, describe_error

    if not onnx:
        raise DataError("Choose what to export to: --onnx (with --int8 for int8 weights).")
    runtime = "onnx-int8" if int8 else "onnx"
    found = artifacts(function) if function.is_dir() and not (function / MANIFEST).is_file() \
        else {}
    if function.is_dir() and not (function / MANIFEST).is_file() and not found:
        raise DataError(f"{function}: neither a function (no {MANIFEST}) nor a directory of "
                        "functions (no folder in it holds one). Fix: pass a function's "
                        "directory (from train --out), or the directory funcformer serve "
                        "serves.")
    if not found:
        _export_one(function, int8)
        _console().print(f"Run it with: funcformer predict {function} --runtime {runtime} "
                         "\"...\"")
        return
    failed = []
    for name, (path, _) in found.items():
        try:
            _export_one(path, int8, skip_generate=True)
        except Exception as err:  # the others are still exported (a full disk too)
            failed.append(f"{name}: {describe_error(err)}")
    if failed:
        raise TaskError(f"{len(failed)} of {len(found)} functions in {function} were not "
                        f"exported, the others were. {' | '.join(failed)}")
    _console().print(f"Serve them with: funcformer serve {function} --runtime {runtime}")


def _export_one(function: Path, int8: bool, skip_generate: bool = False) -> None:
    from ._artifact import read_manifest
    from ._function import load

    if skip_generate and read_manifest(function).task == "generate":
        _console().print(f"{function.name}: a generate function, which runs on torch; "
                         "skipped.")
        return
    fn = load(function)
    if not hasattr(fn, "export_onnx"):
        raise TaskError(f"{function}: ONNX export is for every task but generate; this is a "
                        f"{fn.task_name} function. Fix: run it with the torch runtime (the "
                        "default).")
    written = [fn.export_onnx(function, int8=False)]
    if int8:
        written.append(fn.export_onnx(function, int8=True))
    for path in written:
        _console().print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command()
def update(
    function: FunctionDir,
    data: Data,
    out: Annotated[Path, typer.Option("--out", help="Directory for the updated function (the "
                                      "original stays as it is).")],
    eval_data: Annotated[str | None, typer.Option(
        "--eval", help="Labelled data with old and new labels for the before/after report; "
        "default: hold out 10% of the new data and memory.")] = None,
    memory: Annotated[int | None, typer.Option(
        "--memory", help="Keep this many exemplars per label in the artifact for the next "
        "update (default: what the function has).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A training option as KEY=VALUE (funcformer.TrainConfig's fields), e.g. "
        "--set 'label_names={\"7\": \"refund\"}' (words for a new coded label); "
        "repeatable.")] = None,
    device: Device = "cpu",
) -> None:
    """Add examples and new labels to a classify function without retraining from scratch."""
    from ._function import load

    _check_device(device)
    _new_function_dir(function, out, "update")
    own = {"data": "its DATA argument", "eval_data": "--eval",
           **_flags("memory", "text_column", "label_column", "device")}
    options = _with_flags(_settings(settings or [], own), {"epochs": epochs})
    fn = load(function, device=device)
    updated = fn.update(data, eval_data=eval_data, memory=memory, text_column=text_column,
                        label_column=label_column, **options)
    updated.save(out)
    console = _console()
    info = updated.manifest.training["update"]
    version = updated.manifest.versions[-1]
    console.print(f"Updated {function} -> {out} (version {version['version']}): "
                  f"{info['examples']} new examples, {info['replayed']} replayed from memory, "
                  f"new labels: {', '.join(info['new_labels']) or 'none'}; "
                  f"{info['seconds']:.1f}s.")
    names = {"old_labels_accuracy_before": "old labels, before",
             "old_labels_accuracy_after": "old labels, after",
             "new_labels_accuracy_after": "new labels, after", "accuracy_after": "all, after",
             "old_labels_micro_f1_before": "old labels, micro-F1 before",
             "old_labels_micro_f1_after": "old labels, micro-F1 after",
             "new_labels_micro_f1_after": "new labels, micro-F1 after",
             "micro_f1_after": "all, micro-F1 after"}
    for key, name in names.items():
        if key in info["report"]:
            console.print(f"{name:>28}  {info['report'][key]:.4f}{_rows(info['report'], key)}")


@app.command()
def suggest(
    function: FunctionDir,
    unlabeled: Annotated[str, typer.Argument(
        metavar="UNLABELED", help="Texts without labels: .txt (one per line), .csv, .tsv or "
        ".jsonl.")],
    n: Annotated[int, typer.Option("--n", help="How many texts to suggest.")] = 20,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write them to this .csv, .tsv or .jsonl file with an empty 'label' "
        "column to fill in (then: funcformer update DIR FILE); default: JSON lines on "
        "stdout.")] = None,
    measure: Annotated[str, typer.Option(
        "--measure", help="Uncertainty: margin (1 - gap between the top two probabilities) "
        "or entropy; or badge (gradient embeddings, k-means++).")] = "margin",
    candidates: Annotated[int | None, typer.Option(
        "--candidates", help="Diversify among this many of the most uncertain texts "
        "(default 5 x n).")] = None,
    labelled: Annotated[str | None, typer.Option(
        "--labelled", help="Texts already labelled (e.g. the training file): never suggested; "
        "--explore picks cover the data away from them.")] = None,
    explore: Annotated[str, typer.Option(
        "--explore", help="Share of the picks (0 to 1) that cover regions away from the "
        "--labelled texts instead of being uncertain ones; auto: all up to 64 labelled texts "
        "per label, none from 128 on (none without --labelled).")] = "auto",
    text_column: TextColumn = "text",
    cache: CacheFile = None,
    device: Device = "cpu",
) -> None:
    """Suggest which texts to label next for a classify function: the ones it is least sure
    about, diversified so the picks are not near-duplicates."""
    from ._function import load
    from ._unlabeled import suggest as suggest_texts
    from ._unlabeled import suggestion_format, write_suggestions

    _check_device(device)
    if out is not None:
        _check_output_file(out, "--out", keep=(unlabeled, labelled, function))
        suggestion_format(out)  # a .txt was refused after all the work
    fn = load(function, device=device)
    picks = suggest_texts(fn, unlabeled, n, measure=measure, candidates=candidates,
                          labelled=labelled, explore=_share_or_auto(explore),
                          text_column=text_column, cache=cache)
    if out is None:
        for pick in picks:
            print(json.dumps(pick.to_dict(), ensure_ascii=False))
        return
    write_suggestions(out, picks)
    _console().print(f"Wrote {len(picks)} suggestions to {out}. Fill in the label column, "
                     f"then: funcformer update {function} {out} --out NEW_DIR")


def _share_or_auto(text: str) -> float | str:
    try:
        return text if text == "auto" else float(text)
    except ValueError:
        raise DataError(f"--explore must be a share from 0 to 1 or 'auto', got {text!r}.") \
            from None


@app.command()
def distill(
    function: FunctionDir,
    out: Annotated[Path, typer.Option("--out", help="Directory for the student function.")],
    student_layers: Annotated[int | None, typer.Option(
        "--student-layers", min=1, help="Layers the student keeps, evenly spaced (default 3 of "
        "the teacher's encoder; with --student, all of its layers).")] = None,
    student: Annotated[str | None, typer.Option(
        "--student", help="Another backbone (name or directory) to train as the student "
        "instead of the teacher's encoder with layers dropped.")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="Labelled texts to distill on; default: the teacher's training data "
        "(the file its manifest records).")] = None,
    unlabeled: Annotated[str | None, typer.Option(
        "--unlabeled", help="More texts for the teacher to label: .txt (one per line), .csv, "
        ".tsv, .jsonl or .json with a text column.")] = None,
    eval_data: Annotated[str | None, typer.Option(
        "--eval", help="Labelled data for early stopping and metrics (student and teacher); "
        "default: hold out 10% and stop on agreement with the teacher.")] = None,
    temperature: Annotated[float, typer.Option(help="Softens both models' outputs.")] = 2.0,
    label_weight: Annotated[float, typer.Option(
        "--label-weight", help="Share of the loss from gold labels, where a row has one.")
    ] = 0.5,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A training option as KEY=VALUE (funcformer.TrainConfig's fields); "
        "repeatable.")] = None,
    device: Device = "cpu",
) -> None:
    """Train a smaller student of a classify function on its soft labels."""
    from ._distill import distill as distill_function

    _check_device(device)
    _new_function_dir(function, out, "distill")
    own = {**_flags("student_layers", "student", "data", "unlabeled", "temperature",
                    "label_weight", "text_column", "label_column", "device"),
           "eval_data": "--eval"}
    options = _with_flags(_settings(settings or [], own), {
        "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size})
    fn = distill_function(function, student_layers=student_layers, student=student, data=data,
                          unlabeled=unlabeled, eval_data=eval_data, temperature=temperature,
                          label_weight=label_weight, text_column=text_column,
                          label_column=label_column, device=device, **options)
    fn.save(out)
    info = fn.manifest.training["distill"]
    _console().print(f"Distilled {function} -> {out}: kept layers "
                     f"{', '.join(map(str, info['kept_layers']))} of {info['teacher_layers']}; "
                     f"{info['labelled']} labelled + {info['unlabeled']} unlabelled texts in "
                     f"{fn.manifest.training['seconds']:.1f}s.")
    if fn.metrics:
        _print_metrics(fn.metrics)


@app.command()
def tune(
    task: Annotated[str, typer.Argument(help="What to train: classify.")],
    data: Data,
    out: Annotated[Path, typer.Option("--out", help="Directory for the best function (with "
                                      "trials.csv and trials.md).")],
    eval_data: Annotated[str | None, typer.Option(
        "--eval", help="Labelled data that scores every trial; default: hold out a fifth of "
        "DATA.")] = None,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials to run.")] = 20,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=1, help="Stop starting trials after this many seconds.")] = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", help="Comma-separated methods to search, e.g. head,lora; default: "
        "head,lora,full (head,contrastive,full with 64 examples of a label or fewer).")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone directory or name "
                                                 "(default all-MiniLM-L6-v2).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the search and every trial.")] = 42,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    cache: CacheFile = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="A training option fixed for every trial as KEY=VALUE (then not "
        "searched), e.g. --set head=mlp or --set max_length=64; repeatable.")] = None,
    device: Device = "cpu",
) -> None:
    """Search training settings with Optuna (pip install 'funcformer[tune]'); save the best
    function and a table of the trials."""
    from ._artifact import check_target
    from ._tune import tune as tune_function

    _check_device(device)
    check_target(out)
    own = {"task": "its TASK argument", "data": "its DATA argument", "eval_data": "--eval",
           **_flags("trials", "timeout", "methods", "backbone", "seed", "text_column",
                    "label_column", "cache", "device")}
    searched = [m.strip() for m in methods.split(",")] if methods is not None else None
    result = tune_function(task, data, eval_data=eval_data, trials=trials, timeout=timeout,
                           methods=searched, backbone=backbone, device=device,
                           seed=seed, text_column=text_column, label_column=label_column,
                           cache=cache or "memory", **_settings(settings or [], own))
    result.save(out)
    console = _console()
    console.print(result.table())
    best = result.best.manifest.training["tune"]
    console.print(f"Best: trial {best['best_trial']}, {result.metric} "
                  f"{result.best.metrics[result.metric]:.4f} "
                  f"({len(result.trials)} trials, {best['pruned']} pruned, "
                  f"{result.seconds:.1f}s). Saved to {out}")


@app.command()
def info(
    function: FunctionDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what is in a function artifact (reads the manifest only)."""
    from ._artifact import read_manifest

    manifest = read_manifest(function)
    if as_json:
        print(json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    console = _console()
    ref = manifest.backbone
    rows = [("task", manifest.task + (" (multi-label)" if manifest.options.get("multi_label")
                                      else "")), ("method", manifest.method),
            ("labels", ", ".join(manifest.labels) or "-"),
            ("backbone", f"{ref.name} ({'included' if ref.included else 'referenced'})"),
            ("backbone digest", ref.digest), ("function digest", manifest.digest),
            ("metrics", json.dumps(manifest.metrics)),
            ("trained on", f"{manifest.training.get('examples', '?')} examples in "
                           f"{manifest.training.get('seconds', '?')}s"
                           if manifest.method != "none" else "nothing (no training)"),
            ("created", f"{manifest.created_at} by funcformer {manifest.library_version}")]
    if manifest.adapter:
        rows.append(("adapter", _adapter_line(manifest.adapter)))
    rows.append(("runtimes", _runtimes_line(function, manifest)))
    if len(manifest.versions) > 1:  # updated: its history, oldest first
        rows += [("versions" if i == 0 else "", _version_line(version, i == 0))
                 for i, version in enumerate(manifest.versions)]
        rows[-1] = (rows[-1][0], rows[-1][1] + "  (this one)")
    for key, value in rows:
        console.print(f"{key:>16}  {value}")
    for file in sorted(p for p in function.rglob("*") if p.is_file()):
        console.print(f"{'file':>16}  {file.relative_to(function)}  {file.stat().st_size:,} B")


def _runtimes_line(function: Path, manifest: Any) -> str:
    """The runtimes this artifact loads on: torch, and each ONNX graph exported from this very
    version (an export of an earlier version is named stale, with the fix).

    >>> import tempfile; _runtimes_line(Path(tempfile.mkdtemp()), None)
    'torch (no ONNX export)'
    """
    import json as json_module

    from ._artifact import ONNX_DIR
    from ._function import onnx_file
    from ._onnx import RECORD

    record_file = function / ONNX_DIR / RECORD
    if not record_file.is_file():
        return "torch (no ONNX export)"
    try:
        record = json_module.loads(record_file.read_text("utf-8"))
        digest = record.get("digest") if isinstance(record, dict) else None
    except (ValueError, OSError):
        digest = None
    if digest != manifest.digest:
        return (f"torch (the ONNX export in {ONNX_DIR}/ is stale or damaged; run funcformer "
                f"export {function} --onnx)")
    graphs = [name for name, int8 in (("onnx", False), ("onnx-int8", True))
              if (function / ONNX_DIR / onnx_file(int8)).is_file()]
    return ", ".join(["torch", *graphs])


def _version_line(version: dict[str, Any], first: bool) -> str:
    """One version of an updated function for `info`: number, date, digest and its parent's
    (12 hex digits), data, labels, metrics."""
    when = str(version.get("created_at", "?"))[:16].replace("T", " ")

    def short(digest: Any) -> str:
        return str(digest).partition(":")[2][:12] or "-" if digest else "-"

    line = (f"{version.get('version', '?')}  {when}  {short(version.get('digest'))}  parent "
            f"{short(version.get('parent')):<12}  {version.get('examples', '?')} "
            f"{'examples' if first else 'new examples'}, {version.get('labels', '?')} labels")
    if version.get("new_labels") and not first:
        line += f" (new: {', '.join(version['new_labels'])})"
    if version.get("metrics"):
        line += "  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in version["metrics"].items())
    return line


def _adapter_line(adapter: dict[str, Any]) -> str:
    """What `info` says of an adapter: its kind, size and where it sits."""
    kind = adapter.get("type", "lora")
    where = f" on {len(adapter['targets'])} modules" if adapter.get("targets") else ""
    if kind == "lora":
        return f"LoRA r={adapter.get('r')}{where}"
    if kind in ("prompt", "prefix"):
        return f"{kind} tuning, {adapter.get('num_virtual_tokens')} virtual tokens"
    return f"{kind}{where}, {adapter.get('parameters', '?'):,} parameters"


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option("--out", help="Where to save the function.")] = Path(
        "functions/sentiment"),
    method: Annotated[str, typer.Option(help="full (about 30 s) or head (seconds).")] = "full",
) -> None:
    """Train a sentiment function on built-in sample reviews, evaluate it, save it."""
    from ._quickstart import run

    run(out, method, _console())


@app.command()
def serve(
    directory: Annotated[Path, typer.Argument(help="Directory holding function folders (each "
                                              "from train --out); changes are reloaded.")],
    host: Annotated[str, typer.Option(help="Address to listen on; beyond this machine only "
                                      "with an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="Require this key ('Authorization: Bearer KEY'); default: the "
        "FUNCFORMER_API_KEY environment variable.")] = None,
    max_batch_tokens: Annotated[int, typer.Option(
        "--max-batch-tokens", min=1, help="Close a batch of concurrent requests at about this "
        "many tokens.")] = 8192,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", min=0, max=10_000, help="How long an idle server waits for more "
        "requests to batch with the first (0: none; under load, requests gather while the "
        "previous batch runs).")] = 0.0,
    cache: CacheFile = None,
    runtime: Runtime = "torch",
    dtype: Annotated[str | None, typer.Option(
        "--dtype", help="Weights of the torch runtime: float32 (default), bfloat16 (about "
        "2x faster on CPUs with AMX/AVX512-BF16) or float16 (GPUs).")] = None,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1,
                                                help="Largest request body.")] = 1_000_000,
    max_inputs: Annotated[int, typer.Option("--max-inputs", min=1,
                                            help="Most inputs per request.")] = 256,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1,
                                           help="Most characters per input.")] = 10_000,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Most inputs waiting; "
                                           "beyond it requests get 429.")] = 4096,
    max_generated_tokens: Annotated[int, typer.Option(
        "--max-generated-tokens", min=1, help="Most new tokens one request may ask of a "
        "generate function (prompts x max_new_tokens).")] = 8192,
    reload_interval: Annotated[float, typer.Option(
        "--reload-interval", min=0, help="Seconds between checks of DIR for changed "
        "functions (0: only on SIGHUP).")] = 1.0,
    device: Device = "cpu",
    cors_origin: Annotated[list[str] | None, typer.Option(
        "--cors-origin", help="A web page origin whose scripts may call the server from a "
        "browser (https://app.example.com); repeatable; '*' with --api-key only.")] = None,
) -> None:
    """Serve every function under DIR over HTTP (pip install 'funcformer[server]')."""
    from ._server import Limits, serve_command

    limits = Limits(max_body_bytes=max_body_bytes, max_inputs=max_inputs, max_chars=max_chars,
                    max_queue=max_queue, max_generated_tokens=max_generated_tokens)
    serve_command(directory, host=host, port=port, api_key=api_key,
                  max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms, cache=cache,
                  limits=limits, runtime=runtime, reload_interval=reload_interval, dtype=dtype,
                  device=device, cors_origins=cors_origin or ())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `funcformer` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(format="note: %(message)s", level=logging.WARNING, stream=sys.stderr)
    sys.exit(_run(args, debug))


def _click_exceptions() -> Any:
    """typer may bundle its own copy of click; its exception classes are the ones raised."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _run(args: list[str], debug: bool) -> int:
    click = _click_exceptions()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="funcformer", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except (getattr(click, "Exit", typer.Exit), typer.Exit) as err:
        return err.exit_code
    except (getattr(click, "Abort", typer.Abort), typer.Abort, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return 130
    except FuncformerError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # unreadable input, unwritable output, disk full
        if debug:
            raise
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug, not bad input: say so, briefly
        if debug:
            raise
        print(f"internal error: {type(err).__name__}: {err}\n"
              "This is a bug in funcformer; run again with --debug for the traceback and "
              "report it.", file=sys.stderr)
        return 1
