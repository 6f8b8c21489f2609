"""The `contrastive` method: supervised contrastive encoder tuning (linear in the data), then
a head; artifact with the tuned encoder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import TaskError
from funcformer import _backbone as bb
from funcformer._methods.contrastive import (
    label_batches,
    loss_for,
    pair_similarity,
    supervised_contrastive,
)


def test_batches_cover_every_example_linearly_each_with_a_positive() -> None:
    labels = [0] * 7 + [1] * 8 + [2] * 5
    batches = label_batches(labels, batch_size=8, seed=0)
    seen = Counter(i for batch in batches for i in batch)
    assert set(seen) == set(range(len(labels)))
    assert sum(seen.values()) <= len(labels) + 3  # odd labels repeat one example each
    assert len(batches) == -(-sum(seen.values()) // 8)  # grows with N, not N squared
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert all(counts[labels[i]] >= 2 for i in batch)
    assert label_batches(labels, 8, 0) == batches and label_batches(labels, 8, 1) != batches


def test_every_batch_holds_each_label_text_once_enough_and_nothing_else_changes() -> None:
    labels = [0] * 7 + [1] * 8 + [2] * 5 + [0, 0, 1, 1, 2, 2]
    texts = list(range(20, 26))  # the label texts, two a label, as `with_label_texts` adds them
    plain = label_batches(labels, batch_size=8, seed=0)
    batches = label_batches(labels, batch_size=8, seed=0, label_texts=texts)
    assert len(batches) == len(plain) > 2  # no extra steps
    for before, after in zip(plain, batches, strict=True):
        assert after[:len(before)] == before  # the pairs as they were, extras at the end
        extra = after[len(before):]
        assert set(extra) <= {20, 22, 24} and len(set(extra)) == len(extra)
        held = {labels[i] for i in after if i in texts}
        assert held == {0, 1, 2}, (before, after)  # every label's text in every batch
        assert all(labels[i] not in {labels[j] for j in before if j in texts} for i in extra)
    assert label_batches(labels, 8, 0, label_texts=()) == plain


def test_loss_prefers_same_label_neighbours() -> None:
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    right = pair_similarity(features, torch.tensor([0, 0, 1, 1]))
    wrong = pair_similarity(features, torch.tensor([0, 1, 0, 1]))
    assert right < wrong
    assert pair_similarity(torch.eye(2), torch.tensor([0, 1])).item() == 0.0  # already right
    assert pair_similarity(features[:1], torch.tensor([0])).item() == 0.0  # no pair, no NaN


def test_supcon_prefers_same_label_neighbours() -> None:
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    right = supervised_contrastive(features, torch.tensor([0, 0, 1, 1]))
    wrong = supervised_contrastive(features, torch.tensor([0, 1, 0, 1]))
    assert right < wrong
    alone = supervised_contrastive(features, torch.tensor([0, 1, 2, 3]))
    assert alone.item() == 0.0  # no positives, no signal (and no NaN)


def test_auto_loss_is_pairs_up_to_eight_labels_then_supcon() -> None:
    assert [loss_for("auto", n) for n in (2, 8, 9, 77)] == [
        pair_similarity, pair_similarity, supervised_contrastive, supervised_contrastive]
    assert loss_for("pairs", 77) is pair_similarity
    assert loss_for("supcon", 2) is supervised_contrastive


def test_loss_balances_same_and_different_label_pairs() -> None:
    """Six labels in a batch of 8: 2 same-label pairs against 26 others. Each kind weighs half,
    as SetFit's oversampled pairs do; a plain mean would let the 26 decide."""
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5, 5])
    collapsed = torch.ones(8, 2)  # every cosine 1: the same-label pairs are right
    apart = torch.eye(8)  # every cosine 0: the different-label pairs are right
    assert pair_similarity(collapsed, labels).item() == pytest.approx(0.5)
    assert pair_similarity(apart, labels).item() == pytest.approx(0.5)


