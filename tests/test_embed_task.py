"""The embed task: an Embedder function, training from pairs, artifact round trip, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import funcformer
from funcformer import DataError, TaskError
from funcformer._tasks.embed import (
    Embedder,
    Embedding,
    from_backbone,
    read_pairs,
    retrieval_metrics,
    tune_encoder,
)


def paraphrases(n: int = 24, seed: int = 0) -> list[tuple[str, str]]:
    from conftest import NEGATIVE, NOUNS, POSITIVE

    rng = random.Random(seed)
    return [(f"the {noun} was {adj}", f"{adj} {noun}")
            for noun, adj in ((rng.choice(NOUNS), rng.choice(POSITIVE + NEGATIVE))
                              for _ in range(n))]


def scored(n: int = 30, seed: int = 0) -> list[tuple[str, str, float]]:
    from conftest import NEGATIVE, POSITIVE

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(POSITIVE), rng.choice(POSITIVE + NEGATIVE)
        rows.append((f"the food was {a}", f"the food was {b}", 5.0 if b in POSITIVE else 0.0))
    return rows


def test_untrained_embedder_matches_funcformer_embed(tiny_backbone: Path) -> None:
    fn = from_backbone(tiny_backbone)
    vectors = fn.encode(["the food was great", "the room was dirty"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors, funcformer.embed(["the food was great", "the room was dirty"],
                                                 backbone=tiny_backbone), atol=1e-6)
    one = fn("the food was great")
    assert isinstance(one, Embedding) and np.allclose(one.array, vectors[0])
    assert fn.similarity("the food was great", ["the food was great"])[0] == pytest.approx(1.0)


def test_in_batch_negatives_pull_pairs_together(tiny_backbone: Path, tmp_path: Path) -> None:
    pairs = paraphrases()
    before = from_backbone(tiny_backbone).evaluate(pairs)
    fn = funcformer.train("embed", pairs, eval_data=pairs, backbone=tiny_backbone,
                          progress=False, epochs=8, learning_rate=1e-3, batch_size=8)
    assert fn.manifest.options["loss"] == "in_batch_negatives"
    assert fn.metrics["mrr_at_10"] > before["mrr_at_10"]  # >= held with the sign flipped:
    assert fn.manifest.training["history"]["best_epoch"] > 0  # the start was kept
    assert fn.manifest.training["history"]["best_metric"] == pytest.approx(
        fn.metrics["mrr_at_10"])
    out = fn.save(tmp_path / "emb")
    assert {p.name for p in out.iterdir()} == {"funcformer.json", "encoder"}
    assert (out / "encoder" / "model.safetensors").is_file()
    loaded = funcformer.load(out)
    assert isinstance(loaded, Embedder) and loaded.digest == fn.digest
    texts = [a for a, _ in pairs[:5]]
    assert np.allclose(loaded.encode(texts), fn.encode(texts), atol=1e-5)


def test_cosine_regression_on_scores(tiny_backbone: Path) -> None:
    rows = scored()
    before = from_backbone(tiny_backbone).evaluate(rows)["spearman"]
    # No eval data: every epoch trains (with eval data, early stopping may keep the start).
    fn = funcformer.train("embed", rows, backbone=tiny_backbone, progress=False, epochs=6,
                          learning_rate=1e-3)
    assert fn.manifest.options["loss"] == "cosine"
    assert list(fn.manifest.options["score_range"]) == [0.0, 5.0]
    assert fn.evaluate(rows)["spearman"] > before


def test_retrieval_metrics_count_duplicate_documents() -> None:
    gold = [{0, 1}, {0, 1}, {2}]  # two copies of one document: either is a hit
    scores = np.array([[0.9, 0.9, 0.1], [0.8, 0.9, 0.1], [0.1, 0.4, 0.3]])
    assert retrieval_metrics(scores, gold) == {"accuracy_at_1": 2 / 3,
                                               "mrr_at_10": (1 + 1 + 1 / 2) / 3}


def test_pair_errors_name_rows(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("text_a,text_b,score\na,b,1\nc,,2\n", "utf-8")
    with pytest.raises(DataError, match=r"pairs.csv, line 3, field 'text_b'.*empty"):
        read_pairs(str(path))
    path.write_text("text_a,text_b,score\na,b,1\nc,d,lots\n", "utf-8")
    with pytest.raises(DataError, match=r"line 3, field 'score': expected a number"):
        read_pairs(str(path))
    path.write_text("text_a,text_b,score\na,b,1\nc,d,\n", "utf-8")
    with pytest.raises(DataError, match=r"line 3, field 'score': missing while other rows"):
        read_pairs(str(path))
    with pytest.raises(DataError, match="same score"):
        funcformer.train("embed", [("a", "b", 1), ("c", "d", 1)], progress=False)


def test_method_and_tiny_data_errors(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match="embed trains with method 'full'"):
        funcformer.train("embed", paraphrases(), backbone=tiny_backbone,
                         config=funcformer.TrainConfig(method="head"))
    with pytest.raises(DataError, match="at least two pairs per batch"):
        funcformer.train("embed", [("a b", "b a")], backbone=tiny_backbone, progress=False)
    # the fix said "give more pairs" to someone with 24 pairs and batch_size 1
    with pytest.raises(DataError, match=r"there are 24 pair\(s\) in batches of 1\. Fix: give "
                                        r"more pairs, or a batch_size of 2 or more"):
        funcformer.train("embed", paraphrases(), backbone=tiny_backbone, batch_size=1,
                         progress=False)
    with pytest.raises(TaskError, match="normalize must be true or false, got 'maybe'"):
        funcformer.train("embed", paraphrases(), backbone=tiny_backbone, normalize="maybe")
    with pytest.raises(DataError, match="Got NoneType: encode takes a text or a list"):
        from_backbone(tiny_backbone).encode(None)  # was a TypeError
    with pytest.raises(DataError, match="Got bytes: encode takes a text or a list"):
        from_backbone(tiny_backbone).encode(b"ab")  # was split into integers


def test_tune_encoder_leaves_the_shared_backbone_alone(tiny_backbone: Path) -> None:
    from funcformer import _backbone as bb

    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    config = funcformer.TrainConfig(method="full", epochs=1, learning_rate=1e-3).resolved()
    a, b = zip(*paraphrases(8), strict=True)
    encoder, _, _ = tune_encoder(shared, a, b, None, config, None, progress=False)
    assert all(torch.equal(before[k], v) for k, v in shared.model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_cli_train_predict_eval(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    from conftest import run_cli as cli

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text_a": a, "text_b": b}) + "\n"
                            for a, b in paraphrases()), "utf-8")
    out = tmp_path / "emb"
    assert cli("train", "embed", data, "--out", out, "--backbone", tiny_backbone,
              "--epochs", "1") == 0
    capsys.readouterr()
    assert cli("predict", out, "the food was great") == 0
    assert len(json.loads(capsys.readouterr().out)["vector"]) == 32
    assert cli("eval", out, data) == 0 and "mrr at 10" in capsys.readouterr().out


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_lora_saves_only_an_adapter_and_reloads(tiny_backbone: Path, tmp_path: Path) -> None:
    from funcformer import _backbone as bb
    from funcformer import _lora

    pairs = paraphrases()
    fn = funcformer.train("embed", pairs, backbone=tiny_backbone, method=funcformer.LoRA(r=4),
                          epochs=2, learning_rate=1e-2, batch_size=8, progress=False)
    assert fn.manifest.method == "lora" and fn.manifest.adapter["r"] == 4
    assert not fn.manifest.backbone.included and _lora.is_view(fn.encoder)
    texts = [a for a, _ in pairs[:5]]
    expected = fn.encode(texts)
    assert not np.allclose(expected, from_backbone(tiny_backbone).encode(texts), atol=1e-3)
    path = fn.save(tmp_path / "emb")
    assert _files(path) == {"funcformer.json", "adapter/adapter_config.json",
                            "adapter/adapter_model.safetensors"}
    loaded = funcformer.load(path, backbone=tiny_backbone)
    assert loaded.digest == fn.digest
    assert np.allclose(loaded.encode(texts), expected, atol=1e-5)
    shared = bb.load(tiny_backbone).model
    pointers = {p.data_ptr() for p in shared.parameters()}
    base = [p for n, p in loaded.encoder.named_parameters() if "lora_" not in n]
    assert base and {p.data_ptr() for p in base} <= pointers  # no copy of the backbone
    merged = funcformer.load(path, backbone=tiny_backbone, merge_adapter=True)
    assert not _lora.is_view(merged.encoder)
    assert np.allclose(merged.encode(texts), expected, atol=1e-4)


def test_auto_and_wrong_methods(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    from funcformer._methods import FEW_EXAMPLES, choose_tuning

    fn = funcformer.train("embed", paraphrases(), backbone=tiny_backbone, method="auto",
                          epochs=1, progress=True)
    assert fn.manifest.method == "full"
    assert "24 examples" in fn.manifest.training["method_reason"]
    assert "method auto -> full" in capsys.readouterr().err
    alone = funcformer.train("embed", paraphrases(), backbone=tiny_backbone, method="auto",
                             lora={"r": 2}, epochs=1, progress=False)  # settings mean lora
    assert alone.manifest.method == "lora" and alone.manifest.adapter["r"] == 2
    assert choose_tuning(None, "full", 10) == ("full", None)
    assert choose_tuning("lora", "full", 10) == ("lora", None)
    assert choose_tuning("auto", "full", FEW_EXAMPLES)[0] == "lora"
    assert choose_tuning("auto", "full", 10**6)[0] == "lora"
    assert choose_tuning("auto", "full", 10**6, device="cuda")[0] == "full"
    for method in ("head", "contrastive"):
        with pytest.raises(TaskError, match=r"'full' \(the default\), 'lora' or 'auto', not"):
            funcformer.train("embed", paraphrases(), backbone=tiny_backbone, method=method)
    with pytest.raises(TaskError, match="merge_adapter applies to LoRA"):
        funcformer.load(fn.save(tmp_path / "full"), merge_adapter=True)
