"""Hyperparameter search (issue 8): Optuna trials over methods, heads and losses, pruning."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from conftest import make_reviews, run_cli
from test_cli import assert_clean_error, write_reviews

import funcformer
from funcformer import MissingExtra, TaskError
from funcformer._tune import Tuning

optuna = pytest.importorskip("optuna")


class PruneFirstTrial(optuna.pruners.BasePruner):
    """Prunes trial 0 at its first report: a pruner that must prune."""

    def prune(self, study: object, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 0


def _tune(backbone: Path, **options: object) -> Tuning:
    options.setdefault("trials", 3)
    options.setdefault("methods", ["lora"])
    return funcformer.tune("classify", make_reviews(30), eval_data=make_reviews(12, seed=3),
                           backbone=backbone, progress=False, **options)


def test_three_trials_prune_one_and_save_the_best_with_the_table(
        tiny_backbone: Path, tmp_path: Path) -> None:
    result = _tune(tiny_backbone, pruner=PruneFirstTrial())
    assert [row["state"] for row in result.trials] == ["PRUNED", "COMPLETE", "COMPLETE"]
    assert result.trials[0]["epochs_run"] == 1  # stopped in training, after its first epoch
    done = [row for row in result.trials if row["state"] == "COMPLETE"]
    best = max(done, key=lambda row: row["metric"])
    assert result.best.manifest.training["tune"]["best_trial"] == best["trial"]
    assert result.best.metrics["accuracy"] == pytest.approx(best["metric"], abs=1e-4)
    assert result.best_settings["method"] == "lora"
    assert result.best.manifest.config["learning_rate"] == result.best_settings["learning_rate"]
    for row in result.trials:
        assert 1e-4 <= row["learning_rate"] <= 2e-3 and 1 <= row["epochs"] <= 6
        assert row["head"] in ("linear", "mlp") and row["loss"] in ("cross_entropy", "focal")
        assert row["seconds"] > 0
    result.save(tmp_path / "best")
    with open(tmp_path / "best" / "trials.csv", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["state"] for r in table] == ["PRUNED", "COMPLETE", "COMPLETE"]
    assert set(table[0]) >= {"trial", "method", "learning_rate", "epochs", "head", "loss",
                             "label_smoothing", "class_weight", "accuracy", "seconds"}
    markdown = (tmp_path / "best" / "trials.md").read_text("utf-8")
    assert markdown.startswith("| trial | state | method |") and markdown.count("\n") == 5
    loaded = funcformer.load(tmp_path / "best")
    texts = [text for text, _ in make_reviews(5, seed=7)]
    assert [p.label for p in loaded(texts)] == [p.label for p in result.best(texts)]


def test_same_seed_same_search(tiny_backbone: Path) -> None:
    first = _tune(tiny_backbone, trials=2)
    again = _tune(tiny_backbone, trials=2)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in first.trials]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in again.trials]


def test_median_pruner_stops_a_trial_behind_the_others(tiny_backbone: Path) -> None:
    from funcformer._tune import Reporter

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    Reporter(good, "lora")("lora", 1, 0.9)
    study.tell(good, 0.9)
    bad = study.ask()
    reporter = Reporter(bad, "lora")
    reporter("head", 1, 0.1)  # a head fit before the fine-tuning: not reported
    assert reporter.epochs == 0
    with pytest.raises(optuna.TrialPruned):
        reporter("lora", 1, 0.5)


def test_fixed_options_are_not_searched_and_head_trials_run(tiny_backbone: Path) -> None:
    result = funcformer.tune("classify", make_reviews(30), eval_data=make_reviews(12, seed=3),
                             backbone=tiny_backbone, methods=["head"], trials=2, head="mlp",
                             loss="focal", progress=False)
    assert all(row["head"] == "mlp" and row["loss"] == "focal" for row in result.trials)
    assert "head" not in result.best_settings and result.best.manifest.head.type == "mlp"
    assert all(row["state"] == "COMPLETE" for row in result.trials)


def test_trial_zero_trains_with_the_defaults(tiny_backbone: Path) -> None:
    result = _tune(tiny_backbone, trials=2, methods=["head", "lora"])
    first = result.trials[0]
    # 30 reviews: auto picks contrastive, which is not searched here, so the first method's.
    assert (first["method"], first["learning_rate"], first["epochs"]) == ("head", 0.05, 30)
    assert (first["head"], first["loss"], first["label_smoothing"], first["class_weight"]) == \
        ("linear", "cross_entropy", 0.0, None)
    plain = funcformer.train("classify", make_reviews(30), eval_data=make_reviews(12, seed=3),
                             backbone=tiny_backbone, method="head", progress=False, seed=42)
    assert first["metric"] == pytest.approx(plain.metrics["accuracy"], abs=1e-4)
    # LoRA settings go to lora trials; head trials refused them (every trial failed)
    mixed = _tune(tiny_backbone, trials=2, methods=["head", "lora"], lora={"r": 2})
    assert {t["state"] for t in mixed.trials} == {"COMPLETE"}
    given = _tune(tiny_backbone, trials=1, methods=["lora"], lora={"r": 2})
    assert given.best.manifest.adapter["r"] == 2
    in_config = _tune(tiny_backbone, trials=1, methods=["lora"], config={"lora": {"r": 2}})
    assert in_config.best.manifest.adapter["r"] == 2  # not overridden by auto's adapter
    fixed = _tune(tiny_backbone, trials=1, methods=["lora"], learning_rate=1e-3, head="mlp")
    assert fixed.trials[0]["learning_rate"] == 1e-3 and fixed.trials[0]["head"] == "mlp"
    assert fixed.trials[0]["epochs"] == 4  # lora's default
    # without LoRA settings, lora trials take the adapter auto gives lora
    assert fixed.best.manifest.adapter["r"] == 16
    assert fixed.best.manifest.config["lora"]["feed_forward"] is True


def test_contrastive_trial_zero_takes_its_rate_for_the_labels(tiny_backbone: Path) -> None:
    words = ["alpha", "bravo", "charlie", "delta"]
    rows = [(f"text {i} about {words[i % 4]}", words[i % 4]) for i in range(128)]
    for data, expected in ((rows, 1e-4), (rows[:32], 5e-5)):  # 32 a label; 8 a label
        result = funcformer.tune("classify", data, eval_data=rows[:12], backbone=tiny_backbone,
                                 trials=1, methods=["contrastive"], epochs=1, progress=False)
        assert result.trials[0]["learning_rate"] == expected  # 4 labels (5e-5 with 2)


def test_errors(tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TaskError, match="classify"):
        funcformer.tune("embed", [], trials=1)
    with pytest.raises(TaskError, match="Unknown method"):
        _tune(tiny_backbone, methods=["magic"])
    with pytest.raises(TaskError, match=r"to search: ''\. Choose"):  # "head," said 'none given'
        _tune(tiny_backbone, methods=["head", ""])
    with pytest.raises(TaskError, match="too few"):
        funcformer.tune("classify", make_reviews(5), backbone=tiny_backbone, trials=1)
    with pytest.raises(TaskError, match="not both"):
        funcformer.tune("classify", make_reviews(30), eval_data=make_reviews(12, seed=3),
                        method="head", methods=["lora"], trials=1)
    for arguments, says in (({"trials": "2"}, "trials must be a whole number"),
                            ({"timeout": -1}, "timeout must be a positive number"),
                            ({"sampler": "tpe"}, "sampler must be an optuna BaseSampler")):
        with pytest.raises(TaskError, match=says):  # TypeError, AttributeError, "pruned"
            funcformer.tune("classify", make_reviews(30), **{"trials": 1, **arguments})
    for metric, says in (("micro_f1", "single-label"), ("bogus", "Choose one of")):
        with pytest.raises(TaskError, match=says):  # was a KeyError after trial 0 trained
            funcformer.tune("classify", make_reviews(30), eval_data=make_reviews(12, seed=3),
                            backbone=tiny_backbone, trials=1, metric=metric, progress=False)
    calls = []  # a bad fixed setting fails before any trial trains, not once per trial
    monkeypatch.setattr("funcformer._function.train", lambda *a, **k: calls.append(1))
    with pytest.raises(TaskError, match="epochs must be at least 1, got -1"):
        funcformer.tune("classify", make_reviews(30), eval_data=make_reviews(12, seed=3),
                        backbone=tiny_backbone, trials=3, epochs=-1, progress=False)
    assert calls == []
    for fixed in ({"checkpoint_dir": "ckpt"}, {"resume": True}):  # shared by every trial
        with pytest.raises(TaskError, match=f"{next(iter(fixed))} applies to one training run"):
            funcformer.tune("classify", make_reviews(30), backbone=tiny_backbone, trials=2,
                            progress=False, **fixed)
    assert calls == []
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingExtra, match=r"pip install 'funcformer\[tune\]'"):
        _tune(tiny_backbone)


def test_cli_tune(tiny_backbone: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    train = tmp_path / "train.csv"
    dev = tmp_path / "dev.csv"
    write_reviews(train, make_reviews(30))
    write_reviews(dev, make_reviews(12, seed=3))
    out = tmp_path / "tuned"
    code = run_cli("tune", "classify", train, "--eval", dev, "--trials", "2", "--methods",
                   "head, lora", "--backbone", tiny_backbone, "--out", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| trial | state |" in captured.out and "Best: trial" in captured.out
    assert {"funcformer.json", "trials.csv", "trials.md"} <= {p.name for p in out.iterdir()}
    assert run_cli("tune", "classify", train, "--trials", "0", "--out", tmp_path / "x") == 2
    assert "--trials" in capsys.readouterr().err
    code = run_cli("tune", "classify", tmp_path / "none.csv", "--backbone", tiny_backbone,
                   "--out", tmp_path / "y")
    err = capsys.readouterr().err
    assert_clean_error(code, err)
    assert "none.csv" in err
    monkeypatch.setitem(sys.modules, "optuna", None)
    code = run_cli("tune", "classify", train, "--out", tmp_path / "z")
    err = capsys.readouterr().err
    assert_clean_error(code, err)
    assert "funcformer[tune]" in err
