"""Learning from unlabelled texts: self-training (`train(..., unlabeled=)`) and active learning
(`funcformer.suggest`, `funcformer suggest`)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import funcformer
from funcformer import DataError, SelfTraining, TaskError
from funcformer._unlabeled import (
    cover,
    directions,
    distinct_pool,
    diverse,
    neighbour_similarity,
    neighbourhoods,
    pseudo_labels,
    uncertainty,
)
from tests.conftest import make_reviews, run_cli


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Unlabelled texts: distinct reviews not in the labelled data."""
    labelled = {t for t, _ in make_reviews(20)}
    return list(dict.fromkeys(t for t, _ in make_reviews(40, seed=5) if t not in labelled))


@pytest.fixture(scope="module")
def classifier(tiny_backbone: Path) -> funcformer.Function:
    return funcformer.train("classify", make_reviews(20), backbone=tiny_backbone, method="head",
                            progress=False)


def self_trained(backbone: Path, texts: list[str], **options: object) -> funcformer.Function:
    options = {"self_training": {"rounds": 2, "threshold": 0.55}, "method": "head",
               "progress": False, **options}
    return funcformer.train("classify", make_reviews(4), backbone=backbone, unlabeled=texts,
                            **options)


def test_pseudo_labels_respect_threshold_balance_and_per_class_cap() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(200, 3, generator=generator), dim=1)
    shares = torch.tensor([0.5, 0.25, 0.25])
    picks = pseudo_labels(probs, SelfTraining(threshold=0.8, balance=False), 1, shares)
    confident = int((probs.max(dim=1).values >= 0.8).sum())
    assert len(picks) == confident > 0
    assert all(float(probs[i, c]) >= 0.8 and int(probs[i].argmax()) == c for i, c in picks)
    balanced = pseudo_labels(probs, SelfTraining(threshold=0.8), 1, shares)
    counts = torch.bincount(torch.tensor([c for _, c in balanced]), minlength=3).tolist()
    assert counts[0] in (2 * counts[1], 2 * counts[1] + 1) and counts[1] == counts[2] > 0
    capped = [pseudo_labels(probs, SelfTraining(threshold=0.5, per_class=3, balance=False), r,
                            shares) for r in (1, 2)]
    assert [len(p) for p in capped] == [9, 18]  # r x per_class of each label
    first = [i for i, c in capped[0] if c == 0]  # the most confident are kept
    assert min(float(probs[i, 0]) for i in first) >= max(
        float(probs[i, 0]) for i in range(200) if int(probs[i].argmax()) == 0 and i not in first)


def test_default_threshold_is_chance_normalised() -> None:
    """Without a threshold, a pseudo-label needs 0.8 of the way from chance to certainty: 0.9
    with two labels, 0.85 with four; a given threshold is taken as it is."""
    probs = torch.tensor([[0.87, 0.05, 0.04, 0.04], [0.84, 0.06, 0.05, 0.05],
                          [0.03, 0.03, 0.91, 0.03]])
    shares = torch.full((4,), 0.25)
    assert pseudo_labels(probs, SelfTraining(balance=False), 1, shares) == [(0, 0), (2, 2)]
    assert pseudo_labels(probs, SelfTraining(threshold=0.9, balance=False), 1, shares) == [(2, 2)]
    two = torch.tensor([[0.89, 0.11], [0.91, 0.09]])
    assert pseudo_labels(two, SelfTraining(balance=False), 1, torch.tensor([0.5, 0.5])) == [(1, 0)]