def test_contrastive_trains_saves_and_reloads(tiny_backbone: Path, tmp_path: Path) -> None:
    from conftest import make_reviews

    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    fn = funcformer.train("classify", make_reviews(8), eval_data=make_reviews(8, seed=1),
                          backbone=tiny_backbone, method="contrastive", epochs=5,
                          learning_rate=1e-3, progress=False)
    assert all(torch.equal(before[k], v) for k, v in shared.model.state_dict().items())
    assert fn.manifest.method == "contrastive" and fn.manifest.backbone.included
    assert fn.metrics["accuracy"] >= 0.5
    # >= 0.5 held with the head zeroed (one label for all): the head fits the training rows,
    # and the tuned encoder holds a label's texts closer together than the untrained one
    rows = make_reviews(8)
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    assert fn.evaluate(rows)["accuracy"] >= 0.8

    def separation(features: torch.Tensor) -> float:
        unit = torch.nn.functional.normalize(features, dim=-1)
        cosine, same = unit @ unit.T, torch.tensor([[a == b for b in labels] for a in labels])
        return float(cosine[same & ~torch.eye(len(labels), dtype=torch.bool)].mean()
                     - cosine[~same].mean())

    untrained = torch.from_numpy(shared.embed(texts)[0])
    assert separation(fn.features(texts)) > separation(untrained) + 0.01
    out = fn.save(tmp_path / "fn")
    assert (out / "encoder" / "model.safetensors").is_file()
    loaded = funcformer.load(out)
    texts = ["the food was great", "the room was dirty"]
    assert [p.label for p in loaded(texts)] == [p.label for p in fn(texts)]
    again = funcformer.train("classify", make_reviews(8), eval_data=make_reviews(8, seed=1),
                             backbone=tiny_backbone, method="contrastive", epochs=5,
                             learning_rate=1e-3, progress=False)
    assert again.digest == fn.digest
    supcon = funcformer.train("classify", make_reviews(8), eval_data=make_reviews(8, seed=1),
                              backbone=tiny_backbone, method="contrastive", epochs=5,
                              learning_rate=1e-3, contrastive_loss="supcon", progress=False)
    assert supcon.digest != fn.digest  # two labels: auto took pairs, this one supcon
    assert supcon.manifest.config["contrastive_loss"] == "supcon"


def test_tasks_that_cannot_use_it_say_so(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match="contrastive needs one label per text"):
        funcformer.train("classify", [("a b", ["x", "y"]), ("c d", ["y"])] * 5,
                         backbone=tiny_backbone, method="contrastive", progress=False)
    with pytest.raises(TaskError, match="tag trains with method 'full'"):
        funcformer.train("tag", [{"tokens": ["a"], "tags": ["B-X"]}], backbone=tiny_backbone,
                         method="contrastive")
    with pytest.raises(TaskError, match="embed trains with method 'full'"):
        funcformer.train("embed", [("a", "b")] * 4, backbone=tiny_backbone,
                         method="contrastive")


def test_label_words_read_names_and_refuse_codes() -> None:
    from funcformer._methods.labels import label_words

    assert label_words("card_arrival") == "card arrival"
    assert label_words("cardArrival") == "card arrival"
    assert label_words("Sci/Tech") == "sci/tech"
    assert label_words("très_bien") == "très bien"
    for code in ("0", "12", "LABEL_1", "label-2", "class 3", "B", "x1", "__"):
        assert label_words(code) is None, code


def test_label_texts_join_training_only_when_every_label_has_words() -> None:
    from funcformer._config import TrainConfig
    from funcformer._data import Examples
    from funcformer._methods.labels import LABEL_COPIES, with_label_texts

    rows = Examples(["good", "bad", "fine"], ["pos_review", "neg_review", "pos_review"], "f",
                    ["line 2", "line 3", "line 4"])
    added, note = with_label_texts(rows, TrainConfig(label_template="A {} one."))
    assert added.texts[:3] == rows.texts and added.labels[:3] == rows.labels
    assert sorted(zip(added.texts[3:], added.labels[3:], strict=True)) == sorted(
        [("A neg review one.", "neg_review"), ("A pos review one.", "pos_review")] * LABEL_COPIES)
    assert added.places[3] == "label text for 'neg_review' (label_template)"
    assert "2 label texts added" in note

    coded = Examples(["good", "bad"], ["1", "0"], "f", ["line 2", "line 3"])
    same, note = with_label_texts(coded, TrainConfig())
    assert same is coded and "'0', '1' are codes" in note and "label_names" in note
    named, _ = with_label_texts(coded, TrainConfig(label_names={"0": "negative",
                                                                 "1": "positive"}))
    assert "This sentence is negative." in named.texts
    half, note = with_label_texts(coded, TrainConfig(label_names={"0": "negative"}))
    assert half is coded and "'1' are codes" in note  # all or none: no odd one out
    off, note = with_label_texts(rows, TrainConfig(label_texts=False))
    assert off is rows and "off" in note
    with pytest.raises(TaskError, match=r"label_names names label\(s\).*'2'.*Its labels: '0', "):
        with_label_texts(coded, TrainConfig(label_names={"2": "neutral"}))


