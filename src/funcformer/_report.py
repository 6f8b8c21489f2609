"""Evaluation reports: metrics, per-class table, confusion matrix, calibration and mistakes,
written as files and as one self-contained HTML page (pictures embedded as base64).

A classifier's report (`classify` or `zero_shot`, one prediction pass over the data):

    metrics.json          the metrics `evaluate` gives, plus the expected calibration error
                          and the reliability bins
    per_class.csv         label, precision, recall, f1, support
    confusion_matrix.png  rows: true label, columns: predicted (multi-label: one 2x2 per label)
    reliability.png       accuracy against confidence in ten bins, with the ECE
    misclassified.jsonl   text, gold, predicted, confidence, where; most confident first
    report.html           all of the above on one page

Other tasks get metrics.json and report.html (and per_class.csv when their metrics have a
per-type table, as tag's do).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._data import MULTI_SEPARATOR, Examples, read_examples, split_labels
from ._errors import DataError, require
from ._metrics import classification_metrics, multilabel_metrics, plot_confusion_matrix

BINS = 10
"""Equal-width confidence bins of the reliability diagram and the ECE."""
HTML_MISTAKES = 100
"""Mistakes listed on the page; misclassified.jsonl has them all."""
CLASSIFIERS = ("classify", "zero_shot")


@dataclass
class Report:
    """What a report shows, before it is written."""

    metrics: dict[str, Any]
    source: str
    table: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    mistakes: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)


def write_report(fn: Any, data: Any, directory: str | os.PathLike[str], *,
                 text_column: str = "text", label_column: str = "label") -> dict[str, Any]:
    """Evaluate `fn` on labelled `data` and write the report files into `directory` (created
    if needed; other files there are left alone). Returns the metrics (as in metrics.json).

    >>> metrics = write_report(fn, "test.csv", "report/")   # doctest: +SKIP
    >>> sorted(p.name for p in Path("report").iterdir())      # doctest: +SKIP
    ['confusion_matrix.png', 'metrics.json', 'misclassified.jsonl', 'per_class.csv',
     'reliability.png', 'report.html']
    """
    require("matplotlib", "report")  # before minutes of predicting, not after
    if fn.manifest.task in CLASSIFIERS:
        report = classification_report(fn, data, text_column, label_column)
    else:
        metrics = fn.evaluate(data, text_column=text_column, label_column=label_column)
        source = str(data) if isinstance(data, (str, Path)) else f"<{type(data).__name__}>"
        report = Report(metrics, source=source,
                        table=_rows(metrics.get("per_class") or metrics.get("per_type") or {}))
    _write(Path(directory), report, fn)
    return report.metrics


# ------------------------------------------------------------------ classification


def classification_report(fn: Any, data: Any, text_column: str, label_column: str) -> Report:
    multi = bool(fn.manifest.options.get("multi_label"))
    examples = read_examples(data, text_column=text_column, label_column=label_column,
                             empty_labels=multi)
    gold = _checked_labels(examples, fn.labels, multi, label_column)
    results = fn.predict(examples.texts)
    if multi:
        return _multi_label(fn, examples, gold, results)
    predicted = [r.label for r in results]
    metrics = classification_metrics([g[0] for g in gold], predicted, fn.labels)
    confidence = [float(r.score) for r in results]
    bins, ece = reliability(confidence, [p == g[0] for p, g in zip(predicted, gold,
                                                                 strict=True)])
    metrics.update(expected_calibration_error=ece, reliability=bins)
    mistakes = [_mistake(examples, i, g[0], p, c) for i, (g, p, c) in
                enumerate(zip(gold, predicted, confidence, strict=True)) if p != g[0]]
    images = {"confusion_matrix.png": _png(plot_confusion_matrix, metrics),
              "reliability.png": plot_reliability(bins, ece)}
    return Report(metrics, examples.source, _rows(metrics["per_class"]), images,
                  sorted(mistakes, key=lambda m: -m["confidence"]))


def _multi_label(fn: Any, examples: Examples, gold: list[list[str]],
                 results: list[Any]) -> Report:
    """Per-label 2x2 confusion; calibration over every (text, label) decision; a text is a
    mistake when its label set differs, and its confidence is that of its most confident
    wrong decision."""
    labels = fn.labels
    predicted = [list(r.labels) for r in results]
    metrics = multilabel_metrics(gold, predicted, labels)
    metrics["label_confusion"] = {label: _two_by_two(gold, predicted, label) for label in labels}
    images = {"confusion_matrix.png": plot_label_confusion(metrics["label_confusion"])}
    notes = []
    if fn.manifest.task == "zero_shot":  # its multi-label scores are cosines, not probabilities
        notes.append("No reliability diagram: this zero-shot function's multi-label scores are "
                     "cosine similarities, not probabilities.")
    else:
        pairs = [(r.scores[label], label in g) for r, g in zip(results, gold, strict=True)
                 for label in labels]
        confidence = [max(p, 1 - p) for p, _ in pairs]
        right = [(p >= 0.5) == truth for p, truth in pairs]
        bins, ece = reliability(confidence, right)
        metrics.update(expected_calibration_error=ece, reliability=bins)
        images["reliability.png"] = plot_reliability(bins, ece, "label decisions")
        notes.append("Multi-label: the confusion matrix is one 2x2 table per label; "
                     "calibration counts every (text, label) decision at probability 0.5.")
    mistakes = []
    for i, (result, want, got) in enumerate(zip(results, gold, predicted, strict=True)):
        if set(want) != set(got):
            wrong = [label for label in labels if (label in want) != (label in got)]
            sure = max(_decision_confidence(result, label, label in got) for label in wrong)
            mistakes.append(_mistake(examples, i, MULTI_SEPARATOR.join(want),
                                     MULTI_SEPARATOR.join(got), sure))
    return Report(metrics, examples.source, _rows(metrics["per_class"]), images,
                  sorted(mistakes, key=lambda m: -m["confidence"]), notes)


def _decision_confidence(result: Any, label: str, chosen: bool) -> float:
    score = float(result.scores[label])
    return score if chosen else 1 - score


def _two_by_two(gold: list[list[str]], predicted: list[list[str]],
                label: str) -> list[list[int]]:
    """[[true negatives, false positives], [false negatives, true positives]] for `label`."""
    cells = [[0, 0], [0, 0]]
    for want, got in zip(gold, predicted, strict=True):
        cells[int(label in want)][int(label in got)] += 1
    return cells


def _checked_labels(examples: Examples, known: list[str], multi: bool,
                    column: str) -> list[list[str]]:
    """Each row's gold labels (one, or a set when multi-label); an unknown one is a DataError
    naming its row."""
    out = []
    assert examples.labels is not None
    for i, value in enumerate(examples.labels):
        names = split_labels(value) if multi else [value]
        for name in names:
            if name not in known:
                raise DataError(f"{examples.where(i)}, field '{column}': unknown label "
                                f"'{name}'. This function knows: {', '.join(known)}.")
        out.append(names)
    return out


def _mistake(examples: Examples, i: int, gold: str, predicted: str,
             confidence: float) -> dict[str, Any]:
    return {"text": examples.texts[i], "gold": gold, "predicted": predicted,
            "confidence": confidence, "where": examples.where(i)}


def reliability(confidence: list[float], correct: list[bool],
                bins: int = BINS) -> tuple[list[dict[str, Any]], float]:
    """Equal-width confidence bins (count, mean confidence, accuracy) and the expected
    calibration error: the count-weighted mean |accuracy - confidence| over the bins.

    >>> bins, ece = reliability([0.9, 0.9, 0.3], [True, False, False], bins=2)
    >>> [(b["count"], b["accuracy"]) for b in bins], round(ece, 4)  # (0.4 x 2 + 0.3) / 3
    ([(1, 0.0), (2, 0.5)], 0.3667)
    """
    groups: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidence):
        groups[min(int(c * bins), bins - 1)].append(i)
    out, ece = [], 0.0
    for b, members in enumerate(groups):
        row: dict[str, Any] = {"lower": b / bins, "upper": (b + 1) / bins,
                               "count": len(members), "confidence": None, "accuracy": None}
        if members:
            row["confidence"] = sum(confidence[i] for i in members) / len(members)
            row["accuracy"] = sum(correct[i] for i in members) / len(members)
            ece += len(members) * abs(row["accuracy"] - row["confidence"])
        out.append(row)
    return out, ece / max(len(confidence), 1)


def _rows(per_class: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"label": label, **{k: row[k] for k in ("precision", "recall", "f1", "support")
                                if k in row}} for label, row in per_class.items()]


# ------------------------------------------------------------------------- pictures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(plot: Any, *args: Any) -> bytes:
    """What `plot(*args, file)` writes, as PNG bytes."""
    buffer = io.BytesIO()
    plot(*args, buffer)
    return buffer.getvalue()


def _save(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


def plot_reliability(bins: list[dict[str, Any]], ece: float, what: str = "predictions") -> bytes:
    """Reliability diagram: accuracy per confidence bin against the diagonal, and below it
    how many predictions fall in each bin."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["upper"] - bins[0]["lower"]
    used = [b for b in bins if b["count"]]
    centres = [b["lower"] + width / 2 for b in used]
    top.bar(centres, [b["accuracy"] for b in used], width=width * 0.9, color="#3b82f6",
            label="accuracy")
    top.bar(centres, [b["confidence"] for b in used], width=width * 0.9, fill=False,
            edgecolor="#dc2626", hatch="//", linewidth=1, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="#6b7280", linewidth=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
            title=f"Reliability ({what}): ECE {ece:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b["count"] for b in used], width=width * 0.9, color="#9ca3af")
    bottom.set(xlabel="confidence", ylabel="count")
    return _save(fig)


def plot_label_confusion(tables: dict[str, list[list[int]]]) -> bytes:
    """One 2x2 confusion table per label (rows: true no/yes, columns: predicted no/yes)."""
    plt = _pyplot()
    columns = min(4, len(tables))
    rows = -(-len(tables) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat[len(tables):]:
        ax.axis("off")
    for ax, (label, cells) in zip(axes.flat, tables.items(), strict=False):
        peak = max(max(r) for r in cells) or 1
        ax.imshow(cells, cmap="Blues", vmin=0, vmax=peak)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cells[i][j]), ha="center", va="center",
                        color="white" if cells[i][j] > peak / 2 else "black")
        ax.set_xticks([0, 1], ["no", "yes"])
        ax.set_yticks([0, 1], ["no", "yes"])
        ax.set_title(label, fontsize=9)
    fig.supxlabel("predicted")
    fig.supylabel("true")
    return _save(fig)


# -------------------------------------------------------------------------- writing


def _write(directory: Path, report: Report, fn: Any) -> None:
    """Each file replaces its old version in one rename."""
    from ._html_report import page

    directory.mkdir(parents=True, exist_ok=True)
    _put(directory / "metrics.json", json.dumps(report.metrics, indent=2, ensure_ascii=False)
         + "\n")
    if report.table:
        _put(directory / "per_class.csv", _csv(report.table))
    for name, png in report.images.items():
        _put(directory / name, png)
    if report.mistakes is not None:
        _put(directory / "misclassified.jsonl", "".join(
            json.dumps(m, ensure_ascii=False) + "\n" for m in report.mistakes))
    _put(directory / "report.html", page(report, fn, HTML_MISTAKES))


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _put(path: Path, content: str | bytes) -> None:
    temp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if isinstance(content, str):
            temp.write_text(content, encoding="utf-8")
        else:
            temp.write_bytes(content)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
