"""The `funcformer` command line, run in-process through `funcformer._cli.main`.

`main` ends in `sys.exit(code)`; `cli()` below catches that and returns (code, stdout, stderr).
Training uses the tiny random BERT from conftest and `--epochs 2`, once per module where the
test only needs *a* trained function.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_reviews

import funcformer
from funcformer import ArtifactError, DataError, TaskError
from funcformer._cli import main
from funcformer._data import MAX_LABEL_CHARS, MAX_TEXT_CHARS, label_set, read_examples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["negative", "positive"]



def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run `funcformer ARGS` in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def assert_clean_error(code: int, err: str) -> None:
    """Exit 1, one `error:` message on stderr, no traceback."""
    assert code == 1, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    assert "internal error" not in err


def write_reviews(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# Module fixtures: train once
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.csv", make_reviews())


def _train(tiny_backbone: Path, data: Path, out: Path, *extra: str) -> Path:
    with pytest.raises(SystemExit) as info:
        main(["train", "classify", str(data), "--out", str(out), "--backbone",
              str(tiny_backbone), "--epochs", "2", "--method", "head", *extra])
    assert info.value.code in (0, None)
    return out


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path,
                module_data: Path) -> Path:
    """A head-method function trained through the CLI."""
    return _train(tiny_backbone, module_data, tmp_path_factory.mktemp("fn") / "sentiment")


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path,
             module_data: Path) -> Path:
    """A full-fine-tuning function trained through the CLI."""
    return _train(tiny_backbone, module_data, tmp_path_factory.mktemp("fn") / "full",
                  "--method", "full")


@pytest.fixture()
def function_copy(tmp_path: Path, trained_dir: Path) -> Path:
    """A private copy of the trained function that a test may damage."""
    return Path(shutil.copytree(trained_dir, tmp_path / "copy"))


# --------------------------------------------------------------------------------------------
# Help and version
# --------------------------------------------------------------------------------------------

def test_help(capsys) -> None:
    code, out, err = cli(capsys, "--help")
    assert code == 0
    for word in ("train", "predict", "eval", "info", "quickstart", "update", "serve", "map",
                 "explain", "--debug", "--version"):
        assert word in out
    assert "Traceback" not in err


@pytest.mark.parametrize(("command", "options"), [
    ("train", ["--out", "--method", "--eval", "--backbone", "--text-column", "--label-column",
               "--epochs", "--learning-rate", "--batch-size", "--max-length", "--seed",
               "--device"]),
    ("predict", ["--input", "--output", "--text-column", "--device"]),
    ("eval", ["--report", "--text-column", "--label-column", "--device"]),
    ("info", ["--json"]),
    ("quickstart", ["--out", "--method"]),
])
def test_subcommand_help(capsys, command: str, options: list[str]) -> None:
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    assert f"funcformer {command}" in out
    for option in options:
        assert option in out


def test_version(capsys) -> None:
    code, out, err = cli(capsys, "--version")
    assert code == 0, err
    assert out.strip() == f"funcformer {funcformer.__version__}"


def test_version_option_before_a_command_prints_the_version(capsys, tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "--version", "info", tmp_path / "whatever")
    assert code == 0
    assert out.strip() == f"funcformer {funcformer.__version__}"


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

def test_train_head_writes_artifact(capsys, tmp_path: Path, tiny_backbone: Path,
                                    reviews_csv: Path) -> None:
    out_dir = tmp_path / "fn"
    code, out, err = cli(capsys, "train", "classify", reviews_csv, "--out", out_dir,
                         "--backbone", tiny_backbone, "--epochs", "2", "--method", "head")
    assert code == 0, err
    assert (out_dir / "funcformer.json").is_file()
    assert (out_dir / "head.safetensors").is_file()
    assert not (out_dir / "encoder").exists()
    assert "Trained classify (head) on 40 examples" in out
    assert f"Saved to {out_dir}\n" in out  # nothing was there
    first = json.loads((out_dir / "funcformer.json").read_text("utf-8"))["digest"]
    labels = tmp_path / "labels.txt"
    labels.write_text("food\nstaff\n", "utf-8")
    code, out, err = cli(capsys, "train", "zero_shot", labels, "--out", out_dir,
                         "--backbone", tiny_backbone)
    assert code == 0, err  # another task over it: replaced, and said so
    assert (f"Saved to {out_dir}, replacing the classify function (version "
            f"{first.removeprefix('sha256:')[:12]}, ") in out
    code, out, err = cli(capsys, "train", "classify", reviews_csv, "--out", out_dir,
                         "--backbone", tiny_backbone, "--epochs", "2", "--method", "head")
    manifest = json.loads((out_dir / "funcformer.json").read_text("utf-8"))
    assert manifest["format_version"] == 1
    assert manifest["task"] == "classify"
    assert manifest["method"] == "head"
    assert manifest["labels"] == LABELS
    assert manifest["config"]["epochs"] == 2
    assert manifest["backbone"]["included"] is False
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fn.")]  # no temp dirs


def test_train_into_existing_empty_dir(capsys, tmp_path: Path, tiny_backbone: Path,
                                       module_data: Path) -> None:
    out_dir = tmp_path / "empty"
    out_dir.mkdir()
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", out_dir,
                       "--backbone", tiny_backbone, "--epochs", "2")
    assert code == 0, err
    assert (out_dir / "funcformer.json").is_file()


def test_train_full_writes_encoder(full_dir: Path) -> None:
    assert (full_dir / "funcformer.json").is_file()
    assert (full_dir / "head.safetensors").is_file()
    assert (full_dir / "encoder" / "model.safetensors").is_file()
    assert (full_dir / "encoder" / "config.json").is_file()
    manifest = json.loads((full_dir / "funcformer.json").read_text("utf-8"))
    assert manifest["method"] == "full"
    assert manifest["backbone"]["included"] is True


def test_train_module_fixture_is_an_artifact(trained_dir: Path) -> None:
    assert (trained_dir / "funcformer.json").is_file()
    assert (trained_dir / "head.safetensors").is_file()


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------

def parse_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_prediction(record: dict, text: str) -> None:
    assert set(record) == {"text", "label", "score", "scores"}
    assert record["text"] == text
    assert record["label"] in LABELS
    assert set(record["scores"]) == set(LABELS)
    assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["score"] == pytest.approx(max(record["scores"].values()))
    assert record["scores"][record["label"]] == pytest.approx(record["score"])


def test_predict_texts_in_input_order(capsys, trained_dir: Path) -> None:
    texts = ["text a", "the food was great and the staff was very friendly"]
    code, out, err = cli(capsys, "predict", trained_dir, *texts)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts, strict=True):
        check_prediction(json.loads(line), text)


def test_predict_keeps_order_for_many_texts_of_mixed_length(capsys, trained_dir: Path) -> None:
    # the backbone sorts texts by length internally; output must still follow the input
    texts = ["the hotel room was dirty and cold and the staff was rude", "great", "awful",
             "the phone battery was useless", "lovely food", "café ünïcode 的"]
    code, out, _ = cli(capsys, "predict", trained_dir, *texts)
    assert code == 0
    assert [r["text"] for r in parse_lines(out)] == texts


def test_predict_same_text_same_result(capsys, trained_dir: Path) -> None:
    _, out, _ = cli(capsys, "predict", trained_dir, "the food was great", "x",
                    "the food was great")
    first, _, third = parse_lines(out)
    assert first == third


def test_predict_input_txt(capsys, tmp_path: Path, trained_dir: Path) -> None:
    texts = ["the food was great", "the staff was rude", 'he said "fine", then left']
    path = tmp_path / "inputs.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, out, err = cli(capsys, "predict", trained_dir, "--input", path)
    assert code == 0, err
    records = parse_lines(out)
    assert len(records) == 3
    for record, text in zip(records, texts, strict=True):
        check_prediction(record, text)


def test_predict_input_jsonl(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"text": "lovely room", "id": 1}\n\n{"text": "cold food"}\n', "utf-8")
    code, out, err = cli(capsys, "predict", trained_dir, "--input", path)
    assert code == 0, err
    assert [r["text"] for r in parse_lines(out)] == ["lovely room", "cold food"]


def test_predict_input_csv_with_text_column(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "inputs.csv"
    path.write_text('id,review\n1,"great, really"\n2,awful\n', "utf-8")
    code, out, err = cli(capsys, "predict", trained_dir, "--input", path,
                         "--text-column", "review")
    assert code == 0, err
    assert [r["text"] for r in parse_lines(out)] == ["great, really", "awful"]


def test_predict_output_file(capsys, tmp_path: Path, trained_dir: Path) -> None:
    target = tmp_path / "sub" / "out.jsonl"
    code, out, err = cli(capsys, "predict", trained_dir, "one", "two", "three",
                         "--output", target)
    assert code == 0, err
    assert out.strip() == f"Wrote 3 results to {target}"  # it printed nothing
    records = parse_lines(target.read_text("utf-8"))
    assert [r["text"] for r in records] == ["one", "two", "three"]
    for record in records:
        check_prediction(record, record["text"])
    assert [p.name for p in target.parent.iterdir()] == ["out.jsonl"]  # no temp file left


def test_outputs_that_would_destroy_data_are_refused_first(capsys, tmp_path: Path,
                                                          function_copy: Path) -> None:
    texts = tmp_path / "texts.csv"
    texts.write_text("text\ngood\nbad\n", "utf-8")
    (tmp_path / "afile").write_text("x", "utf-8")
    other = tmp_path / "other-function"  # any function's folder, not only the one called
    other.mkdir()
    (other / "funcformer.json").write_text("{}", "utf-8")
    before = snapshot(function_copy)
    refused = {
        ("predict", function_copy, "x", "--output", other / "preds.jsonl"):
            "is inside the function",
        ("explain", function_copy, "good", "--html", other / "sub" / "why.html"):
            "is inside the function",
        ("eval", function_copy, texts, "--report", other / "report"): "is inside the function",
        ("update", function_copy, texts, "--out", other / "v2"): "is inside the function",
        ("distill", function_copy, "--out", other / "small"): "is inside the function",
        ("predict", function_copy, "--input", texts, "--output", texts): "is the input file",
        ("predict", function_copy, "x", "--output", function_copy / "funcformer.json"):
            "is inside the function",
        ("predict", function_copy, "x", "--output", tmp_path): "is a directory",
        ("predict", function_copy, "x", "--output", tmp_path / "afile" / "o.jsonl"):
            "afile is a file, so no directory can be made there",
        ("suggest", function_copy, texts, "--out", texts): "is the input file",
        # under the input file: it said 'inside the function .../texts.csv'
        ("predict", function_copy, "--input", texts, "--output", texts / "o.jsonl"):
            "texts.csv is a file, so no directory can be made there",
        ("suggest", function_copy, texts, "--out", texts / "o.csv"):
            "texts.csv is a file, so no directory can be made there",
        ("eval", function_copy, texts, "--report", tmp_path / "afile"): "is a file; the report "
                                                                          "is a directory",
        ("update", function_copy, texts, "--out", function_copy): "is the function update "
                                                                  "starts from",
        ("distill", function_copy, "--out", f"{function_copy}/"): "is the function distill "
                                                                 "starts from",
        # these three wrote into the artifact's directory
        ("eval", function_copy, texts, "--report", function_copy): "is inside the function",
        ("update", function_copy, texts, "--out", function_copy / "v2"): "is inside the "
                                                                         "function",
        ("distill", function_copy, "--out", function_copy / "small"): "is inside the function",
    }
    for args, says in refused.items():
        code, _, err = cli(capsys, *args)
        assert_clean_error(code, err)
        assert says in err and "Fix: " in err, err
    assert texts.read_text("utf-8") == "text\ngood\nbad\n"
    assert snapshot(function_copy) == before
    assert sorted(p.name for p in other.iterdir()) == ["funcformer.json"]


def test_a_setting_given_as_flag_and_set_is_refused(capsys, tmp_path: Path,
                                                    function_copy: Path) -> None:
    data = write_reviews(tmp_path / "new.csv", make_reviews(6))
    for command in (("update", function_copy, data), ("distill", function_copy)):
        code, _, err = cli(capsys, *command, "--out", tmp_path / "o", "--epochs", "1", "--set",
                           "epochs=2")  # the flag silently won
        assert_clean_error(code, err)
        assert "epochs is given twice: --epochs 1 and --set epochs=2. Fix: give it once." in err
    assert not (tmp_path / "o").exists()


def test_serve_port_out_of_range_is_a_usage_error(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "serve", tmp_path, "--port", "70000")  # it bound 70000 % 65536
    assert code == 2 and "Invalid value for '--port'" in err and "65535" in err


def test_export_of_a_function_onnx_cannot_run(capsys, tmp_path: Path) -> None:
    from test_generate import write_tiny_lm

    from funcformer._tasks import generate

    out = generate.from_backbone(write_tiny_lm(tmp_path / "lm")).save(tmp_path / "g")
    code, _, err = cli(capsys, "export", out, "--onnx")  # was an AttributeError
    assert_clean_error(code, err)
    assert "ONNX export is for every task but generate; this is a generate function" in err
    assert not (out / "onnx").exists()


def test_predict_with_full_function(capsys, full_dir: Path) -> None:
    code, out, err = cli(capsys, "predict", full_dir, "great", "awful")
    assert code == 0, err
    assert [r["text"] for r in parse_lines(out)] == ["great", "awful"]


def test_metrics_without_a_row_count_print_none(capsys) -> None:
    """distill's held-out agreement came without its row count: '(? examples)'."""
    from funcformer._cli import _print_metrics

    _print_metrics({"held_out_teacher_agreement": 0.7})
    _print_metrics({"accuracy": 0.5, "examples": 12})
    out = capsys.readouterr().out
    assert "?" not in out and "(12 examples)" in out


