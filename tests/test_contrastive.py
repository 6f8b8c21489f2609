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
from funcformer._methods.contrastive import label_batches, supervised_contrastive


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


def test_loss_prefers_same_label_neighbours() -> None:
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    right = supervised_contrastive(features, torch.tensor([0, 0, 1, 1]))
    wrong = supervised_contrastive(features, torch.tensor([0, 1, 0, 1]))
    assert right < wrong
    alone = supervised_contrastive(features, torch.tensor([0, 1, 2, 3]))
    assert alone.item() == 0.0  # no positives, no signal (and no NaN)


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
    out = fn.save(tmp_path / "fn")
    assert (out / "encoder" / "model.safetensors").is_file()
    loaded = funcformer.load(out)
    texts = ["the food was great", "the room was dirty"]
    assert [p.label for p in loaded(texts)] == [p.label for p in fn(texts)]
    again = funcformer.train("classify", make_reviews(8), eval_data=make_reviews(8, seed=1),
                             backbone=tiny_backbone, method="contrastive", epochs=5,
                             learning_rate=1e-3, progress=False)
    assert again.digest == fn.digest


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
