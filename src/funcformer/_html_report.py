"""The evaluation report as one self-contained HTML page: inline CSS, pictures as base64 data
URIs, no scripts, every text from the data escaped."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._report import Report

CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix: rows are the true labels, columns the predicted "
                            "ones.",
    "reliability.png": "Reliability: in a calibrated model, predictions made with confidence "
                       "0.8 are right 80% of the time (bars on the diagonal).",
}
WIDE_LABELS = 12
"""With more labels than this, each picture takes the page's full width."""
NAMES = {"macro_f1": "macro-F1", "micro_f1": "micro-F1", "roc_auc": "ROC-AUC",
         "expected_calibration_error": "ECE", "mrr_at_10": "MRR@10",
         "accuracy_at_1": "accuracy@1"}

_STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #f6f8fa; }
main { max-width: 72rem; margin: 0 auto; padding: 1.5rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .8rem; }
.sub { color: #57606a; font-size: .92rem; }
.cards { display: flex; flex-wrap: wrap; gap: .8rem; margin-top: 1.2rem; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px;
        padding: .7rem 1rem; min-width: 9rem; }
.card .v { font-size: 1.5rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .k { color: #57606a; font-size: .8rem; text-transform: uppercase;
           letter-spacing: .03em; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
        padding: .5rem .8rem; margin-top: 1rem; font-size: .9rem; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d0d7de;
        font-size: .9rem; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #eaeef2; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
tr:last-child td { border-bottom: none; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { display: inline-block; height: .6rem; background: #3b82f6; border-radius: 3px;
       margin-left: .4rem; vertical-align: middle; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; background: #fff; border: 1px solid #d0d7de; border-radius: 8px;
         padding: .8rem; flex: 1 1 24rem; max-width: 100%; }
figure.wide { flex-basis: 100%; }
figure img { display: block; max-width: 100%; height: auto; max-height: 34rem; }
figcaption { color: #57606a; font-size: .85rem; margin-top: .5rem; max-width: 32rem; }
td.text { max-width: 40rem; overflow-wrap: anywhere; }
td.where { white-space: nowrap; color: #57606a; }
footer { color: #57606a; font-size: .85rem; margin-top: 2rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _header(report: Report, fn: Any) -> str:
    m = fn.manifest
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = (f"{_e(m.task)} function ({_e(m.method)}), backbone {_e(m.backbone.name)}, "
            f"digest <code>{_e(m.digest[:19])}…</code>")
    return (f"<h1>Evaluation report</h1><div class=sub>{what}<br>data: {_e(report.source)} · "
            f"{_e(report.metrics.get('examples', '?'))} examples · written {when}</div>")


def _cards(report: Report) -> str:
    cards = [(NAMES.get(k, k.replace("_", " ")), _number(v)) for k, v in report.metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if report.mistakes is not None:
        cards.append(("misclassified", str(len(report.mistakes))))
    notes = "".join(f"<div class=note>{_e(n)}</div>" for n in report.notes)
    return "<div class=cards>" + "".join(
        f"<div class=card><div class=v>{v}</div><div class=k>{_e(k)}</div></div>"
        for k, v in cards) + "</div>" + notes


def _table(report: Report) -> str:
    if not report.table:
        return ""
    keys = list(report.table[0])
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = ""
    for row in report.table:
        cells = f"<td>{_e(row[keys[0]])}</td>"
        for key in keys[1:]:
            bar = (f'<span class=bar style="width: {4 * row[key]:.2f}rem"></span>'
                   if key == "f1" else "")
            cells += f"<td class=n>{_number(row[key])}{bar}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<h2>Per class</h2><table><tr>{head}</tr>{body}</table>"


def _figures(report: Report) -> str:
    from ._report import data_uri

    if not report.images:
        return ""
    wide = len(report.metrics.get("labels", [])) > WIDE_LABELS
    items = "".join(f'<figure{" class=wide" if wide else ""}><img src="{data_uri(png)}" '
                    f'alt="{_e(name)}"><figcaption>{_e(CAPTIONS.get(name, name))}</figcaption>'
                    "</figure>" for name, png in report.images.items())
    return f"<h2>Pictures</h2><div class=figures>{items}</div>"


def _mistakes(report: Report, limit: int) -> str:
    if report.mistakes is None:
        return ""
    if not report.mistakes:
        return "<h2>Misclassified</h2><p>None: every example was predicted right.</p>"
    rows = "".join(f"<tr><td class=n>{m['confidence']:.3f}</td><td>{_e(m['gold'])}</td>"
                   f"<td>{_e(m['predicted'])}</td><td class=text>{_e(m['text'])}</td>"
                   f"<td class=where>{_e(m['where'])}</td></tr>" for m in report.mistakes[:limit])
    more = len(report.mistakes) - limit
    rest = f"<p class=sub>{more} more in <code>misclassified.jsonl</code>.</p>" if more > 0 else ""
    return (f"<h2>Misclassified ({len(report.mistakes)}), most confident first</h2>"
            "<table><tr><th>confidence</th><th>gold</th><th>predicted</th><th>text</th>"
            f"<th>where</th></tr>{rows}</table>{rest}")


def page(report: Report, fn: Any, limit: int) -> str:
    """The whole report page."""
    files = ["metrics.json"] + (["per_class.csv"] if report.table else []) + list(
        report.images) + (["misclassified.jsonl"] if report.mistakes is not None else [])
    footer = ("<footer>Files beside this page: " + ", ".join(f"<code>{_e(f)}</code>"
                                                            for f in files) + ".</footer>")
    body = (_header(report, fn) + _cards(report) + _table(report) + _figures(report)
            + _mistakes(report, limit) + footer)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Evaluation report: {_e(fn.manifest.task)}</title><style>{_STYLE}</style>"
            f"</head><body><main>{body}</main></body></html>\n")
