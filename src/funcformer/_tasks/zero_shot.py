"""The `zero_shot` task: classify from label names or descriptions, no training.

`funcformer.train("zero_shot", labels)` takes the labels as a list of names, a dict
{name: description}, or a file: .txt (one name per line) or .csv/.tsv/.jsonl with a `label`
column and an optional `description` column. With `eval_data` (labelled texts) a multi-label
function calibrates its threshold on them; either way the eval metrics are recorded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .. import _backbone
from .._artifact import Manifest
from .._data import MULTI_SEPARATOR, Examples, read_examples, read_records, read_texts
from .._embed import DEFAULT_TEMPLATE, DEFAULT_THRESHOLD, ZeroShot
from .._errors import DataError, TaskError


def train(data: Any, *, eval_data: Any = None, backbone: Any = None, method: str | None = None,
          device: str = "cpu", text_column: str = "text", label_column: str = "label",
          template: str = DEFAULT_TEMPLATE, multi_label: bool | None = None,
          threshold: float = DEFAULT_THRESHOLD, progress: bool = True, config: Any = None,
          cache: Any = None, init: Any = None, **options: Any) -> ZeroShot:
    """A ZeroShot function from a label set; nothing is trained."""
    ignored = {k for k, v in options.items() if v is not None and k not in ("seed",)}
    if ignored or init is not None:
        raise TaskError(f"zero_shot trains nothing, so {', '.join(sorted(ignored)) or 'init'} "
                        "does not apply. Fix: drop it, or train a classify function with "
                        "init='zero_shot' (ZeroShot.fit) to learn from examples.")
    if method not in (None, "auto", "none"):  # accepted and ignored, where epochs= was refused
        raise TaskError(f"zero_shot trains nothing, so method {method!r:.40} does not apply. "
                        "Fix: drop it, or train a classify function with init='zero_shot' "
                        "(ZeroShot.fit) to learn from examples.")
    if multi_label is not None and not isinstance(multi_label, bool):  # "false" was true
        raise TaskError(f"multi_label must be true or false, got {multi_label!r:.60}.")
    labels = read_labels(data, label_column)
    fn = ZeroShot(labels, template=template, backbone=backbone,
                  device=device, multi_label=bool(multi_label), threshold=threshold)
    if template != DEFAULT_TEMPLATE and isinstance(labels, dict):
        from .._function import say

        say(f"zero_shot: every label here has a description, used as written; the template "
            f"{template!r:.60} applies to labels given by name in a call only "
            "(fn(text, labels=[...])).", progress)
    if eval_data is not None:
        eval_data = _eval_examples(eval_data, fn.multi_label, text_column, label_column)
        if fn.multi_label:
            fn.calibrate(eval_data, text_column=text_column, label_column=label_column)
        metrics = fn.evaluate(eval_data, text_column=text_column, label_column=label_column)
        fn.manifest.metrics = {k: metrics[k] for k in ("accuracy", "micro_f1", "macro_f1",
                                                       "examples") if k in metrics}
    fn.manifest.training = {"examples": 0, "seconds": 0.0,
                            "eval_source": "given" if eval_data is not None else "none"}
    return fn


def _eval_examples(data: Any, multi_label: bool, text_column: str,
                   label_column: str) -> Examples:
    """Eval data, read once; several labels on a row of a single-label function's eval data
    were 'unknown label a|b', which did not say that multi_label was the fix."""
    examples = read_examples(data, text_column=text_column, label_column=label_column,
                             empty_labels=multi_label)
    assert examples.labels is not None
    row = next((i for i, y in enumerate(examples.labels) if MULTI_SEPARATOR in y), None)
    if not multi_label and row is not None:
        raise DataError(f"{examples.where(row)}, field '{label_column}': several labels "
                        f"({examples.labels[row]!r:.60}), but this zero_shot function is "
                        "single-label. Fix: multi_label=True (CLI: --set multi_label=true), "
                        "or one label a row.")
    return examples


def read_labels(data: Any, label_column: str = "label") -> list[str] | dict[str, str]:
    """Label names, or {name: description} when descriptions are given. Names are stripped,
    as the labels of eval data are: 'billing ' from a file matched no 'billing'."""
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return dict(data)  # ZeroShot strips the names and refuses two that strip alike
    if isinstance(data, dict) and label_column not in data and "description" not in data:
        bad = next(k for k, v in data.items() if not isinstance(v, str))  # not columns either
        raise DataError(f"zero_shot labels given as a dict map each name to its description "
                        f"(a text); {bad!r:.60} maps to {type(data[bad]).__name__}. Fix: e.g. "
                        "{'billing': 'invoices and charges', 'sports': 'games'}, or a list "
                        "of names.")
    if isinstance(data, (list, tuple)) and all(isinstance(x, str) for x in data):
        return [x.strip() for x in data]
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() == ".txt":
        lines = read_texts(data)
        return _distinct(lines.source, [x.strip() for x in lines.texts], lines.places, "",
                         "one label per line")
    records = read_records(data, texts=[label_column], optional=["description"], what="labels",
                           fields=["label"])
    described: dict[str, Any] = {}
    first: dict[str, int] = {}
    for i, row in enumerate(records.rows):
        name = row[label_column].strip()
        if name in first:  # a dict kept the last one: a label silently dropped
            raise DataError(f"{records.where(i)}, field '{label_column}': the label '{name}' "
                            f"is given twice (first at {records.places[first[name]]}). Fix: give "
                            "each label once.")
        first[name] = i
        description = row.get("description")
        if description is not None and (not isinstance(description, str)
                                        or not description.strip()):
            raise DataError(f"{records.where(i)}, field 'description': expected a non-empty "
                            "text. Fix: describe the label, or drop the description column.")
        described[name] = description
    if len(described) < 2 and isinstance(data, (str, os.PathLike)):
        _distinct(records.source, list(described), records.places, f", field '{label_column}'",
                  "a row per label")
    if all(d is None for d in described.values()):
        return list(described)
    missing = [k for k, d in described.items() if d is None]
    if missing:
        raise DataError(f"{records.source}: label '{missing[0]}' has no description while "
                        "others do. Fix: describe every label, or none.")
    return {k: str(d) for k, d in described.items()}


def from_graph(directory: Path, manifest: Manifest, runner: Any,
               tokenizer: _backbone.Backbone) -> ZeroShot:
    """A zero-shot function embedding with its ONNX export (`load(..., runtime="onnx")`): the
    backbone it names, run by the graph."""
    graphed = dataclasses.replace(tokenizer, name=manifest.backbone.name,
                                  digest=manifest.backbone.digest, graph=runner)
    return ZeroShot.restored(manifest, graphed)


def load(directory: Path, manifest: Manifest, *, backbone: Any = None, device: str = "cpu",
         dtype: str | None = None, merge_adapter: bool = False) -> ZeroShot:
    from .._function import load_adapter, load_backbone

    shared = load_backbone(directory, manifest, backbone, device, dtype)
    load_adapter(directory, manifest, shared, merge_adapter)  # zero_shot has none: merge fails
    return ZeroShot.restored(manifest, shared)


def _distinct(source: str, names: list[str], places: list[str], field: str,
              layout: str) -> list[str]:
    """`names` once checked for a file: a label given twice names both places; a file of fewer
    than two labels says so (the generic message asked for a Python list)."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise DataError(f"{source}, {places[i]}{field}: the label '{name:.60}' is given "
                            f"twice (first at {places[first[name]]}). Fix: give each label once.")
        first.setdefault(name, i)
    if len(names) < 2:
        raise DataError(f"{source}: {len(names)} label{'s' * (len(names) != 1)}; zero_shot "
                        f"needs at least two to choose from. Fix: add labels ({layout}).")
    return names
