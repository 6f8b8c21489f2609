"""The zero_shot task as a function: artifact, multi-label, calibration, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import funcformer
from funcformer import ArtifactError, DataError, Prediction, TaskError, ZeroShot
from funcformer._results import Labels
from funcformer._tasks.zero_shot import read_labels


def test_is_a_function_that_saves_and_loads(tiny_backbone: Path, tmp_path: Path) -> None:
    fn = funcformer.train("zero_shot", {"good": "a great review", "bad": "an awful review"},
                          backbone=tiny_backbone)
    assert isinstance(fn, funcformer.Function) and fn.labels == ["good", "bad"]
    out = fn.save(tmp_path / "zs")
    assert sorted(p.name for p in out.iterdir()) == ["funcformer.json"]
    loaded = funcformer.load(out)
    assert isinstance(loaded, ZeroShot) and loaded.digest == fn.digest
    texts = ["the food was great", "the room was dirty"]
    assert loaded(texts) == fn(texts)
    assert loaded.spec == {"good": "a great review", "bad": "an awful review"}
    with pytest.raises(funcformer.TaskError, match="merge_adapter applies to LoRA"):
        funcformer.load(out, merge_adapter=True)


def test_digest_follows_settings(tiny_backbone: Path) -> None:
    a = ZeroShot(["x", "y"], backbone=tiny_backbone)
    assert a.digest == ZeroShot(["x", "y"], backbone=tiny_backbone).digest
    assert a.digest != ZeroShot(["x", "y"], backbone=tiny_backbone, template="About {}.").digest
    assert a.digest != ZeroShot(["x", "z"], backbone=tiny_backbone).digest


def test_multi_label_scores_are_cosines(tiny_backbone: Path) -> None:
    fn = ZeroShot(["food", "staff", "room"], backbone=tiny_backbone, multi_label=True,
                  threshold=-1.0)
    result = fn("the food was great")
    assert isinstance(result, Labels)
    assert result.labels == ["food", "staff", "room"]  # every cosine >= -1
    cosines = fn.similarities(["the food was great"])[0]
    assert [result.scores[n] for n in fn.labels] == pytest.approx(cosines.tolist())
    fn.threshold = 1.01
    assert fn("the food was great").labels == []


def test_a_string_is_no_label_list(tiny_backbone: Path) -> None:
    with pytest.raises(DataError, match="got the string 'abc'"):  # it gave labels a, b, c
        ZeroShot("abc", backbone=tiny_backbone)


@pytest.mark.parametrize("threshold", ["abc", None, 5, -1.5, float("nan")])
def test_threshold_must_be_a_cosine(tiny_backbone: Path, threshold: object) -> None:
    # 'abc' was a ValueError from float(), 5 a function that never returns a label
    with pytest.raises(TaskError, match=r"zero_shot: threshold must be a cosine similarity "
                                        r"from -1 to 1, got .*Fix: "):
        ZeroShot(["food", "room"], backbone=tiny_backbone, multi_label=True,
                 threshold=threshold)


def test_calibrate_picks_the_best_threshold(tiny_backbone: Path) -> None:
    fn = ZeroShot(["food", "room"], backbone=tiny_backbone, multi_label=True, threshold=0.99)
    texts = ["the food was great", "the room was dirty", "the food was cold",
             "the room was lovely"]
    data = [{"text": t, "label": ["food"] if "food" in t else ["room"]} for t in texts]
    cosines = fn.similarities(texts)
    before = fn.evaluate(data)["micro_f1"]
    threshold = fn.calibrate(data)
    after = fn.evaluate(data)["micro_f1"]
    assert after >= before and fn.threshold == threshold
    gold = np.array([[r["label"] == ["food"], r["label"] == ["room"]] for r in data])
    guess = cosines >= threshold
    tp = (guess & gold).sum()
    assert after == pytest.approx(2 * tp / (guess.sum() + gold.sum()))


def test_labels_from_files_and_errors(tmp_path: Path) -> None:
    txt = tmp_path / "labels.txt"
    txt.write_text("business\nsports\n\nscience\n", "utf-8")
    assert read_labels(str(txt)) == ["business", "sports", "science"]
    csv = tmp_path / "labels.csv"
    csv.write_text("label,description\nbilling,invoices and charges\nlogin,passwords\n", "utf-8")
    assert read_labels(str(csv)) == {"billing": "invoices and charges", "login": "passwords"}
    partial = tmp_path / "partial.jsonl"
    partial.write_text('{"label": "a", "description": "x"}\n{"label": "b"}\n', "utf-8")
    with pytest.raises(DataError, match="label 'b' has no description"):
        read_labels(str(partial))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"label": "a", "description": 3}\n', "utf-8")
    with pytest.raises(DataError, match="line 1, field 'description'"):
        read_labels(str(bad))
    # a dict kept the last 'billing' and dropped the first without a word
    csv.write_text("label,description\nbilling,money\nlogin,passwords\nbilling,cash\n", "utf-8")
    with pytest.raises(DataError, match=r"labels\.csv, line 4, field 'label': the label "
                                        r"'billing' is given twice \(first at line 2\)"):
        read_labels(str(csv))
    # 'billing ' matched no eval label 'billing' (those are stripped)
    txt.write_text("billing \n login\n", "utf-8")
    assert read_labels(str(txt)) == ["billing", "login"]


def test_training_options_are_refused(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match="zero_shot trains nothing, so epochs"):
        funcformer.train("zero_shot", ["a", "b"], backbone=tiny_backbone, epochs=3)
    with pytest.raises(TaskError, match="multi_label must be true or false, got 'false'"):
        funcformer.train("zero_shot", ["a", "b"], backbone=tiny_backbone, multi_label="false")
    with pytest.raises(TaskError, match="zero_shot trains nothing, so method 'head'"):
        funcformer.train("zero_shot", ["a", "b"], backbone=tiny_backbone, method="head")
    assert funcformer.train("zero_shot", ["a", "b"], backbone=tiny_backbone, method="auto")


def test_a_template_for_described_labels_is_said_to_apply_per_call_only(
        tiny_backbone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """All labels described: the template was stored and silently changed nothing."""
    funcformer.train("zero_shot", {"food": "meals and dishes", "room": "the hotel room"},
                     backbone=tiny_backbone, template="About {}.")
    assert "applies to labels given by name in a call only" in capsys.readouterr().err
    funcformer.train("zero_shot", ["food", "room"], backbone=tiny_backbone, template="About {}.")
    assert capsys.readouterr().err == ""


def test_eval_data_records_metrics_and_calibrates(tiny_backbone: Path) -> None:
    data = [{"text": "the food was great", "label": ["food"]},
            {"text": "the room was dirty", "label": ["room"]}]
    fn = funcformer.train("zero_shot", ["food", "room"], backbone=tiny_backbone,
                          multi_label=True, eval_data=data)
    assert set(fn.metrics) == {"accuracy", "micro_f1", "macro_f1", "examples"}
    assert fn.manifest.options["threshold"] == fn.threshold
    with pytest.raises(DataError, match="index 0, field 'label': unknown label 'drinks'"):
        fn.evaluate([{"text": "a", "label": ["drinks"]}])


def test_fit_makes_a_classifier_from_label_embeddings(tiny_backbone: Path) -> None:
    from conftest import make_reviews

    zs = ZeroShot(["negative", "positive"], backbone=tiny_backbone)
    fn = zs.fit(make_reviews(), epochs=3, progress=False)
    assert fn.manifest.task == "classify" and fn.manifest.training["init"] == "zero_shot"
    assert isinstance(fn("the food was great"), Prediction)


def test_loading_on_other_weights_is_refused(tiny_backbone: Path, tiny_chinese_backbone: Path,
                                             tmp_path: Path) -> None:
    out = ZeroShot(["a", "b"], backbone=tiny_backbone).save(tmp_path / "zs")
    with pytest.raises(ArtifactError, match="digest"):
        funcformer.load(out, backbone=tiny_chinese_backbone)


def test_cli_train_and_predict(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    from conftest import run_cli as cli

    labels = tmp_path / "labels.txt"
    labels.write_text("food\nroom\n", "utf-8")
    out = tmp_path / "zs"
    assert cli("train", "zero_shot", labels, "--out", out, "--backbone",
              tiny_backbone, "--set", "template=All about {}.") == 0
    assert "Made a zero_shot function of 2 labels (no training)" in capsys.readouterr().out
    assert cli("predict", out, "the food was great") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["label"] in ("food", "room")
    assert funcformer.load(out).template == "All about {}."
    assert cli("info", out) == 0
    info = capsys.readouterr().out
    assert "nothing (no training)" in info and "0 examples" not in info
    assert cli("predict", out, "the food was great", "--set", "labels=a,b") == 1
    assert """CLI: --set 'labels=["business", "sports"]'""" in capsys.readouterr().err
    assert cli("predict", out, "the food was great", "--set", 'labels=["a", "b"]') == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == {"a", "b"}


def test_labels_are_checked_and_any_sequence_of_names_is_taken(tiny_backbone: Path) -> None:
    zero = ZeroShot(np.array(["food", "service"]), backbone=tiny_backbone)
    assert zero.labels == ["food", "service"]  # e.g. df["label"].unique()
    # stripped, as eval labels and label files are, whichever way they come
    assert set(zero.predict(["x"], labels=[" a", "b "])[0].scores) == {"a", "b"}
    assert ZeroShot([" food", "service "], backbone=tiny_backbone).labels == ["food", "service"]
    with pytest.raises(DataError, match="'food' is given twice"):  # the dict kept the last
        funcformer.train("zero_shot", {"food": "meals", "food ": "dishes", "room": "beds"},
                         backbone=tiny_backbone)
    with pytest.raises(TaskError, match="multi_label must be true or false"):
        ZeroShot(["food", "room"], backbone=tiny_backbone, multi_label="false")
    for labels, words in (("food", "must be a list of names"), (["food", 3], "must be strings"),
                          (["food", "food"], "'food' is given twice"),
                          (["food", "food "], "'food' is given twice"),  # were two labels
                          (["", " ", "food"], "each a non-empty name"),  # was 'given twice'
                          ({"food": "meals", " food": "dishes"}, "'food' is given twice"),
                          (["food", "\ud800"], "lone surrogate")):
        with pytest.raises(DataError, match=words):
            zero.predict(["the food was great"], labels=labels)
    as_set = zero.predict(["the food"], labels={"room", "food"})[0].scores  # per call: sorted
    assert list(as_set) == ["food", "room"]
    with pytest.raises(DataError, match=r"a set.*Fix: pass a list, e\.g\. sorted"):
        ZeroShot(frozenset(["food", "room"]), backbone=tiny_backbone)  # digest by set order


def test_a_function_saved_before_names_were_stripped_keeps_them(tiny_backbone: Path,
                                                               tmp_path: Path) -> None:
    # loading rebuilt it with stripped names: labels said 'sports ', predictions 'sports'
    out = ZeroShot(["sports", "business"], backbone=tiny_backbone).save(tmp_path / "zs")
    manifest = json.loads((out / "funcformer.json").read_text("utf-8"))
    manifest["labels"] = ["sports ", "sports"]  # as train('zero_shot', file) could write
    (out / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    old = funcformer.load(out)
    assert old.labels == ["sports ", "sports"]
    assert set(old("a match").scores) == {"sports ", "sports"}


def test_fit_trains_on_the_zero_shot_functions_device(tiny_backbone: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """fit called train without device=: a ZeroShot on a GPU fit its classifier on the CPU."""
    import dataclasses

    topic = ZeroShot(["positive", "negative"], backbone=tiny_backbone)
    topic.backbone = dataclasses.replace(topic.backbone, device="cuda:3")  # as if on a GPU
    calls: list[dict] = []
    monkeypatch.setattr("funcformer._function.train", lambda *a, **k: calls.append(k))
    topic.fit([("great", "positive")])
    topic.fit([("great", "positive")], device="cpu")  # an explicit device still wins
    assert [call["device"] for call in calls] == ["cuda:3", "cpu"]


def test_label_files_name_the_line_or_file(tmp_path: Path) -> None:
    """A .txt label given twice was 'given twice' with no file or line; a file of one label
    asked for a Python list."""
    txt = tmp_path / "labels.txt"
    txt.write_text("billing\nrefund\nbilling\n", "utf-8")
    with pytest.raises(DataError, match=r"labels\.txt, line 3: the label 'billing' is given "
                                        r"twice \(first at line 1\)"):
        read_labels(str(txt))
    txt.write_text("billing\n\n", "utf-8")
    with pytest.raises(DataError, match=r"labels\.txt: 1 label; .*Fix: add labels \(one"):
        read_labels(str(txt))
    csv = tmp_path / "labels.csv"
    csv.write_text("label,description\nbilling,money\n", "utf-8")
    with pytest.raises(DataError, match=r"labels\.csv: 1 label;.*a row per label"):
        read_labels(str(csv))


def test_a_dict_of_non_text_descriptions_is_a_data_error(tiny_backbone: Path) -> None:
    """{'a': 1, 'b': 2} was read as a dict of columns and failed with a TypeError."""
    with pytest.raises(DataError, match=r"'a' maps to int"):
        funcformer.train("zero_shot", {"a": 1, "b": 2}, backbone=tiny_backbone)
    assert read_labels({"label": ["x", "y"]}) == ["x", "y"]  # a dict of columns still reads


def test_no_labels_is_a_data_error(tiny_backbone: Path) -> None:
    with pytest.raises(DataError, match="ZeroShot needs labels"):  # was an AttributeError
        ZeroShot(None, backbone=tiny_backbone)  # type: ignore[arg-type]


def test_multi_label_eval_data_of_a_single_label_function_says_the_fix(
        tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    """It said 'unknown label a|b', with no word of multi_label."""
    from conftest import run_cli

    data = [("the food was great", "food|room"), ("the room was dirty", "room")]
    with pytest.raises(DataError, match=r"index 0, field 'label': several labels.*"
                                        r"multi_label=True"):
        funcformer.train("zero_shot", ["food", "room"], backbone=tiny_backbone, eval_data=data)
    fn = funcformer.train("zero_shot", ["food", "room"], backbone=tiny_backbone,
                          eval_data=data, multi_label=True)
    assert fn.metrics["examples"] == 2
    labels, evals = tmp_path / "labels.txt", tmp_path / "eval.csv"
    labels.write_text("food\nroom\n", "utf-8")
    evals.write_text("text,label\nthe food was great,food|room\n", "utf-8")
    assert run_cli("train", "zero_shot", labels, "--out", tmp_path / "zs", "--backbone",
                   tiny_backbone, "--eval", evals) == 1
    err = capsys.readouterr().err
    assert "eval.csv, line 2, field 'label'" in err and "--set multi_label=true" in err
    assert not (tmp_path / "zs").exists()
