"""Evaluation reports: the files, their agreement with `evaluate`, calibration computed by
hand, the HTML page (self-contained, escaped, rendered in headless Chromium when present)."""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_reviews, run_cli

import funcformer
from funcformer import DataError
from funcformer._report import reliability, write_report

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFY_FILES = {"metrics.json", "per_class.csv", "confusion_matrix.png", "reliability.png",
                  "misclassified.jsonl", "report.html"}
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def head_fn(tiny_backbone: Path) -> funcformer.Function:
    # few epochs: a function that still makes mistakes, so there is something to list
    return funcformer.train("classify", make_reviews(), backbone=tiny_backbone, progress=False,
                            epochs=2)


@pytest.fixture()
def eval_csv(tmp_path: Path) -> Path:
    rows = [*make_reviews(12, seed=3), ("the <b>food</b> & the staff were rude", "negative")]
    path = tmp_path / "eval.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_classify_report(head_fn: funcformer.Function, eval_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    metrics = write_report(head_fn, eval_csv, out)
    assert {p.name for p in out.iterdir()} == CLASSIFY_FILES
    assert json.loads((out / "metrics.json").read_text("utf-8")) == metrics
    expected = head_fn.evaluate(eval_csv)
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "examples"):
        assert metrics[key] == expected[key], key
    with open(out / "per_class.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [row["label"] for row in table] == head_fn.labels
    for row in table:
        assert float(row["f1"]) == pytest.approx(metrics["per_class"][row["label"]]["f1"])
        assert int(row["support"]) == metrics["per_class"][row["label"]]["support"]
    for name in ("confusion_matrix.png", "reliability.png"):
        width, height = _png_size((out / name).read_bytes())
        assert width > 300 and height > 300


def test_calibration_and_mistakes_match_the_predictions(head_fn: funcformer.Function,
                                                        eval_csv: Path, tmp_path: Path) -> None:
    metrics = write_report(head_fn, eval_csv, tmp_path / "r")
    with open(eval_csv, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    results = head_fn([row["text"] for row in rows])
    confidence = np.array([r.score for r in results])
    right = np.array([r.label == row["label"] for r, row in zip(results, rows, strict=True)])
    bins = np.minimum((confidence * 10).astype(int), 9)
    ece = sum((bins == b).sum() * abs(right[bins == b].mean() - confidence[bins == b].mean())
              for b in range(10) if (bins == b).any()) / len(rows)
    assert metrics["expected_calibration_error"] == pytest.approx(ece, abs=1e-6)
    assert sum(b["count"] for b in metrics["reliability"]) == len(rows)
    lines = (tmp_path / "r" / "misclassified.jsonl").read_text("utf-8").splitlines()
    mistakes = [json.loads(line) for line in lines]
    assert len(mistakes) == int((~right).sum()) > 0
    assert [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes),
                                                         reverse=True)
    for m in mistakes:
        line = int(m["where"].rsplit("line ", 1)[1])
        row = rows[line - 2]  # line 1 is the header
        assert (m["text"], m["gold"]) == (row["text"], row["label"])
        assert m["predicted"] != m["gold"]
        assert m["confidence"] == pytest.approx(head_fn(m["text"]).score)


def test_reliability_bins() -> None:
    bins, ece = reliability([1.0, 0.95, 0.05, 0.55], [True, False, True, True])
    assert [b["count"] for b in bins] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.975)
    assert ece == pytest.approx((2 * 0.475 + 0.95 + 0.45) / 4)
    assert reliability([], []) == (reliability([], [])[0], 0.0)