def test_self_training_adds_pseudo_labels_and_records_rounds(tiny_backbone: Path,
                                                              texts: list[str],
                                                              tmp_path: Path) -> None:
    fn = self_trained(tiny_backbone, texts)
    report = fn.manifest.training["self_training"]
    assert report["settings"]["threshold"] == report["threshold"] == 0.55
    assert report["unlabeled"] == len(texts)
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["pseudo_labels"] == 0
    for record in rounds[1:]:
        assert record["pseudo_labels"] == sum(record["per_label"].values()) > 0
        assert set(record["per_label"]) == {"negative", "positive"}
        assert record["lowest_confidence"] >= 0.55
        assert record["pseudo_labels"] <= len(texts)
    assert report["kept_round"] == 2  # no eval data: the last round
    assert fn.manifest.training["examples"] == 8  # the labelled rows
    path = fn.save(tmp_path / "fn")
    again = funcformer.load(path, backbone=tiny_backbone)
    assert again.manifest.training["self_training"] == report
    assert again("the food was great").scores == pytest.approx(fn("the food was great").scores)


def test_each_round_trains_on_the_labelled_rows_and_its_pseudo_labels(
        tiny_backbone: Path, texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The rounds' bookkeeping was all that was tested: training every round on the labelled
    rows alone passed."""
    from funcformer import _methods

    trained_on, real = [], _methods.fit

    def spy(task: object, backbone: object, data: Any, *args: object, **kwargs: object) -> Any:
        trained_on.append(list(zip(data.texts, data.labels, strict=True)))
        return real(task, backbone, data, *args, **kwargs)

    monkeypatch.setattr(_methods, "fit", spy)
    fn = self_trained(tiny_backbone, texts)
    rounds = fn.manifest.training["self_training"]["rounds"]
    labelled = [(text, label) for text, label in make_reviews(4)]
    assert len(trained_on) == len(rounds) == 3 and trained_on[0] == labelled
    for rows, record in zip(trained_on[1:], rounds[1:], strict=True):
        pseudo = rows[len(labelled):]
        assert rows[:len(labelled)] == labelled and len(pseudo) == record["pseudo_labels"] > 0
        assert {text for text, _ in pseudo} <= set(texts)
        assert Counter(label for _, label in pseudo) == record["per_label"]


def test_every_round_trains_at_the_rate_round_0_chose(tiny_backbone: Path, texts: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`contrastive` picks its rate by examples a label: the pseudo-labels must not change it
    between rounds (rounds compared at different rates)."""
    from funcformer._methods import contrastive

    rates, real = [], contrastive.run
    monkeypatch.setattr(contrastive, "learning_rate_for",
                        lambda labels, examples: 1e-4 if examples > 12 else 5e-5)

    def spy(plan: object, config: funcformer.TrainConfig, **options: object) -> object:
        rates.append(config.learning_rate)
        return real(plan, config, **options)

    monkeypatch.setattr(contrastive, "run", spy)
    fn = self_trained(tiny_backbone, texts, method="contrastive", epochs=1)
    rounds = fn.manifest.training["self_training"]["rounds"]
    assert len(rounds) == 3 and rounds[1]["pseudo_labels"] > 4  # more rows than round 0's
    assert rates == [5e-5] * 3  # 8 labelled rows and 4 label texts: 12
    assert fn.manifest.config["learning_rate"] is None  # a retrain chooses again


def test_eval_data_gives_the_metric_per_round_and_the_gain(tiny_backbone: Path,
                                                           texts: list[str]) -> None:
    fn = self_trained(tiny_backbone, texts, eval_data=make_reviews(10, seed=9))
    report = fn.manifest.training["self_training"]
    metrics = [r["eval_metric"] for r in report["rounds"]]
    assert all(isinstance(m, float) for m in metrics) and report["metric"] == "accuracy"
    assert report["labelled_only"] == metrics[0]
    best = max(range(len(metrics)), key=lambda r: (metrics[r], -r))  # ties: the earlier round
    assert report["kept_round"] == best
    assert report["gain"] == pytest.approx(metrics[best] - metrics[0])


def test_a_threshold_nothing_reaches_stops_after_the_labelled_round(
        tiny_backbone: Path, texts: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    fn = self_trained(tiny_backbone, texts, progress=True,
                      self_training=SelfTraining(rounds=3, threshold=0.999999))
    rounds = fn.manifest.training["self_training"]["rounds"]
    assert [r["pseudo_labels"] for r in rounds] == [0]
    assert "no text reached the threshold" in capsys.readouterr().err


def test_default_threshold_is_recorded_and_named_when_nothing_reaches_it(
        tiny_backbone: Path, texts: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The tiny head stays unsure (top probabilities near 0.5): the default for two labels,
    0.9, finds nothing, and the message says which threshold that was."""
    fn = self_trained(tiny_backbone, texts, progress=True, self_training={"rounds": 2})
    report = fn.manifest.training["self_training"]
    assert report["settings"]["threshold"] is None and report["threshold"] == 0.9
    assert [r["pseudo_labels"] for r in report["rounds"]] == [0]
    assert "threshold 0.900 (the default for 2 labels)" in capsys.readouterr().err


def test_self_training_works_with_lora(tiny_backbone: Path, texts: list[str]) -> None:
    fn = self_trained(tiny_backbone, texts, method="lora", epochs=1,
                      self_training={"rounds": 1, "threshold": 0.5})
    rounds = fn.manifest.training["self_training"]["rounds"]
    assert fn.manifest.method == "lora" and fn.manifest.adapter is not None
    assert len(rounds) == 2 and rounds[1]["pseudo_labels"] > 0


@pytest.mark.parametrize(("options", "error", "words"), [
    ({"self_training": {"rounds": 0}}, TaskError, "rounds must be a whole number"),
    ({"self_training": {"threshold": 1.5}}, TaskError, "threshold must be a probability"),
    ({"self_training": {"round": 2}}, TaskError, "Unknown self_training option(s): round"),
    ({"self_training": {"keep": "first"}}, TaskError, "keep must be 'best' or 'last'"),
    ({"unlabeled": []}, DataError, "unlabeled: an empty list"),  # was '<list>: no examples'
    ({"self_training": {"balance": "false"}}, TaskError, "balance must be true or false"),
    ({"unlabeled": ["fine", 3]}, DataError, "index 1"),
    ({"unlabeled": None, "self_training": {"rounds": 2}}, TaskError, "pass them too"),
    ({"multi_label": True}, TaskError, "multi-label"),
])
def test_bad_self_training_input_is_a_clear_error(tiny_backbone: Path, texts: list[str],
                                                  options: dict, error: type,
                                                  words: str) -> None:
    options = {"unlabeled": texts, **options}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        funcformer.train("classify", make_reviews(4), backbone=tiny_backbone, method="head",
                         progress=False, **options)


def test_unlabeled_text_already_labelled_is_not_pseudo_labelled(tiny_backbone: Path) -> None:
    labelled = [t for t, _ in make_reviews(4)]
    with pytest.raises(DataError, match="already in the labelled data"):
        funcformer.train("classify", make_reviews(4), backbone=tiny_backbone, method="head",
                         unlabeled=labelled, progress=False)


def test_unlabeled_applies_to_classify_only(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match="applies to classify"):
        funcformer.train("zero_shot", ["positive", "negative"], backbone=tiny_backbone,
                         unlabeled=["fine"])


def test_suggest_returns_n_distinct_uncertain_rows(classifier: funcformer.Function,
                                                   texts: list[str]) -> None:
    picks = funcformer.suggest(classifier, texts, n=5)
    assert len(picks) == 5 == len({p.index for p in picks}) == len({p.text for p in picks})
    assert [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)
    for pick in picks:
        assert texts[pick.index] == pick.text and pick.place == f"<list>, index {pick.index}"
        assert 0 <= pick.score <= 1 and pick.predicted in classifier.labels
        scores = classifier(pick.text).scores
        assert pick.score == pytest.approx(1 - abs(scores["positive"] - scores["negative"]),
                                           abs=1e-5)
    entropy = funcformer.suggest(classifier, texts, n=5, measure="entropy")
    assert all(0 <= p.score <= 1 for p in entropy)


def test_badge_picks_distinct_rows_starting_from_the_largest_gradient(
        classifier: funcformer.Function, texts: list[str]) -> None:
    from funcformer._unlabeled import gradient_embedding

    picks = funcformer.suggest(classifier, texts, n=4, measure="badge")
    assert len(picks) == 4 == len({p.index for p in picks}) == len({p.text for p in picks})
    features = classifier.features(texts)
    g = gradient_embedding(classifier.task, features, classifier.apply_head(features))
    assert g.shape == (len(texts), len(classifier.labels) * features.shape[1])
    assert int(g.norm(dim=1).argmax()) in {p.index for p in picks}


def test_suggest_prefers_uncertain_texts(classifier: funcformer.Function,
                                         texts: list[str]) -> None:
    picks = funcformer.suggest(classifier, texts, n=3, candidates=3)  # no room to diversify
    scores = sorted((1 - abs(s.scores["positive"] - s.scores["negative"])
                     for s in classifier(texts)), reverse=True)
    assert [p.score for p in picks] == pytest.approx(scores[:3], abs=1e-5)


def test_suggest_never_picks_duplicates(classifier: funcformer.Function,
                                        texts: list[str]) -> None:
    variants = [v for t in texts[:6] for v in (t, t.upper(), t.replace(" ", "  "), t)]
    picks = funcformer.suggest(classifier, variants, n=6)
    assert sorted(p.text.lower().replace("  ", " ") for p in picks) == sorted(texts[:6])
    with pytest.raises(DataError, match=r"only 6 of the 24 texts differ"):
        funcformer.suggest(classifier, variants, n=7)


def test_diversity_spreads_picks_over_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=generator) * 5
    features = torch.cat([c + 0.1 * torch.randn(10, 16, generator=generator) for c in centers])
    scores = torch.linspace(1, 0, 40)  # the first cluster is the most uncertain
    z = directions(features)
    assert len(distinct_pool(z, scores, 40)) == 4  # within a cluster: near-duplicates
    picks = diverse(z, scores, 4)
    assert sorted(i // 10 for i in picks) == [0, 1, 2, 3]
    assert all(i % 10 == 0 for i in picks)  # each cluster gives its most uncertain row


def test_neighbour_similarity_gives_the_mean_degree_asked_for() -> None:
    z = directions(torch.randn(300, 16, generator=torch.Generator().manual_seed(0)))
    for degree in (1, 5, 20):
        rows, _ = neighbourhoods(z, neighbour_similarity(z, degree))
        assert len(rows) - len(z) == degree * len(z)  # exact below SIMILARITY_BLOCK; self-loops
    rows, columns = neighbourhoods(z, neighbour_similarity(z, 5))
    pairs = set(zip(rows.tolist(), columns.tolist(), strict=True))
    assert all((c, r) in pairs for r, c in pairs)  # symmetric
    assert all((i, i) in pairs for i in range(len(z)))  # each row its own neighbour


def test_neighbour_similarity_samples_rows_of_a_large_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    import funcformer._unlabeled as unlabeled

    z = directions(torch.randn(400, 16, generator=torch.Generator().manual_seed(1)))
    exact = neighbour_similarity(z, 8)
    monkeypatch.setattr(unlabeled, "SIMILARITY_BLOCK", 100 * 400)  # 100 sampled rows
    sampled = neighbour_similarity(z, 8, seed=3)
    rows, _ = neighbourhoods(z, sampled)
    assert sampled != exact and 6 <= (len(rows) - len(z)) / len(z) <= 10


def test_cover_picks_the_centres_of_the_largest_regions_no_label_reaches() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=generator) * 5
    sizes = (20, 15, 10)
    features = torch.cat([c + 0.3 * torch.randn(size, 16, generator=generator)
                          for c, size in zip(centers, sizes, strict=True)]
                         + [centers[0:1] + 0.1])  # a labelled text in the largest cluster
    z = directions(features)
    unlabelled, known = z[:45], z[45:]
    cluster = torch.tensor([k for k, size in enumerate(sizes) for _ in range(size)])
    picks = cover(unlabelled, known, 2, degree=9)
    assert [int(cluster[i]) for i in picks] == [1, 2]  # uncovered, the larger first
    assert [int(cluster[i]) for i in cover(unlabelled, known[:0], 1, degree=9)] == [0]
    # the pick is the row whose neighbourhood holds the most uncovered rows
    rows, _ = neighbourhoods(z, neighbour_similarity(z, 9))
    reach = torch.bincount(rows, minlength=len(z))[:45]
    assert int(reach[picks[0]]) == int(reach[cluster == 1].max())
    excluded = [i == picks[0] for i in range(45)]
    assert picks[0] not in cover(unlabelled, known, 2, excluded=excluded, degree=9)
    # every region covered: no more picks (suggest fills the rest with uncertain texts)
    assert len(cover(unlabelled, known, 10, degree=9)) < 10
    twice = torch.cat([unlabelled[:1], unlabelled])  # a text given twice is picked once
    assert len(set(cover(twice, known[:0], 45, degree=1)) & {0, 1}) == 1
    # weighted (by the function's uncertainty in suggest): a text counts for its weight, so
    # a smaller region the function is unsure of comes before a larger, surer one
    unsure = torch.where(cluster == 2, 1.0, 0.1)
    weighted = cover(unlabelled, known, 2, degree=9, weights=unsure)
    assert [int(cluster[i]) for i in weighted] == [2, 1]


def test_suggest_explore_covers_unlabelled_regions_and_skips_labelled_texts(
        classifier: funcformer.Function, texts: list[str]) -> None:
    labelled = texts[:6]
    for explore in (1.0, 0.5, "auto"):
        picks = funcformer.suggest(classifier, texts, n=5, labelled=labelled, explore=explore)
        assert len(picks) == 5 == len({p.text for p in picks})
        assert not {p.text for p in picks} & set(labelled)
        assert [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)
    # "auto" with few labelled texts: coverage picks first (they do not depend on the head),
    # then uncertain ones once every text is near a labelled text or a pick
    auto = funcformer.suggest(classifier, texts, n=5, labelled=labelled)
    features = classifier.features(texts + labelled)
    z = directions(features)
    unsure = uncertainty(classifier.task, classifier.apply_head(features[: len(texts)]))
    expected = cover(z[: len(texts)], z[len(texts):], 5, excluded=[t in labelled for t in texts],
                     weights=unsure)
    assert expected and set(expected) <= {p.index for p in auto}
    uncertain = funcformer.suggest(classifier, texts, n=5, candidates=5)  # no labelled: margin
    assert [p.score for p in uncertain] == pytest.approx(sorted(
        (1 - abs(s.scores["positive"] - s.scores["negative"]) for s in classifier(texts)),
        reverse=True)[:5], abs=1e-5)
    with pytest.raises(DataError, match="explore must be"):
        funcformer.suggest(classifier, texts, n=5, explore=1.5)


def test_explore_auto_share_falls_with_labelled_texts_per_label() -> None:
    from funcformer._unlabeled import EXPLORE_UNTIL, _explore_share

    assert _explore_share("auto", 0, 2) == _explore_share("auto", 2 * EXPLORE_UNTIL, 2) == 1.0
    assert _explore_share("auto", 3 * EXPLORE_UNTIL, 2) == 0.5
    assert _explore_share("auto", 10 * EXPLORE_UNTIL, 2) == 0.0
    assert _explore_share("auto", None, 2) == 0.0  # labelled texts not given: uncertainty only
    assert _explore_share(0.25, 1000, 2) == 0.25


@pytest.mark.parametrize(("data", "n", "words"), [
    ([], 2, "unlabeled: an empty list"),
    # no duplicates among them: it said "(the rest are duplicates ...)" of no rest
    (["good", "bad"], 3, r"asked for n=3 suggestions, but there are only 2 texts\. Fix: "),
    (["good", "good", "bad"], 3, r"only 2 of the 3 texts differ from each other \(the rest"),
    (["good", "bad"], 0, "n must be a whole number >= 1"),
])
def test_suggest_bad_input_is_a_clear_error(classifier: funcformer.Function, data: list[str],
                                            n: int, words: str) -> None:
    with pytest.raises(DataError, match=words):
        funcformer.suggest(classifier, data, n=n)


def test_suggest_says_when_every_text_is_labelled_already(
        classifier: funcformer.Function) -> None:
    with pytest.raises(DataError, match=r"none of the 2 texts can be suggested: each is a "
                                        r"labelled text .*Fix: pass texts that have no label"):
        funcformer.suggest(classifier, ["good", "bad"], n=1, labelled=["good", "bad"])


def test_suggest_needs_a_classify_function(tiny_backbone: Path) -> None:
    zero_shot = funcformer.train("zero_shot", ["positive", "negative"], backbone=tiny_backbone)
    with pytest.raises(TaskError, match="classify function; this function's task is zero_shot"):
        funcformer.suggest(zero_shot, ["good"], n=1)


def test_suggest_works_for_multi_label(tiny_backbone: Path, texts: list[str]) -> None:
    rows = [(t, "a|b" if i % 3 == 0 else ("a" if i % 3 == 1 else "b"))
            for i, (t, _) in enumerate(make_reviews(10))]
    fn = funcformer.train("classify", rows, backbone=tiny_backbone, method="head",
                          progress=False)
    picks = funcformer.suggest(fn, texts, n=4)
    assert len({p.text for p in picks}) == 4
    assert all(set(p.predicted.split("|")) <= {"a", "b", ""} for p in picks)


@pytest.fixture()
def saved(classifier: funcformer.Function, tmp_path: Path) -> Path:
    return classifier.save(tmp_path / "fn")


@pytest.fixture()
def pool_file(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / "pool.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def test_cli_suggest_prints_json_lines(saved: Path, pool_file: Path, texts: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("suggest", saved, pool_file, "--n", 4) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert set(line) == {"text", "score", "predicted", "index", "place"}
        assert line["place"] == f"pool.txt, line {line['index'] + 1}"
        assert texts[line["index"]] == line["text"]
    labelled = pool_file.with_name("labelled.txt")
    labelled.write_text("\n".join(texts[:5]) + "\n", encoding="utf-8")
    assert run_cli("suggest", saved, pool_file, "--n", 4, "--labelled", labelled) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4 and not {line["text"] for line in lines} & set(texts[:5])


def test_cli_suggest_writes_a_file_to_label_then_update(
        saved: Path, pool_file: Path, tmp_path: Path, tiny_backbone: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "to_label.csv"
    assert run_cli("suggest", saved, pool_file, "--n", 3, "--out", out) == 0
    assert "Fill in the label column" in capsys.readouterr().out
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(r["label"] == "" for r in rows)
    assert rows[0].keys() == {"text", "label", "predicted", "score", "place"}
    for row in rows:  # a person labels them
        row["label"] = "positive" if "great" in row["text"] else "negative"
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    updated = funcformer.load(saved, backbone=tiny_backbone).update(out, progress=False)
    assert updated.manifest.training["update"]["examples"] == 3


@pytest.mark.parametrize(("args", "words"), [
    (["--n", "999"], "asked for n=999"),
    (["--out", "picks.xlsx"], "unknown output file type '.xlsx'"),
    (["--measure", "variance"], "Unknown uncertainty measure 'variance'"),
    (["--explore", "most"], "--explore must be a share from 0 to 1 or 'auto', got 'most'"),
    (["--explore", "2"], "explore must be a share from 0 to 1 or 'auto', got 2.0"),
])
def test_cli_suggest_errors_exit_1(saved: Path, pool_file: Path, tmp_path: Path, args: list,
                                   words: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [tmp_path / a if a.endswith(".xlsx") else a for a in args]
    assert run_cli("suggest", saved, pool_file, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err


def test_cli_suggest_checks_the_out_file_type_first(saved: Path, pool_file: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []  # the picks were computed, then the .txt refused
    monkeypatch.setattr("funcformer._unlabeled.suggest", lambda *a, **k: calls.append(1))
    assert run_cli("suggest", saved, pool_file, "--out", tmp_path / "picks.txt") == 1
    assert "unknown output file type '.txt'" in capsys.readouterr().err and calls == []


def test_cli_suggest_on_empty_file_and_other_task(saved: Path, tmp_path: Path,
                                                  tiny_backbone: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert run_cli("suggest", saved, empty) == 1
    assert "empty.txt: the file is empty" in capsys.readouterr().err
    other = funcformer.train("zero_shot", ["a", "b"], backbone=tiny_backbone).save(tmp_path / "z")
    assert run_cli("suggest", other, empty) == 1
    assert "this function's task is zero_shot" in capsys.readouterr().err


def test_cli_train_with_unlabeled(reviews_csv: Path, pool_file: Path, tmp_path: Path,
                                  tiny_backbone: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "st"
    code = run_cli("train", "classify", reviews_csv, "--out", out, "--method", "head",
                   "--backbone", tiny_backbone, "--unlabeled", pool_file, "--set",
                   'self_training={"rounds": 1, "threshold": 0.5}')
    assert code == 0
    assert "Self-training: pseudo-labels per round 0, " in capsys.readouterr().out
    manifest = json.loads((out / "funcformer.json").read_text())
    assert len(manifest["training"]["self_training"]["rounds"]) == 2
    assert run_cli("train", "classify", reviews_csv, "--out", tmp_path / "x", "--backbone",
                   tiny_backbone, "--unlabeled", tmp_path / "missing.txt") == 1
    assert "missing.txt: no such file" in capsys.readouterr().err


def test_suggest_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("suggest", "--help") == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--n", "--out", "--measure", "--candidates",
                                        "--labelled", "--explore"))


def test_pairs_are_read_as_their_texts(classifier: funcformer.Function, texts: list[str],
                                       tiny_backbone: Path) -> None:
    """The training data as given to train ((text, label) pairs) was refused as `labelled=`
    and as the pool with 'expected a string, a dict, or a (text, label) pair, got tuple'; the
    labels are ignored, as a file's label column is."""
    labelled = make_reviews(20)
    picks = funcformer.suggest(classifier, [(t, "?") for t in texts], n=3, labelled=labelled)
    assert [p.text for p in picks] == [p.text for p in funcformer.suggest(
        classifier, texts, n=3, labelled=[t for t, _ in labelled])]
    with pytest.raises(DataError, match="already in the labelled data"):
        funcformer.train("classify", make_reviews(4), backbone=tiny_backbone, method="head",
                         unlabeled=make_reviews(4), progress=False)


def test_suggest_with_nothing_labelled_yet_covers(classifier: funcformer.Function,
                                                  texts: list[str]) -> None:
    """labelled=[] (a cold start) was '<list>: no examples found'; it means every text is
    uncovered, so explore='auto' makes every pick a coverage pick."""
    from funcformer._unlabeled import _explore_share

    assert _explore_share("auto", 0, 2) == 1.0
    picks = funcformer.suggest(classifier, texts, n=3, labelled=[])
    assert len({p.text for p in picks}) == 3


def test_suggest_refuses_a_seed_that_is_not_a_whole_number(classifier: funcformer.Function,
                                                           texts: list[str]) -> None:
    with pytest.raises(DataError, match="seed must be a whole number"):  # was a RuntimeError
        funcformer.suggest(classifier, texts, n=2, seed="a")


def test_self_training_says_how_many_unlabelled_texts_it_leaves_out(
        tiny_backbone: Path, texts: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Texts repeated, or also in the labelled data, were left out with no word but the
    manifest's count ('unlabeled: 140' of 200)."""
    labelled = [text for text, _ in make_reviews(4)]
    self_trained(tiny_backbone, [*texts, texts[0], labelled[0]], progress=True)
    err = capsys.readouterr().err
    assert (f"self-training: {len(texts)} of the {len(texts) + 2} unlabelled texts are used; "
            "2 repeat one another or a text of the training or eval data") in err
    self_trained(tiny_backbone, texts, progress=True)
    assert "unlabelled texts are used" not in capsys.readouterr().err
