"""embed / similarity / zero-shot helpers on a tiny backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import funcformer
from funcformer import DataError, MemoryCache, Prediction, ZeroShot, _embed
from funcformer import _backbone as bb


def test_embed_shapes_dtype_and_normalisation(tiny_backbone: Path) -> None:
    many = funcformer.embed(["the food was great", "slow"], backbone=tiny_backbone)
    assert many.shape == (2, 32) and many.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, rtol=1e-5)
    one = funcformer.embed("slow", backbone=tiny_backbone)
    assert one.shape == (32,)
    np.testing.assert_allclose(one, many[1], atol=1e-6)
    raw = funcformer.embed(["slow"], backbone=tiny_backbone, normalize=False)
    np.testing.assert_allclose(raw[0] / np.linalg.norm(raw[0]), one, atol=1e-6)
    assert not np.isclose(np.linalg.norm(raw[0]), 1.0)  # tiny BERT: mean pooling, no Normalize


def test_embed_uses_a_cache(tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = MemoryCache()
    first = funcformer.embed(["lovely hotel"], backbone=tiny_backbone, cache=cache)
    monkeypatch.setattr(bb.Backbone, "_embed", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_array_equal(
        funcformer.embed(["lovely hotel"], backbone=tiny_backbone, cache=cache), first)


def test_similarity_shapes(tiny_backbone: Path) -> None:
    opts = {"backbone": tiny_backbone}
    same = funcformer.similarity("the food was great", "the food was great", **opts)
    assert isinstance(same, float) and same == pytest.approx(1.0, abs=1e-5)
    assert funcformer.similarity("slow", ["slow", "lovely hotel"], **opts).shape == (2,)
    assert funcformer.similarity(["slow", "great"], "slow", **opts).shape == (2,)
    assert funcformer.similarity(["a", "b", "c"], ["d", "e"], **opts).shape == (3, 2)


def test_bad_texts_are_data_errors(tiny_backbone: Path) -> None:
    with pytest.raises(DataError, match="index 1"):
        funcformer.embed(["fine", " "], backbone=tiny_backbone)
    for bad in (None, 5, b"bytes"):  # None and 5 were TypeErrors; bytes were split into ints
        with pytest.raises(DataError, match="embed takes a text or a list"):
            funcformer.embed(bad, backbone=tiny_backbone)
    with pytest.raises(funcformer.TaskError, match="normalize must be true or false"):
        funcformer.embed("fine", backbone=tiny_backbone, normalize="maybe")  # was truthy


def test_zero_shot_results_and_per_call_labels(tiny_backbone: Path) -> None:
    zs = ZeroShot(["food", "hotel"], backbone=tiny_backbone)
    one = zs("the food was great")
    assert isinstance(one, Prediction) and set(one.scores) == {"food", "hotel"}
    assert sum(one.scores.values()) == pytest.approx(1.0, abs=1e-5)
    many = zs(["the food was great", "lovely hotel"], labels={"a": "food", "b": "hotel", "c": "x"})
    assert [set(p.scores) for p in many] == [{"a", "b", "c"}] * 2
    assert funcformer.zero_shot("slow", ["food", "hotel"], backbone=tiny_backbone).label in {
        "food", "hotel"}


def test_label_embeddings_are_computed_once(tiny_backbone: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One encoder pass per call for the texts; label prompts come from the cache after once."""
    zs = ZeroShot(["breakfast", "parking", "wifi"], backbone=tiny_backbone)
    zs("the room was dirty")
    seen: list[list[str]] = []
    original = bb.Backbone._embed

    def spy(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(list(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(bb.Backbone, "_embed", spy)
    zs(["the staff were rude", "great breakfast", "slow wifi"])
    assert seen == [["the staff were rude", "great breakfast", "slow wifi"]]


def test_zero_shot_argmax_is_the_nearest_prompt(tiny_backbone: Path) -> None:
    zs = ZeroShot({"pos": "the food was great", "neg": "the room was dirty"},
                  backbone=tiny_backbone)
    assert zs("the food was great").label == "pos"
    assert zs("the room was dirty").label == "neg"


@pytest.mark.parametrize(("labels", "template", "match"), [
    (["only"], _embed.DEFAULT_TEMPLATE, "at least two labels"),
    (["a", " "], _embed.DEFAULT_TEMPLATE, "at least two labels"),
    (["a", "b"], "no placeholder", "exactly one"),
])
def test_zero_shot_bad_labels(tiny_backbone: Path, labels: list[str], template: str,
                              match: str) -> None:
    with pytest.raises(DataError, match=match):
        ZeroShot(labels, template=template, backbone=tiny_backbone)("the food was great")