def test_html_is_self_contained_and_escaped(head_fn: funcformer.Function, eval_csv: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(head_fn, eval_csv, out)
    page = (out / "report.html").read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [
        (out / name).read_bytes() for name in ("confusion_matrix.png", "reliability.png")]
    without_images = re.sub(r'src="data:image/png;base64,[^"]+"', "", page)
    assert not re.search(r"<script|<link|(src|href)=|url\(|@import|https?:", without_images)
    mistakes = (out / "misclassified.jsonl").read_text("utf-8")
    listed = "<b>food</b>" in mistakes
    assert ("&lt;b&gt;food&lt;/b&gt; &amp; the staff" in page) == listed
    assert "<b>" not in page


def test_html_escapes_the_data_source(head_fn: funcformer.Function, eval_csv: Path,
                                      tmp_path: Path) -> None:
    odd = eval_csv.rename(eval_csv.parent / "a&b<i>.csv")
    write_report(head_fn, odd, tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text("utf-8")
    assert "a&amp;b&lt;i&gt;.csv" in page and "<i>" not in page
    assert f"{json.loads((tmp_path / 'r' / 'metrics.json').read_text())['accuracy']:.4f}" in page


def test_multi_label_report(tiny_backbone: Path, tmp_path: Path) -> None:
    from test_multilabel import make_tagged

    fn = funcformer.train("classify", make_tagged(), backbone=tiny_backbone, progress=False,
                          epochs=5)
    data = make_tagged(30, seed=5)
    metrics = write_report(fn, data, tmp_path / "r")
    assert {p.name for p in (tmp_path / "r").iterdir()} == CLASSIFY_FILES
    expected = fn.evaluate(data)
    for key in ("micro_f1", "macro_f1", "accuracy", "per_class"):
        assert metrics[key] == expected[key]
    for label, cells in metrics["label_confusion"].items():
        assert sum(map(sum, cells)) == 30
        assert cells[1][1] + cells[1][0] == metrics["per_class"][label]["support"]
    assert sum(b["count"] for b in metrics["reliability"]) == 30 * len(fn.labels)
    mistakes = [json.loads(x) for x in
                (tmp_path / "r" / "misclassified.jsonl").read_text("utf-8").splitlines()]
    assert len(mistakes) == round(30 * (1 - metrics["accuracy"]))
    assert "one 2x2 table per label" in (tmp_path / "r" / "report.html").read_text("utf-8")


def test_other_tasks_get_metrics_and_a_page(tiny_backbone: Path, tmp_path: Path) -> None:
    from test_pair import make_pairs

    fn = funcformer.train("pair", make_pairs(24), backbone=tiny_backbone, epochs=1,
                          progress=False)
    metrics = write_report(fn, make_pairs(20, seed=3), tmp_path / "r")
    assert metrics == fn.evaluate(make_pairs(20, seed=3))
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"metrics.json", "report.html"}
    assert "spearman" in (tmp_path / "r" / "report.html").read_text("utf-8").lower()


def test_tag_reports_write_the_per_type_table(tiny_backbone: Path, tmp_path: Path) -> None:
    from test_tag import toy_rows

    fn = funcformer.train("tag", toy_rows(30), backbone=tiny_backbone, method="head", epochs=3,
                          learning_rate=0.05, batch_size=8, progress=False)
    metrics = write_report(fn, toy_rows(10, seed=2), tmp_path / "r")
    assert metrics == fn.evaluate(toy_rows(10, seed=2))
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"metrics.json", "per_class.csv",
                                                           "report.html"}
    with open(tmp_path / "r" / "per_class.csv", encoding="utf-8") as handle:
        rows = {row["label"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(metrics["per_type"])
    for label, row in rows.items():
        assert float(row["f1"]) == pytest.approx(metrics["per_type"][label]["f1"])


def test_zero_shot_functions_get_a_classification_report(tiny_backbone: Path,
                                                         tmp_path: Path) -> None:
    fn = funcformer.train("zero_shot", ["positive", "negative"], backbone=tiny_backbone)
    metrics = write_report(fn, make_reviews(5), tmp_path / "r")
    assert metrics["accuracy"] == fn.evaluate(make_reviews(5))["accuracy"]
    assert {p.name for p in (tmp_path / "r").iterdir()} == CLASSIFY_FILES


def test_cli_eval_report(head_fn: funcformer.Function, eval_csv: Path, tmp_path: Path,
                         capsys) -> None:
    directory = head_fn.save(tmp_path / "fn")
    out = tmp_path / "reports" / "first"
    capsys.readouterr()
    assert run_cli("eval", directory, eval_csv, "--report", out) == 0
    printed = capsys.readouterr().out
    assert "expected calibration error" in printed and "report.html" in printed
    assert {p.name for p in out.iterdir()} == CLASSIFY_FILES
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngreat,positive\nodd,mystery\n", "utf-8")
    assert run_cli("eval", directory, bad, "--report", tmp_path / "nothing") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.csv, line 3" in err and "Traceback" not in err
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(DataError, match="mystery"):
        write_report(head_fn, bad, tmp_path / "nothing")


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("screenshot_report",
                                                  ROOT / "scripts" / "screenshot_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_in_headless_chromium(head_fn: funcformer.Function, eval_csv: Path,
                                             tmp_path: Path) -> None:
    shot = _screenshot_module()
    if shot.find_browser() is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    write_report(head_fn, eval_csv, tmp_path / "r")
    png = shot.screenshot(tmp_path / "r" / "report.html", tmp_path / "shot.png", 1200, 1400)
    from matplotlib.image import imread

    pixels = (imread(png)[..., :3] * 255).round()  # (H, W, 3)
    assert pixels.shape[:2] == (1400, 1200)
    # The confusion matrix's darkest blue (matplotlib's Blues: #08306b) shows only if the
    # embedded picture was decoded and drawn.
    dark_blue = (np.abs(pixels - [8, 48, 107]).max(axis=-1) <= 12).sum()
    assert dark_blue > 500
    assert pixels.std() > 20  # not a blank page
