"""Continual updates: `fn.update(data)` / `funcformer update`, exemplar memory, lineage."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import funcformer
from funcformer import TaskError
from funcformer._update import herding
from tests.conftest import run_cli

WORDS = {"sports": ["goal", "match", "team", "coach"],
         "tech": ["chip", "code", "laptop", "app"],
         "food": ["pizza", "bread", "soup", "salad"],
         "travel": ["flight", "hotel", "beach", "trip"]}


def rows(labels: list[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for label in labels:
        words = WORDS[label]
        for _ in range(n):
            picks = torch.randint(len(words), (3,), generator=generator).tolist()
            out.append((" ".join(words[i] for i in picks), label))
    return out


@pytest.fixture()
def base(tiny_backbone: Path) -> funcformer.Function:
    return funcformer.train("classify", rows(["sports", "tech"], 20), backbone=tiny_backbone,
                            method="head", memory=5, progress=False)


def test_herding_picks_representatives() -> None:
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    assert herding(features, 1) == [4]  # the one closest to the mean
    assert len(set(herding(features, 5))) == 5


def test_memory_is_stored_and_reloaded(base: funcformer.Function, tiny_backbone: Path,
                                       tmp_path: Path) -> None:
    assert base.manifest.memory == {"per_label": 5, "examples": 10}
    path = base.save(tmp_path / "v1")
    lines = (path / "memory.jsonl").read_text().splitlines()
    assert len(lines) == 10 and {json.loads(x)["label"] for x in lines} == {"sports", "tech"}
    again = funcformer.load(path, backbone=tiny_backbone)
    assert again.memory.texts == base.memory.texts


def test_update_adds_labels_keeps_old_rows_and_records_lineage(
        base: funcformer.Function, tmp_path: Path) -> None:
    new = rows(["food", "travel"], 20, seed=1)
    check = rows(["sports", "tech", "food", "travel"], 5, seed=2)
    updated = base.update(new, eval_data=check, progress=False, epochs=20)
    assert updated.labels == ["sports", "tech", "food", "travel"]
    assert base.labels == ["sports", "tech"]  # the original is unchanged
    old_w, new_w = base.head.linear.weight, updated.head.linear.weight
    assert torch.equal(new_w[:2], old_w)  # no new examples of old labels: rows frozen
    assert new_w[2:].abs().sum() > 0
    report = updated.manifest.training["update"]["report"]
    assert set(report) >= {"old_labels_accuracy_before", "old_labels_accuracy_after",
                           "new_labels_accuracy_after", "accuracy_after"}
    texts, gold = [t for t, _ in check], [y for _, y in check]  # the numbers, not just keys
    was, now = [p.label for p in base(texts)], [p.label for p in updated(texts)]
    old = [i for i, y in enumerate(gold) if y in ("sports", "tech")]
    new = [i for i, y in enumerate(gold) if i not in old]

    def accuracy(predicted: list[str], which: list[int]) -> float:
        return sum(predicted[i] == gold[i] for i in which) / len(which)

    assert report["old_labels_accuracy_before"] == pytest.approx(accuracy(was, old))
    assert report["old_labels_accuracy_after"] == pytest.approx(accuracy(now, old))
    assert report["new_labels_accuracy_after"] == pytest.approx(accuracy(now, new))
    assert report["accuracy_after"] == pytest.approx(accuracy(now, old + new))
    assert report["new_labels_accuracy_after"] > 0 and report["eval_rows"] == {
        "old_labels": 10, "new_labels": 10}
    assert updated.manifest.training["update"]["replayed"] == 10
    versions = updated.manifest.versions
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["parent"] == base.digest == versions[0]["digest"]
    assert versions[1]["digest"] == updated.digest != base.digest
    assert versions[1]["new_labels"] == ["food", "travel"]
    assert updated.memory is not None and len(updated.memory) == 20  # 5 per label, 4 labels
    path = updated.save(tmp_path / "v2")
    reloaded = funcformer.load(path, backbone=updated.manifest.backbone.name)
    assert reloaded.manifest.versions == versions
    assert [p.label for p in reloaded(["pizza soup", "goal team"])] == \
        [p.label for p in updated(["pizza soup", "goal team"])]


def test_update_with_examples_of_old_labels_trains_their_rows(base: funcformer.Function) -> None:
    updated = base.update(rows(["tech", "food"], 10, seed=3), progress=False, epochs=5)
    weights = updated.head.linear.weight
    assert torch.equal(weights[0], base.head.linear.weight[0])  # sports: nothing new
    assert not torch.equal(weights[1], base.head.linear.weight[1])  # tech: new examples


def test_update_says_what_its_report_cannot_measure(tiny_backbone: Path, tmp_path: Path,
                                                    capsys) -> None:
    plain = funcformer.train("classify", rows(["sports", "tech"], 20), backbone=tiny_backbone,
                             method="head", epochs=2, progress=False)  # no exemplar memory
    capsys.readouterr()
    few = plain.update(rows(["food"], 40), epochs=2)
    assert few.manifest.training["update"]["report"] == {}
    assert "no before/after report: no eval data was given, and a tenth of 40 rows (new data " \
        "and memory) is under the 20 rows worth holding out" in capsys.readouterr().err
    only_new = plain.update(rows(["food", "travel"], 100), epochs=2)  # a tenth held out: new only
    assert "new_labels_accuracy_after" in only_new.manifest.training["update"]["report"]
    assert "the eval rows hold no old label, so forgetting is not measured" in \
        capsys.readouterr().err
    small = funcformer.train("classify", rows(["sports", "tech"], 20), backbone=tiny_backbone,
                             method="head", epochs=2, progress=False, memory=2)
    capsys.readouterr()
    small.update(rows(["food", "travel"], 100), epochs=2)  # 2 per label: none of them held out
    assert "forgetting is not measured; pass eval_data= (CLI: --eval) with rows of the old " \
        "and the new labels, or a memory of 5 or more per label" in capsys.readouterr().err
    base = plain.update(rows(["food"], 10), eval_data=rows(["sports", "food"], 3), epochs=2)
    assert "update:" not in capsys.readouterr().err.replace("update: label texts off", "")
    data = tmp_path / "new.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows(["travel"], 8)))
    check = tmp_path / "check.csv"
    check.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in
                                              rows(["sports", "tech", "travel"], 2)))
    assert run_cli("update", str(base.save(tmp_path / "v1")), str(data), "--out",
                   str(tmp_path / "v2"), "--eval", str(check), "--epochs", "2") == 0
    shown = capsys.readouterr().out
    assert re.search(r"old labels, before  \d\.\d{4}  \(4 rows\)", shown), shown
    assert re.search(r"new labels, after  \d\.\d{4}  \(2 rows\)", shown), shown
    assert re.search(r"all, after  \d\.\d{4}  \(6 rows\)", shown), shown


def test_update_says_when_its_new_labels_are_hardly_ever_predicted() -> None:
    """The bias correction can find the eval rows classified best with rare, hard new labels
    never predicted (Emotion, 8 a label): the update says so and what to do."""
    from funcformer._update import _report_gap

    report = {"old_labels_accuracy_before": 0.62, "old_labels_accuracy_after": 0.62,
              "new_labels_accuracy_after": 0.004, "accuracy_after": 0.55}
    says = _report_gap(report, False, 60, True, offset=-6.0)
    assert says is not None and says.startswith("the new labels are right on only 0.4% of "
                                                "their eval rows") and "by 6.00" in says
    assert says.endswith("Fix: give the new labels more examples, or eval data with as many "
                         "rows of each label.")
    held_out = _report_gap({**report, "new_labels_accuracy_after": 0.0999}, False, 60, True,
                           offset=-1.5, given=False)  # no eval data given: a held-out part
    assert held_out is not None and "right on only 9.9% of" in held_out
    assert "weighs labels by the examples seen of each" in held_out
    assert held_out.endswith("or pass eval_data= (CLI: --eval) with as many rows of each label.")
    assert _report_gap(report, False, 60, True, offset=0.0) is None  # not the correction's doing
    assert _report_gap({**report, "new_labels_accuracy_after": 0.4}, False, 60, True,
                       offset=-6.0) is None
    assert _report_gap(report, True, 60, True, offset=-6.0) is None  # multi-label: thresholds


@pytest.mark.parametrize("options, says", [
    ({"multi_label": "no"}, "multi_label must be true or false"),  # 'no' trained multi-label
    ({"memory": "5"}, "memory must be a whole number of at least 1 example per label, got '5'"),
    ({"memory": 0}, "got 0. Fix: e.g. memory=20"),
])
def test_train_checks_classify_options(tiny_backbone: Path, options: dict, says: str) -> None:
    with pytest.raises(TaskError, match=says):
        funcformer.train("classify", rows(["sports", "tech"], 3), backbone=tiny_backbone,
                         method="head", progress=False, **options)


def test_update_errors(base: funcformer.Function, tiny_backbone: Path) -> None:
    pair = funcformer.train("pair", [("a b", "b c", 1.0), ("x", "y", 0.0)] * 6,
                            backbone=tiny_backbone, method="head", epochs=1, progress=False)
    with pytest.raises(TaskError, match="update applies to classify"):
        pair.update([("a", "b")])
    with pytest.raises(TaskError, match="memory must be a whole number of at least 1 "
                                        "example per label, got 0"):  # 0 was taken as "not given"
        base.update(rows(["food"], 5), memory=0, progress=False)
    with pytest.raises(funcformer.DataError, match=r"<list>, index 0, field 'label': several "
                                                   r"labels \('food\|travel'\) for a "
                                                   "single-label function"):  # made 'food|travel'
        base.update([{"text": "pizza trip", "label": ["food", "travel"]}], progress=False)
    with pytest.raises(funcformer.DataError, match="unknown label 'nope'"):
        base.update(rows(["food"], 5), eval_data=[("goal", "nope")], progress=False)
    with pytest.raises(funcformer.DataError, match=r"<list>, index 1, field 'label': label "
                                                   r"'Sports' differs from the function's "
                                                   r"label 'sports' only in case"):  # was added
        base.update([("pizza", "food"), ("goal", "Sports")], progress=False)
    for option, says in (({"method": "lora"}, "method 'lora' cannot apply"),
                         ({"head": "mlp"}, "head: update keeps"),
                         ({"max_length": 8}, "max_length: update keeps"),
                         ({"loss": "focal"}, "loss: update trains the grown head with "
                                             "its own loss"),
                         ({"class_weight": "balanced"}, "class_weight: update trains")):
        # were ignored
        with pytest.raises(TaskError, match=says):
            base.update(rows(["food"], 5), progress=False, **option)


def test_cli_update(base: funcformer.Function, tmp_path: Path, capsys) -> None:
    source = base.save(tmp_path / "v1")
    data = tmp_path / "new.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows(["food"], 15)))
    out = tmp_path / "v2"
    assert run_cli("update", str(source), str(data), "--out", str(out), "--epochs", "3") == 0
    shown = capsys.readouterr()
    assert "food" in shown.out and "version 2" in shown.out
    assert json.loads((out / "funcformer.json").read_text())["labels"][-1] == "food"
    assert run_cli("info", str(out)) == 0  # the version history, oldest first
    shown = capsys.readouterr().out
    first, second = (json.loads((out / "funcformer.json").read_text())["versions"][i]["digest"]
                     .removeprefix("sha256:")[:12] for i in (0, 1))
    assert re.search(rf"\n +versions  1  \d{{4}}-\d\d-\d\d \d\d:\d\d  {first}  parent -  +\d+ "
                     rf"examples, \d+ labels\n +2  \S+ \S+  {second}  parent {first}  15 new "
                     r"examples, \d+ labels \(new: food\)  \(this one\)\n", shown), shown
    assert run_cli("update", str(source), str(data), "--out", str(tmp_path / "v2b"),
                   "--set", "label_template=A text about {}.", "--set", "label_texts=true",
                   "--set", "epochs=2") == 0
    assert "'A text about food.'" in capsys.readouterr().err
    assert run_cli("update", str(source), str(data), "--out", str(tmp_path / "v2c"),
                   "--set", "nope=1") == 1
    assert "nope" in capsys.readouterr().err and not (tmp_path / "v2c").exists()
    assert run_cli("update", str(source), str(tmp_path / "missing.csv"), "--out",
                   str(tmp_path / "v3")) == 1
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "v3").exists()


def test_update_gives_new_labels_label_texts_when_asked(base: funcformer.Function,
                                                       capsys) -> None:
    new = rows(["food"], 10, seed=4)
    base.update(new, epochs=2)
    assert "label texts off" in capsys.readouterr().err  # opt-in for updates
    updated = base.update(new, epochs=2, label_texts=True)
    assert "1 label texts added, 2 each, e.g. 'This sentence is food.'" in \
        capsys.readouterr().err
    assert updated.manifest.training["update"]["examples"] == 10  # the user's rows only
    assert all(not t.startswith("This sentence") for t in updated.memory.texts)
    # The function's template and label names apply; names given on update join them.
    coded = funcformer.train("classify", [(t, {"sports": "s1", "tech": "s2"}[y])
                                          for t, y in rows(["sports", "tech"], 20)],
                             backbone=base.manifest.backbone.name, method="head",
                             label_names={"s1": "sports", "s2": "tech"},
                             label_template="About {}.", progress=False)
    capsys.readouterr()
    coded.update([(t, "s3") for t, _ in new], epochs=2, label_texts=True,
                 label_names={"s3": "food"})
    assert "1 label texts added, 2 each, e.g. 'About food.'" in capsys.readouterr().err
    coded.update([(t, "s3") for t, _ in new], epochs=2, label_texts=True)
    assert "are codes, not words" in capsys.readouterr().err


def multi_rows(n: int, labels: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """Texts with words of one or two topics; the label is each topic present ('a|b')."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = 1 + i % 2
        picks = torch.randperm(len(labels), generator=generator)[:k].tolist()
        chosen = sorted(labels[p] for p in picks)
        words = [WORDS[label][int(torch.randint(4, (1,), generator=generator))]
                 for label in chosen for _ in range(2)]
        out.append((" ".join(words), "|".join(chosen)))
    return out


