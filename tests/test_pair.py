"""The pair task: data formats and errors, calling and ranking, training (graded and binary,
full and head), and artifacts on the tiny random-init backbone."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import ArtifactError, DataError, TaskError
from funcformer import _backbone as bb
from funcformer._tasks._pairs import Columns, Scale, metrics, read_pairs
from funcformer._tasks.pair import CrossEncoder, PairFunction, PairScore, Ranked

COLUMNS = Columns()


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """Graded toy pairs on a 0-5 scale: the more of the two texts are positive, the higher
    (a score a tiny random model learns in a few steps)."""
    from conftest import NEGATIVE, NOUNS, POSITIVE

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good = [rng.random() < 0.5, rng.random() < 0.5]
        a, b = (f"the {rng.choice(NOUNS)} was {rng.choice(POSITIVE if g else NEGATIVE)}"
                for g in good)
        rows.append((a, b, [0.0, 2.0, 5.0][sum(good)] + rng.choice([0.0, 0.5])))
    return rows


def binary(rows: list[tuple[str, str, float]]) -> list[dict[str, str]]:
    return [{"text_a": a, "text_b": b, "label": "match" if s >= 2 else "other"}
            for a, b, s in rows]


@pytest.fixture(scope="module")
def fns(tiny_backbone: Path) -> dict[str, funcformer.Function]:
    """A full and a head function trained on graded toy pairs, checked on held-apart pairs."""
    out = {}
    for method, lr in (("full", 1e-3), ("head", 5e-2)):
        out[method] = funcformer.train("pair", make_pairs(48), eval_data=make_pairs(30, seed=1),
                                       backbone=tiny_backbone, method=method, epochs=4,
                                       learning_rate=lr, patience=4, progress=False)
    return out


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_data_formats(tmp_path: Path) -> None:
    csv = _write(tmp_path / "pairs.csv", "text_a,text_b,score\na cat,a kitten,4.5\na,b,1\n")
    tsv = _write(tmp_path / "pairs.tsv", 'text_a\ttext_b\tscore\n"a cat\ta kitten\t4.5\na\tb\t1\n')
    jsonl = _write(tmp_path / "pairs.jsonl", '{"text_a": "a cat", "text_b": "a kitten", '
                   '"score": 4.5}\n{"text_a": "a", "text_b": "b", "score": "1"}\n')
    for data in (csv, jsonl, [("a cat", "a kitten", 4.5), ("a", "b", 1)],
                 [{"text_a": "a cat", "text_b": "a kitten", "score": 4.5},
                  {"text_a": "a", "text_b": "b", "score": 1}]):
        pairs = read_pairs(data, COLUMNS)
        assert (pairs.a, pairs.b, pairs.scores) == (["a cat", "a"], ["a kitten", "b"], [4.5, 1])
    assert read_pairs(tsv, COLUMNS).a == ['"a cat', "a"]  # TSV: no quoting, as in STS-B
    renamed = read_pairs([{"q": "x", "d": "y", "sim": 2}], Columns(text_a="q", text_b="d",
                                                                     score="sim"))
    assert (renamed.a, renamed.b, renamed.scores) == (["x"], ["y"], [2.0])


def test_scales_graded_and_binary() -> None:
    graded = Scale.fit(read_pairs([("a", "b", 1.0), ("c", "d", 5.0), ("e", "f", 2.0)], COLUMNS))
    assert (graded.low, graded.high, graded.graded) == (1.0, 5.0, True)
    assert graded.targets(read_pairs([("a", "b", 3.0), ("c", "d", 9.0)], COLUMNS)).tolist() \
        == [0.5, 1.0]  # eval scores past the training range are clipped
    labelled = read_pairs([("a", "b", None, "no"), ("c", "d", None, "yes")], COLUMNS)
    assert Scale.fit(labelled).labels == ("no", "yes")  # positive: the later in sorted order
    assert Scale.fit(labelled, positive="no").labels == ("yes", "no")
    assert Scale.fit(labelled, positive="no").targets(labelled).tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match="scores binary pairs, so the data needs labels"):
        Scale.fit(labelled).targets(read_pairs([("a", "b", 0.0)], COLUMNS))
    ints = read_pairs([{"text_a": "a", "text_b": "b", "label": 1},
                       {"text_a": "c", "text_b": "d", "label": 0.0}], COLUMNS)
    assert ints.labels == ["1", "0"]


@pytest.mark.parametrize(("text", "message"), [
    ("text_a,text_b,score\na,b,1\nc,,2\n", r"pairs.csv, line 3, field 'text_b'.*empty"),
    ("text_a,text_b,score\na,b,1\nc,d,high\n", r"pairs.csv, line 3, field 'score'.*number"),
    ("text_a,text_b\na,b\n", r"pairs.csv, line 2: neither field 'score' nor 'label'"),
    ("text_a,text_b,label\na,b,x\nc,d,y\ne,f,z\n", r"exactly two values, found 3"),
    ("text_a,text_b,score\na,b,3\nc,d,3\n", r"every pair has the score 3"),
    ("text_b,score\na,1\n", r"line 1: no column 'text_a'"),
])
def test_bad_training_data_names_file_line_and_field(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = _write(tmp_path / "pairs.csv", text)
    with pytest.raises(DataError, match=message):
        Scale.fit(read_pairs(path, COLUMNS))


def test_a_null_score_is_no_value() -> None:
    # it said the field 'score' was not present, though it was (null)
    with pytest.raises(DataError, match=r"<list>, index 0: neither field 'score' nor 'label' "
                                        r"has a value \(absent or null\)"):
        read_pairs([{"text_a": "a", "text_b": "b", "score": None}], COLUMNS)


def test_bad_python_data(tiny_backbone: Path) -> None:
    with pytest.raises(DataError, match=r"<list>, index 1, field 'text_a'.*empty"):
        read_pairs([("a", "b", 1.0), ("  ", "b", 2.0)], COLUMNS)
    with pytest.raises(DataError, match=r"<list>, index 0: neither"):
        read_pairs([("a", "b")], COLUMNS)
    with pytest.raises(DataError, match=r"<list>, index 1: field 'score' is missing"):
        read_pairs([("a", "b", 1.0), {"text_a": "c", "text_b": "d", "label": "x"}], COLUMNS)
    labelled = [("a", "b", None, "match"), ("c", "d", None, "other")] * 5
    with pytest.raises(DataError, match="positive='maybe' is not one of the labels"):
        funcformer.train("pair", labelled, backbone=tiny_backbone, positive="maybe",
                         progress=False)
    with pytest.raises(DataError, match=r"<list>, index 1: unknown label 'perhaps'"):
        funcformer.train("pair", labelled, backbone=tiny_backbone, progress=False,
                         eval_data=[("a", "b", None, "match"), ("c", "d", None, "perhaps")])


def test_bad_methods_and_options(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match=r"'full' \(the default\), 'lora', 'head' or 'auto', "
                                        r"not 'contrastive' \(contrastive tunes a classifier"):
        funcformer.train("pair", make_pairs(10), backbone=tiny_backbone, method="contrastive")
    with pytest.raises(TaskError, match="no informed start"):
        funcformer.train("pair", make_pairs(10), backbone=tiny_backbone, init="zero_shot")
    with pytest.raises(TaskError, match="Unknown training option"):
        funcformer.train("pair", make_pairs(10), backbone=tiny_backbone, text_c_column="x")
    # it trained on pairs of each text_b with itself
    with pytest.raises(DataError, match=r"The fields 'text_a' and 'text_b' are read from the "
                                        r"same column 'text_b'\. Fix: name a column for each"):
        funcformer.train("pair", make_pairs(10), backbone=tiny_backbone, text_a_column="text_b")


def test_full_is_the_default_with_its_own_learning_rate(fns: dict, tiny_backbone: Path) -> None:
    from funcformer._tasks import pair

    fn = pair.train(make_pairs(12), backbone=tiny_backbone, epochs=1, progress=False)
    assert fn.manifest.method == "full"
    assert fn.manifest.config["learning_rate"] == pair.FULL_LEARNING_RATE
    assert fns["full"].manifest.config["learning_rate"] == 1e-3  # an explicit rate wins


def test_is_single_and_read_inputs(fns: dict, tmp_path: Path) -> None:
    fn = fns["head"]
    assert fn.is_single(("a query", "an item"))
    assert not fn.is_single([("a", "b")]) and not fn.is_single(("a", "b", "c"))
    assert not fn.is_single(["a", "b"]) and not fn.is_single("a")
    path = _write(tmp_path / "in.csv", "text_a,text_b,score\nq1,d1,3\nq2,d2,4\n")
    assert fn.read_inputs(path) == [("q1", "d1"), ("q2", "d2")]
    assert fn.read_inputs([{"text_a": "q", "text_b": "d"}, ("x", "y")]) == [("q", "d"),
                                                                             ("x", "y")]
    # it said field 'text_b' is missing, with text_b_column= as the fix
    with pytest.raises(DataError, match=r"<list>, index 1: one text, where a pair function "
                                        r"takes two: .* separated by a tab"):
        fn.read_inputs(["a\tb", "only one text"])
    assert fn.read_inputs(["a\tb"]) == [("a", "b")]


def test_a_renamed_column_missing_names_its_own_option(tmp_path: Path) -> None:
    # the fix said "pass --text-column" (a file) or "--set zzz_column=..." (a row)
    path = _write(tmp_path / "p.csv", "text_a,text_b,score\nq1,d1,3\n")
    with pytest.raises(DataError, match=r"p\.csv, line 1: no column 'zzz' in the header .* "
                                        r"pass --set text_a_column=\.\.\. / text_a_column="):
        read_pairs(path, Columns(text_a="zzz"))
    rows = _write(tmp_path / "p.jsonl", '{"q": "a", "score": 1}\n')
    with pytest.raises(DataError, match=r"line 1: field 'd' is missing\. Fix: add it, or name "
                                        r"the field with --set text_b_column=\.\.\."):
        read_pairs(rows, Columns(text_a="q", text_b="d"))


def test_call_shapes_and_order(fns: dict) -> None:
    fn = fns["full"]
    pairs = [(a, b) for a, b, _ in make_pairs(9, seed=4)] + [("the food", "the food " * 12)]
    one = fn(pairs[0])
    assert isinstance(one, PairScore) and 0.0 <= one.score <= 1.0
    assert one.to_dict() == {"score": one.score}
    many = fn(pairs)
    assert len(many) == len(pairs) and all(isinstance(s, PairScore) for s in many)
    singles = torch.tensor([fn(p).score for p in pairs])  # batches sorted by length: order kept
    torch.testing.assert_close(torch.tensor([s.score for s in many]), singles, rtol=0, atol=1e-5)
    assert fn.result_from_dict(one.to_dict()) == one
    assert fn({"text_a": pairs[0][0], "text_b": pairs[0][1]}) == one  # a dict is one pair


def test_rank_orders_by_score(fns: dict) -> None:
    fn = fns["full"]
    items = ["the room was dirty", "the staff was lovely", "the food was great",
             "the app was slow"]
    ranked = fn.rank("the food was excellent", items)
    assert [type(r) for r in ranked] == [Ranked] * 4
    assert sorted(r.index for r in ranked) == [0, 1, 2, 3]
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    for r in ranked:
        assert r.item == items[r.index]
        assert r.score == pytest.approx(fn(("the food was excellent", r.item)).score, abs=1e-5)
    assert fn.rank("the food was excellent", items, top_k=2) == ranked[:2]
    assert fn.rank("q", []) == []
    for top_k in (-1, 0, "1"):  # -1 silently dropped the last item, '1' was a TypeError
        with pytest.raises(TaskError, match="top_k must be a whole number of at least 1"):
            fn.rank("q", items, top_k=top_k)
    for score in ("x", float("nan"), 1.5):  # NaN and 1.5 were mapped off the scale
        with pytest.raises(TaskError, match="rescale takes a score"):
            fn.rescale(score)
    with pytest.raises(DataError, match="rank takes items to score"):  # was a TypeError
        fn.rank("q", None)


def test_full_learns_graded_pairs(fns: dict, tiny_backbone: Path) -> None:
    fn = fns["full"]
    assert fn.manifest.options["kind"] == "graded"
    assert fn.manifest.options["score_range"] == [0.0, 5.5]
    assert fn.manifest.training["eval_source"] == "given"
    assert set(fn.metrics) == {"spearman", "pearson", "examples"}
    assert fn.metrics["spearman"] > 0.5, fn.manifest.training["history"]
    assert fn.evaluate(make_pairs(30, seed=1)) == fn.metrics
    assert fn.rescale(0.5) == 2.75
    shared = bb.load(tiny_backbone).model
    assert fn.model.encoder is not shared  # a private copy trained; the shared one untouched
    assert any(not torch.equal(v, shared.state_dict()[k])
               for k, v in fn.model.encoder.state_dict().items())


def test_head_trains_only_the_linear_layer(fns: dict, tiny_backbone: Path) -> None:
    fn = fns["head"]
    assert fn.model.encoder is bb.load(tiny_backbone).model
    assert fn.manifest.method == "head" and not fn.manifest.backbone.included
    history = fn.manifest.training["history"]
    assert history["epochs"][-1]["loss"] < history["epochs"][0]["loss"]


def test_binary_labels_train_and_evaluate(tiny_backbone: Path) -> None:
    gold = binary(make_pairs(20, seed=1))
    fn = funcformer.train("pair", binary(make_pairs(40)), eval_data=gold, method="full",
                          backbone=tiny_backbone, epochs=4, learning_rate=3e-3, batch_size=8,
                          patience=4, progress=False)
    assert fn.labels == ["match", "other"]
    assert fn.manifest.options["positive"] == "other"  # the later in sorted order
    assert set(fn.metrics) == {"accuracy", "roc_auc", "examples"}
    assert fn.metrics["roc_auc"] > 0.7 and fn.metrics["accuracy"] > 0.6, fn.metrics
    scores = fn([(row["text_a"], row["text_b"]) for row in gold])
    mean = {y: sum(s.score for s, row in zip(scores, gold, strict=True) if row["label"] == y)
            / sum(row["label"] == y for row in gold) for y in ("match", "other")}
    assert mean["other"] > mean["match"]  # the score is the probability of the positive label


def test_without_eval_data_part_is_held_out(tiny_backbone: Path) -> None:
    fn = funcformer.train("pair", make_pairs(200), backbone=tiny_backbone, method="head",
                          epochs=2, progress=False)
    assert fn.manifest.training["eval_source"] == "held out 20"
    assert fn.manifest.training["examples"] == 180
    assert set(fn.metrics) == {"held_out_spearman", "held_out_pearson", "held_out_examples"}
    few = funcformer.train("pair", make_pairs(30), backbone=tiny_backbone, method="head",
                           epochs=1, progress=False)
    assert few.manifest.training["eval_source"] == "none" and few.metrics == {}


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("method", ["full", "head"])
def test_save_load_round_trip(fns: dict, method: str, tmp_path: Path,
                              tiny_backbone: Path) -> None:
    fn = fns[method]
    out = fn.save(tmp_path / "fn")
    expected = {"funcformer.json", "head.safetensors"}
    if method == "full":
        expected |= {"encoder/config.json", "encoder/model.safetensors",
                     "encoder/tokenizer.json", "encoder/tokenizer_config.json"}
    assert _files(out) == expected
    manifest = json.loads((out / "funcformer.json").read_text())
    assert manifest["task"] == "pair" and manifest["head"]["outputs"] == 1
    assert manifest["backbone"]["included"] == (method == "full")
    loaded = funcformer.load(out)
    pairs = [(a, b) for a, b, _ in make_pairs(8, seed=5)]
    assert [s.score for s in loaded(pairs)] == [s.score for s in fn(pairs)]
    assert loaded.digest == fn.digest and loaded.manifest.options == fn.manifest.options
    assert loaded.evaluate(make_pairs(30, seed=1)) == fn.metrics


def test_lora_trains_an_adapter_and_saves_only_it(tiny_backbone: Path, tmp_path: Path,
                                                  capsys) -> None:
    from funcformer import _lora

    fn = funcformer.train("pair", make_pairs(24), backbone=tiny_backbone,
                          method=funcformer.LoRA(r=4, feed_forward=True), epochs=2,
                          learning_rate=1e-2, progress=False)
    assert fn.manifest.method == "lora" and not fn.manifest.backbone.included
    assert any("intermediate" in t for t in fn.manifest.adapter["targets"])
    shared = bb.load(tiny_backbone)
    pointers = {p.data_ptr() for p in shared.model.parameters()}
    assert {p.data_ptr() for n, p in fn.model.encoder.named_parameters() if "lora_" not in n} \
        <= pointers
    out = fn.save(tmp_path / "lora")
    assert _files(out) == {"funcformer.json", "head.safetensors", "adapter/adapter_config.json",
                           "adapter/adapter_model.safetensors"}
    pairs = [(a, b) for a, b, _ in make_pairs(8, seed=5)]
    expected = torch.tensor([s.score for s in fn(pairs)])
    loaded = funcformer.load(out, backbone=tiny_backbone)
    assert loaded.digest == fn.digest and _lora.is_view(loaded.model.encoder)
    assert torch.allclose(torch.tensor([s.score for s in loaded(pairs)]), expected, atol=1e-6)
    merged = funcformer.load(out, backbone=tiny_backbone, merge_adapter=True)
    assert not _lora.is_view(merged.model.encoder)
    assert torch.allclose(torch.tensor([s.score for s in merged(pairs)]), expected, atol=1e-5)
    plain = PairFunction(backbone=shared, manifest=fn.manifest,
                         model=CrossEncoder(shared.model, fn.model.head, fn.model.pooling))
    assert not torch.allclose(torch.tensor([s.score for s in plain(pairs)]), expected,
                              atol=1e-4)  # the adapter changed what the encoder computes
    auto = funcformer.train("pair", make_pairs(12), backbone=tiny_backbone, method="auto",
                            epochs=1, progress=True)
    assert auto.manifest.method == "full" and "method auto -> full" in capsys.readouterr().err
    assert auto.manifest.config["learning_rate"] == 1e-4


def test_damaged_artifacts_are_artifact_errors(fns: dict, tmp_path: Path) -> None:
    out = fns["head"].save(tmp_path / "fn")
    (out / "head.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="cannot load the head weights"):
        funcformer.load(out)
    manifest = json.loads((out / "funcformer.json").read_text())
    manifest["backbone"]["digest"] = "sha256:" + "0" * 64
    (out / "funcformer.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="weights digest"):
        funcformer.load(out)


def test_engine_runs_pair_functions(fns: dict) -> None:
    engine = funcformer.Engine({"pair": fns["head"]})
    pairs = [("the food was great", "the staff was lovely"), ("the app", "the screen")]
    first = engine.run("pair", pairs)["pair"]
    assert first == fns["head"](pairs)
    assert engine.run("pair", pairs)["pair"] == first  # now from the cache


def test_metrics_graded_and_binary() -> None:
    graded = metrics(torch.tensor([0.1, 0.4, 0.3, 0.9]), torch.tensor([0.0, 0.5, 0.6, 1.0]),
                     graded=True)
    assert graded["spearman"] == pytest.approx(0.8) and graded["examples"] == 4
    assert metrics(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]), True)["spearman"] == 0.0
    flags = metrics(torch.tensor([0.2, 0.7, 0.6]), torch.tensor([0.0, 1.0, 0.0]), graded=False)
    assert flags["accuracy"] == pytest.approx(2 / 3) and flags["roc_auc"] == 1.0
    assert metrics(torch.tensor([0.2]), torch.tensor([1.0]), graded=False)["roc_auc"] is None


def test_cli_train_predict_eval(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "pairs.tsv"
    data.write_text("text_a\ttext_b\tscore\n" + "".join(
        f"the food was {a}\tthe food was {b}\t{5 if a == b else 1}\n"
        for a in ("great", "awful", "cold") for b in ("great", "awful", "cold")), "utf-8")
    out = tmp_path / "pair"

    from conftest import run_cli as cli

    assert cli("train", "pair", data, "--out", out, "--backbone", tiny_backbone, "--epochs",
               "1") == 0
    assert "Trained pair (full)" in capsys.readouterr().out
    assert cli("predict", out, "the food was great\tthe food was cold") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["input"] == ["the food was great", "the food was cold"]
    assert 0 <= line["score"] <= 1
    assert cli("eval", out, data) == 0
    assert "spearman" in capsys.readouterr().out
    assert cli("predict", out, "no tab here") == 1
    lines = tmp_path / "pairs.txt"  # lines of a .txt file split at the tab, as stdin's are
    lines.write_text("the food was great\tthe food was cold\nthe room\tthe hall\n", "utf-8")
    capsys.readouterr()
    assert cli("predict", out, "--input", lines) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == [["the food was great", "the food was cold"],
                                          ["the room", "the hall"]]
    lines.write_text("the room\tthe hall\nno tab here\n", "utf-8")
    assert cli("predict", out, "--input", lines) == 1  # it said field 'text_b' was missing
    assert "pairs.txt, line 2: expected two texts separated by a tab" in capsys.readouterr().err
    lines.write_text("the room\tthe hall\nthe food\t \n", "utf-8")  # named '<list>, index 1'
    assert cli("predict", out, "--input", lines) == 1
    assert "pairs.txt, line 2, field 'text_b': the text is empty" in capsys.readouterr().err