@pytest.mark.parametrize(("options", "match"), [
    ({"label_template": "no slot"}, "label_template 'no slot' must contain exactly one '{}'"),
    ({"label_template": "{} and {}"}, "exactly one"),
    ({"label_template": "a {} {x}"}, "no braces but one"),
    ({"label_texts": "yes"}, "label_texts must be true or false"),
    ({"label_names": {"0": ""}}, "label_names must map labels to non-empty words"),
    ({"label_names": ["negative"]}, "label_names must map"),
])
def test_label_text_options_are_checked(options: dict, match: str) -> None:
    from funcformer._config import TrainConfig

    with pytest.raises(TaskError, match=match):
        TrainConfig(**options)


@pytest.mark.parametrize("method", ["contrastive", "head"])
def test_label_texts_change_training_and_are_classify_only(tiny_backbone: Path,
                                                           method: str) -> None:
    from conftest import make_reviews

    def train(**options: object) -> funcformer.Function:
        return funcformer.train("classify", make_reviews(6), backbone=tiny_backbone,
                                method=method, epochs=2, learning_rate=1e-3,
                                progress=False, **options)

    with_texts, without = train(), train(label_texts=False)
    assert with_texts.digest != without.digest
    assert with_texts.manifest.config["label_template"] == "This sentence is {}."
    assert with_texts.manifest.training["examples"] == 12  # the user's rows, not the label texts
    with pytest.raises(TaskError, match="label_template applies to classify"):
        funcformer.train("embed", [("a", "b")] * 4, backbone=tiny_backbone,
                         label_template="About {}.")


def test_contrastive_gives_its_batches_the_label_texts_up_to_half_a_batch_of_labels(
        tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from funcformer._methods import contrastive

    seen: list[tuple[list[int], list[int]]] = []

    def spy(labels: list[int], batch_size: int, seed: int, label_texts: list[int] = ()
            ) -> list[list[int]]:
        seen.append((labels, list(label_texts)))
        return label_batches(labels, batch_size, seed, label_texts)

    monkeypatch.setattr(contrastive, "label_batches", spy)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]

    def train(names: int, **options: object) -> list[int]:
        seen.clear()
        rows = [(f"text {i} about {words[i % names]}", words[i % names]) for i in range(4 * names)]
        funcformer.train("classify", rows, backbone=tiny_backbone, method="contrastive",
                         epochs=1, progress=False, **options)
        labels, texts = seen[0]
        assert len(labels) == 6 * names  # 4 rows and 2 label texts a label
        return texts

    assert train(8) == list(range(32, 48))  # the label texts come last, all of them
    assert train(9) == []  # a ninth label: the extra texts would outgrow a batch of 16
    assert train(4, batch_size=8) == list(range(16, 24))
    assert train(5, batch_size=8) == []  # a user's smaller batches are not swamped either


def test_label_texts_are_announced(tiny_backbone: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import make_reviews

    funcformer.train("classify", make_reviews(4), backbone=tiny_backbone, method="contrastive",
                     epochs=1, progress=True)
    assert "contrastive: 2 label texts added, 2 each, e.g. 'This sentence is negative.'" in \
        capsys.readouterr().err


def test_contrastive_learning_rate_follows_the_labels_unless_given(
        tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from funcformer._methods import contrastive

    rates: list[float] = []
    real_run = contrastive.run

    def spy(plan: object, config: funcformer.TrainConfig, **options: object) -> object:
        rates.append(config.learning_rate)  # the encoder's (contrastive's plan has no head)
        return real_run(plan, config, **options)

    monkeypatch.setattr(contrastive, "run", spy)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]

    def rate(names: int, per_label: int = 32, **options: object) -> float:
        rates.clear()
        rows = [(f"text {i} about {words[i % names]}", words[i % names])
                for i in range(per_label * names)]
        fn = funcformer.train("classify", rows, backbone=tiny_backbone, method="contrastive",
                              epochs=1, progress=False, **options)
        assert fn.manifest.config["learning_rate"] == options.get("learning_rate")
        assert fn.manifest.training["chosen"] == {"epochs": 1, "learning_rate": rates[0]}
        return rates[0]

    assert rate(2) == 5e-5
    assert rate(3) == rate(8) == 1e-4  # 3 to 8 labels: twice the rate
    assert rate(3, per_label=8) == 5e-5  # ... unless they have few examples each
    assert rate(9) == 5e-5  # supcon's range keeps it
    assert rate(6, learning_rate=2e-5) == 2e-5  # a given rate is kept