def test_multi_label_update_adds_labels_keeps_untaught_rows_and_tunes_thresholds(
        tiny_backbone: Path, tmp_path: Path) -> None:
    base = funcformer.train("classify", multi_rows(60, ["sports", "tech"]),
                            backbone=tiny_backbone, method="head", memory=4, progress=False)
    assert base.task.multi_label and base.manifest.memory["per_label"] == 4
    assert {y for y in base.memory.labels} <= {"sports", "tech", "sports|tech"}
    new = multi_rows(60, ["tech", "food"], seed=1)  # tech gets new examples, food is new
    check = multi_rows(30, ["sports", "tech", "food"], seed=2)
    updated = base.update(new, eval_data=check, progress=False, epochs=10)
    assert updated.labels == ["sports", "tech", "food"] and updated.task.multi_label
    old_w, new_w = base.head.linear.weight, updated.head.linear.weight
    assert torch.equal(new_w[0], old_w[0])  # sports: no new examples, its sigmoid is as it was
    assert not torch.equal(new_w[1], old_w[1]) and new_w[2].abs().sum() > 0
    assert base.task.thresholds == [0.5, 0.5]  # no held-out rows at training (60 rows)
    assert updated.task.thresholds != [0.5, 0.5, 0.5]  # tuned on eval_data
    report = updated.manifest.training["update"]["report"]
    assert set(report) >= {"old_labels_micro_f1_before", "old_labels_micro_f1_after",
                           "new_labels_micro_f1_after", "micro_f1_after"}
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    names = ["sports", "tech", "food"]
    binary = MultiLabelBinarizer(classes=names).fit([names])
    texts = [t for t, _ in check]
    gold = binary.transform([y.split("|") for _, y in check])
    was = binary.transform([r.labels for r in base(texts)])
    now = binary.transform([r.labels for r in updated(texts)])

    def micro_f1(predicted: Any, columns: list[int]) -> float:
        return f1_score(gold, predicted, labels=columns, average="micro", zero_division=0)

    assert report["old_labels_micro_f1_before"] == pytest.approx(micro_f1(was, [0, 1]))
    assert report["old_labels_micro_f1_after"] == pytest.approx(micro_f1(now, [0, 1]))
    assert report["new_labels_micro_f1_after"] == pytest.approx(micro_f1(now, [2]))
    assert report["micro_f1_after"] == pytest.approx(micro_f1(now, [0, 1, 2]))
    assert updated.manifest.options["task"]["thresholds"] == updated.task.thresholds
    path = updated.save(tmp_path / "v2")
    reloaded = funcformer.load(path, backbone=tiny_backbone)
    assert reloaded.task.thresholds == updated.task.thresholds
    texts = ["pizza goal", "chip code", "soup bread"]
    assert [r.labels for r in reloaded(texts)] == [r.labels for r in updated(texts)]
    assert reloaded.memory is not None and len(reloaded.memory) <= 12  # 4 per label, 3 labels