def test_predict_nothing_to_predict(capsys, trained_dir: Path) -> None:
    code, out, err = cli(capsys, "predict", trained_dir)
    assert_clean_error(code, err)
    assert "Nothing to predict" in err
    assert "--input -" in err  # piped text needs it
    assert out == ""


def test_predict_texts_and_input_together(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\n", "utf-8")
    code, _, err = cli(capsys, "predict", trained_dir, "x", "--input", path)
    assert_clean_error(code, err)
    assert "not both" in err


def test_predict_empty_text_argument(capsys, trained_dir: Path) -> None:
    code, out, err = cli(capsys, "predict", trained_dir, "fine", "   ")
    assert_clean_error(code, err)
    assert "argument 2, field 'text'" in err  # was "<list>, index 1": a Python list's words
    assert out == ""
    import io

    from pytest import MonkeyPatch

    with MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO("fine\n\n\x00\n"))
        code, out, err = cli(capsys, "predict", trained_dir, "--input", "-")
    assert_clean_error(code, err)
    assert "stdin, line 3, field 'text'" in err  # its line in the input, blank lines counted


def test_predict_empty_stdin(capsys, monkeypatch: pytest.MonkeyPatch, trained_dir: Path) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    code, out, err = cli(capsys, "predict", trained_dir, "--input", "-")
    assert_clean_error(code, err)  # was "<list>, index 0, field 'text': the text is empty"
    assert err.startswith("error: stdin: no texts (the input was empty or only blank lines). "
                          "Fix: pipe one text per line") and out == ""


