"""Multi-label classify: 'a|b' and list labels, sigmoid outputs, thresholds tuned and saved."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import DataError
from funcformer._data import is_multi_label, label_set, read_examples
from funcformer._metrics import multilabel_metrics
from funcformer._results import Labels
from funcformer._tasks.classify import MultiLabel


def make_tagged(n: int = 80, seed: int = 0) -> list[dict[str, object]]:
    """'positive' when the adjective is positive, 'food' when the noun is food: 0-2 labels."""
    from conftest import NEGATIVE, NOUNS, POSITIVE

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        noun = rng.choice(["food", "delivery"] if rng.random() < 0.5 else NOUNS[1:4])
        good = rng.random() < 0.5
        text = f"the {noun} was {rng.choice(POSITIVE if good else NEGATIVE)}"
        labels = (["positive"] if good else []) + (["food"] if noun in ("food", "delivery")
                                                   else [])
        rows.append({"text": text, "label": labels})
    return rows


@pytest.fixture(scope="module")
def multi_fn(tiny_backbone: Path) -> funcformer.Function:
    return funcformer.train("classify", make_tagged(), eval_data=make_tagged(40, seed=1),
                            backbone=tiny_backbone, progress=False, epochs=60, method="head")


def test_reading_pipes_and_lists() -> None:
    rows = read_examples([{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": "y"},
                          {"text": "c", "label": []}, ("d", "x|z")])
    assert rows.labels == ["x|y", "y", "", "x|z"]
    assert is_multi_label(rows)
    assert label_set(rows, multi_label=True) == ["x", "y", "z"]
    assert not is_multi_label(read_examples([("a", "x"), ("b", "y")]))


def test_bad_label_lists_name_the_row() -> None:
    with pytest.raises(DataError, match=r"index 1, field 'label'.*non-empty string"):
        read_examples([{"text": "a", "label": ["x"]}, {"text": "b", "label": ["x", 3]}])
    with pytest.raises(DataError, match=r"index 0, field 'label'.*without '\|'"):
        read_examples([{"text": "a", "label": ["x|y"]}])


def test_targets_loss_decode_and_unknown_label() -> None:
    task = MultiLabel(["food", "positive"], thresholds=[0.5, 0.9])
    examples = read_examples([("a", "food|positive"), ("b", ""), ("c", "positive")],
                             empty_labels=True)
    assert task.targets(examples).tolist() == [[1, 1], [0, 0], [0, 1]]
    out = task.decode(torch.tensor([[3.0, 1.0], [-3.0, 3.0]]))  # sigmoid(1) = 0.73 < 0.9
    assert out[0] == Labels(labels=["food"], scores=out[0].scores)
    assert out[1].labels == ["positive"]
    with pytest.raises(DataError, match="index 0, field 'label': unknown label 'drinks'"):
        task.targets(read_examples([("a", "drinks|food")]))


def test_metrics_by_hand() -> None:
    m = multilabel_metrics([["a", "b"], ["b"], []], [["a"], ["b", "c"], []], ["a", "b", "c"])
    # tp=2, predicted=3, gold=3 -> micro F1 = 4/6; per label F1: a 1, b 2/3, c 0
    assert m["micro_f1"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["per_class"]["c"]["support"] == 0


def test_thresholds_tuned_on_eval_data() -> None:
    task = MultiLabel(["a", "b"])
    examples = read_examples([("1", "a"), ("2", "a"), ("3", []), ("4", [])])
    # label a: positives score 0.7, negatives 0.6 -> the best threshold lies between them
    logits = torch.logit(torch.tensor([[0.7, 0.1], [0.7, 0.1], [0.6, 0.1], [0.6, 0.1]]))
    task.tune_thresholds(logits, examples)
    assert 0.6 < task.thresholds[0] <= 0.7
    assert task.thresholds[1] == 0.5  # no positive example of b: left alone


def test_trains_saves_and_reloads(multi_fn: funcformer.Function, tmp_path: Path) -> None:
    assert multi_fn.manifest.options["multi_label"] is True
    assert multi_fn.metrics["micro_f1"] >= 0.75
    result = multi_fn("the food was great")
    assert isinstance(result, Labels)
    assert set(result.scores) == {"food", "positive"}
    assert all(0 <= s <= 1 for s in result.scores.values())
    loaded = funcformer.load(multi_fn.save(tmp_path / "fn"))
    assert loaded.task.thresholds == multi_fn.task.thresholds
    texts = ["the food was great", "the staff was rude", "the delivery was slow"]
    assert loaded(texts) == multi_fn(texts)
    assert loaded.digest == multi_fn.digest
    metrics = loaded.evaluate(make_tagged(40, seed=1))
    assert metrics["micro_f1"] == pytest.approx(multi_fn.metrics["micro_f1"])


def test_held_out_thresholds_and_forced_single_label(tiny_backbone: Path) -> None:
    fn = funcformer.train("classify", make_tagged(250), backbone=tiny_backbone, progress=False,
                          epochs=5, method="head")
    assert fn.manifest.training["eval_source"].startswith("held out")
    assert len(fn.task.thresholds) == 2
    single = funcformer.train("classify", [(f"the food was {w}", "a|b" if i % 2 else "c")
                                           for i, w in enumerate(["great", "awful"] * 10)],
                              backbone=tiny_backbone, progress=False, epochs=2,
                              multi_label=False, method="head")
    assert single.labels == ["a|b", "c"]
    rows = [{"text": f"the food was {w}", "label": ["c"] if i % 2 else []}
            for i, w in enumerate(["great", "awful"] * 10)]
    with pytest.raises(funcformer.DataError, match=r"<list>, index 0, field 'label': no label "
                                                   r"\(\[\]\), but the function is single-label"):
        funcformer.train("classify", rows, backbone=tiny_backbone, progress=False, epochs=2,
                         multi_label=False, method="head")  # [] made a class named ''


def test_cli_multi_label(tmp_path: Path, tiny_backbone: Path, capsys) -> None:
    from conftest import run_cli as cli

    data = tmp_path / "tags.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_tagged(60)), "utf-8")
    out = tmp_path / "fn"
    assert cli("train", "classify", data, "--out", out, "--backbone",
              tiny_backbone, "--epochs", "3") == 0
    capsys.readouterr()
    assert cli("predict", out, "the food was great") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["text"] == "the food was great" and isinstance(line["labels"], list)
    assert cli("eval", out, data) == 0
    printed = capsys.readouterr().out
    assert "micro-F1" in printed and "macro-F1" in printed