def test_cli_update_of_a_multi_label_function(tiny_backbone: Path, tmp_path: Path,
                                              capsys) -> None:
    base = funcformer.train("classify", multi_rows(40, ["sports", "tech"]),
                            backbone=tiny_backbone, method="head", progress=False)
    source = base.save(tmp_path / "v1")
    data = tmp_path / "new.csv"
    data.write_text("text,label\n" + "".join(f"{t},{y}\n"
                                             for t, y in multi_rows(40, ["tech", "food"], 3)))
    check = tmp_path / "check.csv"
    check.write_text("text,label\n" + "".join(
        f"{t},{y}\n" for t, y in multi_rows(20, ["sports", "tech", "food"], 4)))
    assert run_cli("update", str(source), str(data), "--eval", str(check), "--out",
                   str(tmp_path / "v2"), "--epochs", "3") == 0
    shown = capsys.readouterr().out
    assert "food" in shown and "micro-F1 after" in shown


def test_a_lora_function_loaded_in_bfloat16_updates(tiny_backbone: Path, tmp_path: Path) -> None:
    """The digest hashed tensors through numpy, which has no bfloat16 (a TypeError)."""
    path = funcformer.train("classify", rows(["sports", "tech"], 10), backbone=tiny_backbone,
                            method="lora", epochs=1, progress=False).save(tmp_path / "lora")
    updated = funcformer.load(path, dtype="bfloat16").update(rows(["food"], 8), epochs=1,
                                                             progress=False)
    assert updated.labels == ["sports", "tech", "food"]
    assert updated.digest.startswith("sha256:")


def test_an_update_without_memory_warns_that_old_labels_are_not_replayed(
        base: funcformer.Function, tiny_backbone: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The CLI said only '0 replayed from memory', and old texts came back as the new label."""
    bare = funcformer.train("classify", rows(["sports", "tech"], 20), backbone=tiny_backbone,
                            method="head", progress=False)
    bare.update(rows(["food"], 5), progress=False, epochs=2)
    assert "keeps no examples of its old labels" in caplog.text
    assert "memory=20" in caplog.text
    caplog.clear()
    base.update(rows(["food"], 5), progress=False, epochs=2)  # it has a memory: no warning
    assert "keeps no examples" not in caplog.text