def test_predict_stdin_bytes(capsys, monkeypatch: pytest.MonkeyPatch, trained_dir: Path) -> None:
    import io

    class Stdin(io.StringIO):  # a text stream with the bytes underneath, as sys.stdin is
        def __init__(self, raw: bytes) -> None:
            super().__init__()
            self.buffer = io.BytesIO(raw)

    monkeypatch.setattr(sys, "stdin", Stdin("good\nbad\n".encode("utf-16")))
    code, out, err = cli(capsys, "predict", trained_dir, "--input", "-")
    assert code == 0, err
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["good", "bad"]
    monkeypatch.setattr(sys, "stdin", Stdin(b"caf\xe9\n"))  # Latin-1
    code, out, err = cli(capsys, "predict", trained_dir, "--input", "-")
    assert_clean_error(code, err)  # it was "a lone surrogate (U+DCE9)" in '<list>, index 0'
    assert "stdin: not valid UTF-8 (byte 0xe9 at offset 3). Fix: convert it" in err


def test_predict_bad_input_file(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ok"}\n{"text": 5}\n', "utf-8")
    code, out, err = cli(capsys, "predict", trained_dir, "--input", path)
    assert_clean_error(code, err)
    assert "in.jsonl, line 2, field 'text'" in err
    assert out == ""


def test_predict_missing_input_file(capsys, tmp_path: Path, trained_dir: Path) -> None:
    code, _, err = cli(capsys, "predict", trained_dir, "--input", tmp_path / "nope.txt")
    assert_clean_error(code, err)
    assert "nope.txt" in err and "no such file" in err


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------

def test_eval_prints_accuracy_and_macro_f1(capsys, trained_dir: Path, module_data: Path) -> None:
    code, out, err = cli(capsys, "eval", trained_dir, module_data)
    assert code == 0, err
    assert re.search(r"accuracy \d\.\d{4}", out)
    assert re.search(r"macro-F1 \d\.\d{4}", out)
    assert "(40 examples)" in out
    for label in LABELS:
        assert label in out


def test_eval_report(capsys, tmp_path: Path, trained_dir: Path, module_data: Path) -> None:
    pytest.importorskip("matplotlib")
    report = tmp_path / "report" / "nested"
    code, out, err = cli(capsys, "eval", trained_dir, module_data, "--report", report)
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text("utf-8"))
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix"):
        assert key in metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert f"accuracy {metrics['accuracy']:.4f}" in out
    assert f"macro-F1 {metrics['macro_f1']:.4f}" in out
    assert set(metrics["per_class"]) == set(LABELS)
    for row in metrics["per_class"].values():
        assert set(row) >= {"precision", "recall", "f1", "support"}
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert sum(map(sum, matrix)) == 40
    assert [sum(row) for row in matrix] == [metrics["per_class"][k]["support"] for k in LABELS]
    png = (report / "confusion_matrix.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert "Report written to" in out


def test_eval_custom_columns(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("review,y\ngreat,positive\nawful,negative\n", "utf-8")
    code, out, err = cli(capsys, "eval", trained_dir, path, "--text-column", "review",
                         "--label-column", "y")
    assert code == 0, err
    assert "(2 examples)" in out


def test_eval_unknown_label(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "unknown.jsonl"
    path.write_text('{"text": "great", "label": "positive"}\n\n'
                    '{"text": "odd", "label": "mystery"}\n', "utf-8")
    code, out, err = cli(capsys, "eval", trained_dir, path)
    assert_clean_error(code, err)
    assert "unknown.jsonl, line 3" in err
    assert "'mystery'" in err
    assert "negative, positive" in err  # what the function does know
    assert "accuracy" not in out


def test_eval_unknown_label_csv(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = write_reviews(tmp_path / "unknown.csv", [("great", "positive"), ("odd", "mystery")])
    code, _, err = cli(capsys, "eval", trained_dir, path)
    assert_clean_error(code, err)
    assert re.search(r"unknown\.csv, line \d+, field 'label': unknown label 'mystery'", err)


def test_eval_unknown_label_csv_exact_line(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = write_reviews(tmp_path / "unknown.csv", [("great", "positive"), ("odd", "mystery")])
    _, _, err = cli(capsys, "eval", trained_dir, path)
    assert "unknown.csv, line 3" in err


def test_eval_bad_data(capsys, tmp_path: Path, trained_dir: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "positive"}\n{"text": "", "label": "negative"}\n')
    code, _, err = cli(capsys, "eval", trained_dir, path)
    assert_clean_error(code, err)
    assert "bad.jsonl, line 2, field 'text'" in err


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------

def test_info(capsys, trained_dir: Path, tiny_backbone: Path) -> None:
    code, out, err = cli(capsys, "info", trained_dir)
    assert code == 0, err
    assert re.search(r"task\s+classify", out)
    assert re.search(r"method\s+head", out)
    assert re.search(r"labels\s+negative, positive", out)
    assert re.search(r"backbone\s+" + re.escape(str(tiny_backbone)) + r" \(referenced\)", out)
    assert "head.safetensors" in out
    assert "funcformer.json" in out


def test_info_full_function_says_included(capsys, full_dir: Path) -> None:
    code, out, _ = cli(capsys, "info", full_dir)
    assert code == 0
    assert "(included)" in out
    assert "encoder/model.safetensors" in out


def test_info_json(capsys, trained_dir: Path, tiny_backbone: Path) -> None:
    code, out, err = cli(capsys, "info", trained_dir, "--json")
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["format_version"] == 1
    assert manifest["task"] == "classify"
    assert manifest["labels"] == LABELS
    assert manifest["backbone"]["name"] == str(tiny_backbone)
    assert manifest["digest"].startswith("sha256:")
    assert manifest == json.loads((trained_dir / "funcformer.json").read_text("utf-8"))


# --------------------------------------------------------------------------------------------
# A real process: `python -m funcformer` (src/funcformer/__main__.py), else the console script
# --------------------------------------------------------------------------------------------

def command_line() -> list[str]:
    if Path(funcformer.__file__).with_name("__main__.py").is_file():
        return [sys.executable, "-m", "funcformer"]
    script = shutil.which("funcformer")
    if script is None:
        pytest.skip("neither src/funcformer/__main__.py nor a funcformer script on PATH")
    return [script]


def test_process_help() -> None:
    result = subprocess.run([*command_line(), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "predict" in result.stdout


def test_process_info_json_and_error(trained_dir: Path, tmp_path: Path) -> None:
    ok = subprocess.run([*command_line(), "info", str(trained_dir), "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["format_version"] == 1
    bad = subprocess.run([*command_line(), "info", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ")
    assert "missing" in bad.stderr
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------------------------------------
# Bad data through `train`
# --------------------------------------------------------------------------------------------

LONG_TEXT = json.dumps({"text": "x" * (MAX_TEXT_CHARS + 1), "label": "negative"})
LONG_LABEL = json.dumps({"text": "fine", "label": "y" * (MAX_LABEL_CHARS + 1)})
GOOD_JSON = '{"text": "the food was great", "label": "positive"}\n'
GOOD_CSV = "text,label\nthe food was great,positive\n"

# (id, file name, content, regex that must be in stderr after the file name or None)
BAD_DATA = [
    ("empty", "empty.csv", b"", None),
    ("whitespace-only", "blank.csv", b"  \n\n \t\n", None),
    ("header-only", "header.csv", b"text,label\n", None),
    ("missing-text-column", "cols.csv", b"review,label\ngreat,positive\n", r", line 1"),
    ("missing-label-column", "cols.csv", b"text,sentiment\ngreat,positive\n", r", line 1"),
    ("empty-label", "label.csv", (GOOD_CSV + "bad food,\n").encode(), r", line \d+"),
    ("empty-text", "text.csv", (GOOD_CSV + ",negative\n").encode(), r", line \d+"),
    ("whitespace-text", "text.csv", (GOOD_CSV + '"   ",negative\n').encode(), r", line \d+"),
    ("invalid-utf8", "latin.csv", b"text,label\nhello,positive\ncaf\xe9,negative\n",
     r", line 3: .*byte offset 29"),  # len(b"text,label\nhello,positive\ncaf")
    ("malformed-jsonl", "bad.jsonl", (GOOD_JSON + '{"text": "x", \n').encode(), r", line 2"),
    ("jsonl-list", "bad.jsonl", (GOOD_JSON + '["x", "negative"]\n').encode(), r", line 2"),
    ("jsonl-text-number", "bad.jsonl", (GOOD_JSON + '{"text": 3, "label": "n"}\n').encode(),
     r", line 2, field 'text'"),
    ("jsonl-text-null", "bad.jsonl", (GOOD_JSON + '{"text": null, "label": "n"}\n').encode(),
     r", line 2, field 'text'"),
    ("wrong-field-count", "fields.csv", (GOOD_CSV + "a,b,c\n").encode(), r", line \d+"),
    ("single-class", "one.csv", (GOOD_CSV + "lovely room,positive\n").encode(), None),
    ("text-too-long", "long.jsonl", (GOOD_JSON + LONG_TEXT + "\n").encode(),
     r", line 2, field 'text'"),
    ("label-too-long", "long.jsonl", (GOOD_JSON + LONG_LABEL + "\n").encode(),
     r", line 2, field 'label'"),
    ("unknown-extension", "data.xlsx", b"text,label\n", None),
    ("bom-and-crlf", "crlf.csv", b"\xef\xbb\xbftext,label\r\ngreat,positive\r\nbad,\r\n",
     r", line \d+, field 'label'"),
    ("after-multiline", "multi.csv",
     b'text,label\n"great\nfood",positive\n\nbad,\n', r", line \d+, field 'label'"),
    ("blank-lines-jsonl", "blank.jsonl", (GOOD_JSON + "\n\n" + '{"text": " ", "label": "n"}\n')
     .encode(), r", line 4, field 'text'"),
]


def library_message(path: Path) -> str:
    """What the library says about this data (train checks labels with label_set)."""
    try:
        label_set(read_examples(path), "classify")
    except DataError as err:
        return str(err)
    raise AssertionError(f"{path} should be bad data")


@pytest.mark.parametrize(("name", "content", "where"),
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_DATA])
def test_train_rejects_bad_data(capsys, tmp_path: Path, tiny_backbone: Path, name: str,
                                content: bytes, where: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    out_dir = tmp_path / "out"
    code, _, err = cli(capsys, "train", "classify", path, "--out", out_dir,
                       "--backbone", tiny_backbone, "--epochs", "2")
    assert_clean_error(code, err)
    assert name in err
    if where is not None:
        assert re.search(re.escape(name) + where, err), err
    assert err == f"error: {library_message(path)}\n"  # the library's message, unchanged
    assert not out_dir.exists()


def test_train_bad_data_messages_give_details(capsys, tmp_path: Path,
                                              tiny_backbone: Path) -> None:
    cases = {
        "cols.csv": (b"review,label\ngreat,positive\n", ["'text'", "review, label",
                                                         "--text-column"]),
        "cols2.csv": (b"text,sentiment\ngreat,positive\n", ["'label'", "--label-column"]),
        "latin.csv": (b"text,label\nok,positive\ncaf\xe9,negative\n",
                      ["line 3", "byte offset 26", "encoding is unknown", "convert it to UTF-8"]),
        "one.csv": (b"text,label\na,positive\nb,positive\n", ["'positive'", "at least two"]),
        "long.jsonl": ((LONG_TEXT + "\n").encode(), [f"{MAX_TEXT_CHARS:,}"]),
        "label.jsonl": ((LONG_LABEL + "\n").encode(), [f"limit of {MAX_LABEL_CHARS}"]),
    }
    for name, (content, parts) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        code, _, err = cli(capsys, "train", "classify", path, "--out", tmp_path / "out",
                           "--backbone", tiny_backbone)
        assert_clean_error(code, err)
        for part in parts:
            assert part in err, (name, part, err)


def test_train_bad_csv_exact_line(capsys, tmp_path: Path, tiny_backbone: Path) -> None:
    path = tmp_path / "label.csv"
    path.write_bytes(b'text,label\n"great\nfood",positive\n\nbad,\n')
    _, _, err = cli(capsys, "train", "classify", path, "--out", tmp_path / "out",
                    "--backbone", tiny_backbone)
    assert "label.csv, line 5, field 'label'" in err


def test_train_custom_columns(capsys, tmp_path: Path, tiny_backbone: Path) -> None:
    path = tmp_path / "r.tsv"
    rows = make_reviews(5)
    path.write_text("review\tsentiment\n" + "".join(f"{t}\t{y}\n" for t, y in rows), "utf-8")
    code, _, err = cli(capsys, "train", "classify", path, "--out", tmp_path / "fn",
                       "--backbone", tiny_backbone, "--epochs", "2",
                       "--text-column", "review", "--label-column", "sentiment")
    assert code == 0, err
    assert (tmp_path / "fn" / "funcformer.json").is_file()


# --------------------------------------------------------------------------------------------
# Other errors: exit 1, one clear message, no traceback
# --------------------------------------------------------------------------------------------

def test_train_nonexistent_data_file(capsys, tmp_path: Path, tiny_backbone: Path) -> None:
    code, _, err = cli(capsys, "train", "classify", tmp_path / "nope.csv", "--out",
                       tmp_path / "out", "--backbone", tiny_backbone)
    assert_clean_error(code, err)
    assert "nope.csv" in err and "no such file" in err


def test_train_unknown_task(capsys, tmp_path: Path, tiny_backbone: Path,
                            module_data: Path) -> None:
    code, _, err = cli(capsys, "train", "regress", module_data, "--out", tmp_path / "out",
                       "--backbone", tiny_backbone)
    assert_clean_error(code, err)
    assert "'regress'" in err and "classify" in err


def test_train_unknown_method(capsys, tmp_path: Path, tiny_backbone: Path,
                              module_data: Path) -> None:
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", tmp_path / "out",
                       "--backbone", tiny_backbone, "--method", "qlora")
    assert_clean_error(code, err)
    assert "'qlora'" in err and "head" in err and "lora" in err


@pytest.mark.parametrize(("option", "value", "name"), [
    ("--epochs", "0", "epochs"), ("--batch-size", "0", "batch_size"),
    ("--max-length", "-1", "max_length"), ("--learning-rate", "0", "learning_rate")])
def test_train_bad_numbers(capsys, tmp_path: Path, tiny_backbone: Path, module_data: Path,
                           option: str, value: str, name: str) -> None:
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", tmp_path / "out",
                       "--backbone", tiny_backbone, option, value)
    assert_clean_error(code, err)
    assert name in err and value in err


def test_train_missing_backbone(capsys, tmp_path: Path, module_data: Path) -> None:
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", tmp_path / "out",
                       "--backbone", "/nonexistent/dir", "--epochs", "2")
    assert_clean_error(code, err)
    assert "/nonexistent/dir" in err
    assert "Tried" in err and "does not exist" in err
    assert "Fix:" in err
    assert not (tmp_path / "out").exists()


def test_train_backbone_dir_without_config(capsys, tmp_path: Path, module_data: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", tmp_path / "out",
                       "--backbone", empty, "--epochs", "2")
    assert_clean_error(code, err)
    assert "config.json" in err


def test_train_refuses_non_artifact_out_dir(capsys, tmp_path: Path, tiny_backbone: Path,
                                            module_data: Path) -> None:
    keep = tmp_path / "keep"
    (keep / "sub").mkdir(parents=True)
    (keep / "notes.txt").write_text("precious", "utf-8")
    (keep / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(keep)
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", keep,
                       "--backbone", tiny_backbone, "--epochs", "2")
    assert code == 1
    # training ran first (its progress bar is on stderr); the error is the last thing said
    assert_clean_error(code, err[err.index("error: "):])
    assert "refusing to overwrite" in err
    assert snapshot(keep) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no temp dirs left


@pytest.mark.parametrize("command", ["predict", "eval", "info"])
def test_function_dir_does_not_exist(capsys, tmp_path: Path, module_data: Path,
                                     command: str) -> None:
    missing = tmp_path / "no-such-fn"
    extra = {"predict": ["hello"], "eval": [module_data], "info": []}[command]
    code, out, err = cli(capsys, command, missing, *extra)
    assert_clean_error(code, err)
    assert "no-such-fn" in err and "no such directory" in err
    assert out == ""


@pytest.mark.parametrize("command", ["predict", "eval", "info"])
def test_dir_without_manifest(capsys, tmp_path: Path, module_data: Path, command: str) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "head.safetensors").write_bytes(b"")
    extra = {"predict": ["hello"], "eval": [module_data], "info": []}[command]
    code, _, err = cli(capsys, command, plain, *extra)
    assert_clean_error(code, err)
    assert "funcformer.json" in err and "not a funcformer function" in err
    (plain / "sentiment").mkdir()  # a folder of functions, as serve takes
    (plain / "sentiment" / "funcformer.json").write_text("{}", "utf-8")
    code, _, err = cli(capsys, command, plain, *extra)
    assert_clean_error(code, err)
    if command != "info":  # (info describes such a folder)
        assert "not a function but a folder of functions (sentiment)" in err
        assert f"Fix: pass one of them, e.g. {plain / 'sentiment'}" in err


@pytest.mark.parametrize("command", ["predict", "eval", "info"])
def test_future_format_version(capsys, function_copy: Path, module_data: Path,
                               command: str) -> None:
    manifest_file = function_copy / "funcformer.json"
    manifest = json.loads(manifest_file.read_text("utf-8"))
    manifest["format_version"] = 999
    manifest["library_version"] = "9.0.0"
    manifest_file.write_text(json.dumps(manifest), "utf-8")
    extra = {"predict": ["hello"], "eval": [module_data], "info": ["--json"]}[command]
    code, out, err = cli(capsys, command, function_copy, *extra)
    assert_clean_error(code, err)
    assert "999" in err and "9.0.0" in err
    assert "pip install -U funcformer" in err
    assert out == ""


def test_corrupt_manifest(capsys, function_copy: Path) -> None:
    (function_copy / "funcformer.json").write_text("{not json", "utf-8")
    code, _, err = cli(capsys, "info", function_copy)
    assert_clean_error(code, err)
    assert "not valid JSON" in err


def test_manifest_missing_a_field(capsys, function_copy: Path) -> None:
    manifest_file = function_copy / "funcformer.json"
    manifest = json.loads(manifest_file.read_text("utf-8"))
    del manifest["backbone"]
    manifest_file.write_text(json.dumps(manifest), "utf-8")
    code, _, err = cli(capsys, "info", function_copy)
    assert_clean_error(code, err)
    assert "'backbone'" in err


def test_missing_head_weights(capsys, function_copy: Path) -> None:
    (function_copy / "head.safetensors").unlink()
    code, _, err = cli(capsys, "predict", function_copy, "hello")
    assert_clean_error(code, err)
    assert "head.safetensors" in err


def test_damaged_head_weights(capsys, function_copy: Path) -> None:
    (function_copy / "head.safetensors").write_bytes(b"garbage")
    code, _, err = cli(capsys, "predict", function_copy, "hello")
    assert_clean_error(code, err)
    assert "head.safetensors" in err and "damaged" in err


@pytest.mark.parametrize(("command", "setting", "where"), [
    ("train", "config=x.yaml", "--config FILE"),
    ("train", "data=x.csv", "its DATA argument"),
    ("update", "memory=2", "--memory"),
    ("update", "eval_data=x.csv", "--eval"),
    ("distill", "temperature=1", "--temperature"),
    ("distill", "data=x.csv", "--data"),
    ("tune", "seed=1", "--seed"),
    ("tune", "trials=3", "--trials"),
    ("update", "device=cuda", "--device"),
    ("distill", "device=cuda", "--device"),
    ("tune", "device=cuda", "--device"),
])
def test_set_refuses_what_the_command_takes_itself(capsys, tmp_path: Path, trained_dir: Path,
                                                   module_data: Path, command: str,
                                                   setting: str, where: str) -> None:
    """--set KEY=VALUE for a KEY the command passes on itself was an internal error ("got
    multiple values for keyword argument")."""
    out = tmp_path / "out"
    args = {"train": ["train", "classify", module_data, "--out", out],
            "update": ["update", trained_dir, module_data, "--out", out],
            "distill": ["distill", trained_dir, "--out", out],
            "tune": ["tune", "classify", module_data, "--out", out]}[command]
    code, _, err = cli(capsys, *args, "--set", setting)
    assert_clean_error(code, err)
    assert f"--set {setting.split('=')[0]}: this command takes it as {where}" in err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--out", "--log-dir", "--checkpoint-dir"])
def test_unwritable_output_paths_fail_before_training(capsys, tmp_path: Path, module_data: Path,
                                                      tiny_backbone: Path, flag: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A path under a file cannot be created: said at once, not after training (a bad --out
    used to surface as a bare OSError on the temporary directory once training was done)."""
    import funcformer._methods

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(funcformer._methods, "fit", no_training)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    paths = {"--out": tmp_path / "fn", "--log-dir": tmp_path / "logs",
             "--checkpoint-dir": tmp_path / "checkpoints", flag: blocker / "sub"}
    code, _, err = cli(capsys, "train", "classify", module_data, "--backbone", tiny_backbone,
                       "--method", "full", "--epochs", 1, *itertools.chain.from_iterable(
                             (f, p) for f, p in paths.items() if f in ("--out", flag)))
    assert_clean_error(code, err)
    assert f"{blocker} is a file, so no directory can be made there" in err
    assert not (tmp_path / "fn").exists()


# --------------------------------------------------------------------------------------------
# --device: passed on to the library, checked before any work
# --------------------------------------------------------------------------------------------

def _device_command(command: str, function: Path, data: Path, out: Path) -> list[object]:
    """A command line of each command that takes --device (short of --device itself)."""
    return {"train": ["train", "classify", data, "--out", out],
            "predict": ["predict", function, "great"],
            "eval": ["eval", function, data],
            "explain": ["explain", function, "great"],
            "update": ["update", function, data, "--out", out],
            "suggest": ["suggest", function, data],
            "distill": ["distill", function, "--out", out],
            "tune": ["tune", "classify", data, "--out", out],
            "map": ["map", function, data, out.with_suffix(".csv")]}[command]


DEVICE_COMMANDS = ["train", "predict", "eval", "explain", "update", "suggest", "distill",
                   "tune", "map"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def test_train_and_predict_on_device_cpu(capsys, tmp_path: Path, tiny_backbone: Path,
                                         module_data: Path) -> None:
    out_dir = _train(tiny_backbone, module_data, tmp_path / "fn", "--device", "cpu")
    code, out, err = cli(capsys, "predict", out_dir, "great", "--device", "cpu")
    assert code == 0, err
    check_prediction(parse_lines(out)[0], "great")


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
@pytest.mark.parametrize(("device", "says"), [
    ("tpu", "device 'tpu' is not a torch device"),
    pytest.param("cuda", "device 'cuda': this machine (or this torch build", marks=NO_CUDA)])
def test_an_unusable_device_is_refused_before_any_work(
        capsys, tmp_path: Path, trained_dir: Path, module_data: Path, command: str,
        device: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("a function was loaded or trained")

    for name in ("load", "train"):
        monkeypatch.setattr(f"funcformer._function.{name}", reached)
    out = tmp_path / "out"
    code, _, err = cli(capsys, *_device_command(command, trained_dir, module_data, out),
                       "--device", device)
    assert_clean_error(code, err)
    assert says in err and "Fix: " in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_the_device_is_passed_on_as_given(capsys, tmp_path: Path, trained_dir: Path,
                                          module_data: Path, command: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """'cuda:1' reaches train, load, distill or tune (the check that this machine has no such
    device is stubbed; the stub of the library call ends the command)."""
    seen: dict[str, object] = {}

    def record(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise TaskError("stopped after the call")

    monkeypatch.setattr("funcformer._backbone.check_device", lambda device: None)
    target = {"train": "funcformer._function.train", "distill": "funcformer._distill.distill",
              "tune": "funcformer._tune.tune"}.get(command, "funcformer._function.load")
    monkeypatch.setattr(target, record)
    code, _, err = cli(capsys, *_device_command(command, trained_dir, module_data,
                                                tmp_path / "out"), "--device", "cuda:1")
    assert_clean_error(code, err)
    assert "stopped after the call" in err
    assert seen["device"] == "cuda:1"


def test_set_device_contradicting_the_flag_is_refused(capsys, tmp_path: Path,
                                                      module_data: Path) -> None:
    code, _, err = cli(capsys, "train", "classify", module_data, "--out", tmp_path / "out",
                       "--device", "cpu", "--set", "device=cuda")
    assert_clean_error(code, err)
    assert "--set device: this command takes it as --device. Fix: give it there" in err
    assert not (tmp_path / "out").exists()


def test_onnx_runtimes_refuse_a_device_other_than_cpu(capsys, trained_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime runs here on the CPU: a GPU device was silently ignored."""
    says = "runtime 'onnx' runs the ONNX export on the CPU; device 'cuda' applies to the torch"
    with pytest.raises(TaskError, match=re.escape(says)):
        funcformer.load(trained_dir, runtime="onnx", device="cuda")
    monkeypatch.setattr("funcformer._backbone.check_device", lambda device: None)
    code, _, err = cli(capsys, "predict", trained_dir, "great", "--runtime", "onnx",
                       "--device", "cuda")
    assert_clean_error(code, err)
    assert says in err and "Fix: device='cpu'" in err and "(CLI: --device cpu, or --runtime " \
        "torch)" in err


# --------------------------------------------------------------------------------------------
# --debug shows the traceback: the exception propagates instead of exit 1
# --------------------------------------------------------------------------------------------

def test_debug_propagates_data_error(tmp_path: Path, tiny_backbone: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv"):
        main(["--debug", "train", "classify", str(path), "--out", str(tmp_path / "out"),
              "--backbone", str(tiny_backbone)])


def test_debug_anywhere_on_the_line(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such directory"):
        main(["info", str(tmp_path / "missing"), "--debug"])


def test_debug_propagates_task_error(tmp_path: Path, module_data: Path) -> None:
    with pytest.raises(TaskError, match="regress"):
        main(["train", "regress", str(module_data), "--out", str(tmp_path / "o"), "--debug"])


def test_without_debug_no_exception_escapes(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "info", tmp_path / "missing")
    assert_clean_error(code, err)


def test_debug_success_still_exits_zero(capsys, trained_dir: Path) -> None:
    code, out, _ = cli(capsys, "--debug", "info", trained_dir, "--json")
    assert code == 0
    assert json.loads(out)["task"] == "classify"


# --------------------------------------------------------------------------------------------
# Command-line usage errors: exit 2, click's message, no traceback
# --------------------------------------------------------------------------------------------

USAGE_CASES = [
    pytest.param(["train", "--bogus"], id="unknown-option"),
    pytest.param(["predict", "x", "--nope"], id="unknown-option-predict"),
    pytest.param(["train", "classify", "data.csv"], id="missing-out"),
    pytest.param(["frobnicate"], id="unknown-command"),
    pytest.param(["train", "classify", "d.csv", "--out", "o", "--epochs", "abc"],
                 id="not-an-integer"),
]


@pytest.mark.parametrize("args", USAGE_CASES)
def test_usage_error_has_no_traceback(capsys, args: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert code != 0
    assert "Traceback" not in err


@pytest.mark.parametrize("args", USAGE_CASES)
def test_usage_error_exits_2(capsys, args: list[str]) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert "internal error" not in err
    assert "Traceback" not in err
    assert "Usage:" in err or "Error" in err


def test_train_with_zero_shot_init(capsys, tmp_path: Path, tiny_backbone: Path,
                                   reviews_csv: Path) -> None:
    out_dir = tmp_path / "fn"
    code, _, err = cli(capsys, "train", "classify", reviews_csv, "--out", out_dir,
                       "--backbone", tiny_backbone, "--epochs", "2", "--init", "zero_shot")
    assert code == 0, err
    manifest = json.loads((out_dir / "funcformer.json").read_text("utf-8"))
    assert manifest["training"]["init"] == "zero_shot"
    code, _, err = cli(capsys, "train", "classify", reviews_csv, "--out", tmp_path / "x",
                       "--backbone", tiny_backbone, "--init", "magic")
    assert code == 1 and err.startswith("error: init must be") and "Traceback" not in err
