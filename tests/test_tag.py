"""The tag task (entities with character offsets) on tiny random-init backbones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import funcformer
from funcformer import DataError, TaskError
from funcformer import _backbone as bb
from funcformer._tasks._spans import IGNORE, Coder, chunks, entity_metrics, read_tagged, tag_list
from funcformer._tasks.tag import Entities, Span, Tagger, probabilities


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    """'the <noun> was very <adjective>': the noun is an ITEM, the adjective GOOD or BAD."""
    from conftest import NEGATIVE, NOUNS, POSITIVE

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        noun, adjective = rng.choice(NOUNS), rng.choice(POSITIVE + NEGATIVE)
        kind = "GOOD" if adjective in POSITIVE else "BAD"
        rows.append({"tokens": ["the", noun, "was", "very", adjective],
                     "tags": ["O", "B-ITEM", "O", "O", f"B-{kind}"]})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture(scope="module")
def head_fn(tiny_backbone: Path) -> Tagger:
    return funcformer.train("tag", toy_rows(40), eval_data=toy_rows(20, seed=1),
                            backbone=tiny_backbone, method="head", epochs=10,
                            learning_rate=0.05, batch_size=8, alignment="first", progress=False)


# ------------------------------------------------------------------------- reading data


def test_both_formats_are_detected_per_row(tmp_path: Path) -> None:
    rows = [{"tokens": ["Ann", "met", "Bo", "Li"], "ner_tags": ["B-PER", "O", "B-PER", "I-PER"]},
            {"text": "Paris is in France", "spans": [{"start": 12, "end": 18, "label": "LOC"},
                                                   [0, 5, "LOC"]]},
            {"tokens": ["x"], "tags": ["O"]}]
    for data in (rows, write_jsonl(tmp_path / "ner.jsonl", rows)):
        tagged = read_tagged(data)
        assert tagged.texts == ["Ann met Bo Li", "Paris is in France", "x"]
        assert tagged.spans == [[(0, 3, "PER"), (8, 13, "PER")],
                                [(0, 5, "LOC"), (12, 18, "LOC")], []]
        for text, spans in zip(tagged.texts, tagged.spans, strict=True):
            assert [text[a:b] for a, b, _ in spans] in (["Ann", "Bo Li"], ["Paris", "France"], [])
    assert read_tagged(rows).types() == ["LOC", "PER"]
    assert read_tagged(["just a text"], labelled=False).texts == ["just a text"]


def test_label_column_names_the_tags_field() -> None:
    rows = [{"tokens": ["Ann", "sang"], "labels": ["B-PER", "O"]}]
    assert read_tagged(rows, label_column="labels").spans == [[(0, 3, "PER")]]
    with pytest.raises(DataError, match=r"<list>, index 0: field 'tags' is missing"):
        read_tagged(rows)


@pytest.mark.parametrize(("row", "message"), [
    ({"tokens": ["Ann", "sang"], "tags": ["B-PER"]},
     r"ner\.jsonl, line 2, field 'tags': 1 tags for 2 tokens\. Fix:"),
    ({"tokens": ["Ann", "sang"], "ner_tags": ["S-PER", "O"]},
     r"ner\.jsonl, line 2, field 'ner_tags': tag 1 is 'S-PER', which is not IOB2.*Fix:"),
    ({"tokens": ["Ann", "sang"], "tags": ["PER", "O"]},
     r"ner\.jsonl, line 2, field 'tags': tag 1 is 'PER'.*Fix:"),
    ({"tokens": [], "tags": []},
     r"ner\.jsonl, line 2, field 'tokens': the list is empty\. Fix:"),
    ({"tokens": ["Ann", ""], "tags": ["O", "O"]},
     r"ner\.jsonl, line 2, field 'tokens': token 2 is ''.*Fix:"),
    ({"text": "Ann sang", "spans": [[4, 9, "PER"]]},
     r"ner\.jsonl, line 2, field 'spans': span 1 \[4, 9\) is outside the text \(length 8\).*Fix:"),
    ({"text": "Ann sang", "spans": [[0, 3, "PER"], {"start": 2, "end": 5, "label": "X"}]},
     r"ner\.jsonl, line 2, field 'spans': span 2 \[2, 5, 'X'\] overlaps span 1.*Fix:"),
    # the offsets as written, not trimmed of the spaces at their edges
    ({"text": "Ann sang", "spans": [[0, 4, "PER"], {"start": 2, "end": 8, "label": "X"}]},
     r"span 2 \[2, 8, 'X'\] overlaps span 1 \[0, 4, 'PER'\]\. Fix:"),
    ({"text": "Ann sang", "spans": [[0, "3", "PER"]]},
     r"ner\.jsonl, line 2, field 'spans': span 1 has start 0 and end '3'.*Fix:"),
    ({"text": "Ann sang"}, r"ner\.jsonl, line 2: field 'spans' is missing\. Fix:"),
    ({"text": "Ann sang", "spans": [[3, 4, "PER"]]},
     r"ner\.jsonl, line 2, field 'spans': span 1 \[3, 4\) holds only whitespace.*Fix:"),
    ({"tokens": ["Ann", "\u200b"], "tags": ["O", "B-PER"]},
     r"ner\.jsonl, line 2, field 'tokens': token 2 is '\\u200b', not a word.*Fix:"),
    ({"words": ["Ann"]}, r"ner\.jsonl, line 2: neither 'tokens' nor 'text'.*Fix:"),
])
def test_bad_rows_name_file_line_and_field(tmp_path: Path, row: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "ner.jsonl", [{"tokens": ["ok"], "tags": ["O"]}, row])
    with pytest.raises(DataError, match=message):
        read_tagged(path)


def test_spaces_at_a_spans_edges_are_trimmed() -> None:
    # a gold span of "Paris " never matched the predicted "Paris": eval F1 0 for a right model
    tagged = read_tagged([{"text": "in Paris now", "spans": [[2, 9, "LOC"]]}])
    assert tagged.spans == [[(3, 8, "LOC")]]


def test_python_lists_name_the_index() -> None:
    with pytest.raises(DataError, match=r"<list>, index 1, field 'tags': 3 tags for 2 tokens"):
        read_tagged([{"tokens": ["a"], "tags": ["O"]},
                     {"tokens": ["a", "b"], "tags": ["O", "O", "O"]}])


# ----------------------------------------------------------------- decoding and metrics


def test_iob_decoding_is_lenient() -> None:
    assert chunks(["I-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]) == [
        (0, 2, "PER"), (3, 5, "LOC"), (5, 6, "ORG"), (6, 7, "ORG")]
    assert chunks(["O", "O"]) == []
    assert chunks(["B-X", "B-X", "I-X"]) == [(0, 1, "X"), (1, 3, "X")]


def test_entity_metrics_on_a_hand_computed_example() -> None:
    gold = [[(0, 5, "PER"), (10, 15, "LOC")], [(0, 3, "ORG")]]
    predicted = [[(0, 5, "PER"), (10, 14, "LOC")], [(0, 3, "ORG"), (5, 8, "PER")]]
    m = entity_metrics(gold, predicted)
    # 2 right (PER, ORG) of 4 predicted and 3 gold
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7) and m["examples"] == 2
    assert m["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0,
                                    "f1": pytest.approx(2 / 3), "support": 1}
    assert m["per_type"]["LOC"]["f1"] == 0.0 and m["per_type"]["ORG"]["f1"] == 1.0
    assert entity_metrics([[]], [[]])["f1"] == 0.0


def test_metrics_match_seqeval_on_its_documented_example() -> None:
    # seqeval's README: f1_score(y_true, y_pred) == 0.50
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    m = entity_metrics([chunks(t) for t in y_true], [chunks(p) for p in y_pred])
    assert m["f1"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5


# ------------------------------------------------------------ alignment and windows


def test_first_and_all_alignment(tiny_backbone: Path) -> None:
    tokenizer = bb.load(tiny_backbone).tokenizer
    text = "Angela Merkel visited Paris."
    spans = [(0, 13, "PER"), (22, 27, "LOC")]
    tags = tag_list(["LOC", "PER"])
    names = {}
    for alignment in ("first", "all"):
        coder = Coder(tokenizer, tags, limit=64, alignment=alignment)
        encoded = coder.encode([text])
        window = encoded.windows[0]
        assert [text[a:b] for a, b in encoded.ranges[0].values()] == [
            "Angela", "Merkel", "visited", "Paris", "."]
        row = coder.targets(encoded, [spans])[0]
        names[alignment] = [tags[t] if t != IGNORE else None for t in row]
        assert row[0] == row[-1] == IGNORE  # [CLS], [SEP]
        assert window.firsts == [k for k, w in enumerate(window.words)
                                 if w is not None and (k == 0 or window.words[k - 1] != w)]
    firsts = [names["first"][k] for k in encoded.windows[0].firsts]
    assert firsts == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert set(names["first"]) - {None} == {"B-PER", "I-PER", "O", "B-LOC"}
    # 'all': the sub-tokens after a word's first carry I-, never B-
    assert names["all"].count("B-PER") == 1 and names["all"].count("B-LOC") == 1
    assert names["all"].count("I-LOC") == len([w for w in window.words if w == 3]) - 1


def test_offsets_point_into_the_original_string(tiny_backbone: Path) -> None:
    tokenizer = bb.load(tiny_backbone).tokenizer
    text = "  ÉCOLE   Niçoise,\tvisited\nParis!!"  # accents, case, odd whitespace
    coder = Coder(tokenizer, ["O"], limit=64)
    words = [text[a:b] for a, b in coder.encode([text]).ranges[0].values()]
    assert words == ["ÉCOLE", "Niçoise", ",", "visited", "Paris", "!", "!"]


def one_hot(coder: Coder, encoded, spans) -> list[np.ndarray]:
    """Probabilities a perfect model would give: the gold tag on every word's first token."""
    out = []
    for row in coder.targets(encoded, spans):
        probs = np.zeros((len(row), len(coder.tags)), dtype=np.float32)
        for k, t in enumerate(row):
            probs[k, t if t != IGNORE else 0] = 1.0
        out.append(probs)
    return out


def test_long_texts_are_windowed_and_no_entity_is_lost(tiny_backbone: Path) -> None:
    tokenizer = bb.load(tiny_backbone).tokenizer
    words = ["the", "food", "was", "great"] * 30 + ["staff"]
    text = " ".join(words)
    starts = [i for i in range(len(text)) if text.startswith("food", i)]
    spans = [(s, s + 4, "ITEM") for s in starts[::7]] + [(len(text) - 5, len(text), "ITEM")]
    coder = Coder(tokenizer, tag_list(["ITEM"]), limit=16)
    encoded = coder.encode([text])
    assert len(encoded.windows) > 10 and coder.stride == 4
    decoded = coder.decode(encoded, one_hot(coder, encoded, [spans]))[0]
    assert decoded == [(*span, 1.0) for span in spans]


# ---------------------------------------------------------------- training and artifacts


def test_call_shapes_and_results(head_fn: Tagger) -> None:
    one = head_fn("the phone was very awful")
    assert isinstance(one, Entities) and all(isinstance(s, Span) for s in one)
    many = head_fn(["the phone was very awful", "nothing here"])
    assert isinstance(many, list) and len(many) == 2 and all(isinstance(e, Entities) for e in many)
    assert head_fn(["the phone was very awful"])[0] == one
    assert head_fn.result_from_dict(json.loads(json.dumps(one.to_dict()))) == one
    assert head_fn.labels == ["BAD", "GOOD", "ITEM"]
    with pytest.raises(DataError, match="index 0, field 'text': the text is empty"):
        head_fn("  ")


def test_head_learns_and_evaluates(head_fn: Tagger) -> None:
    assert head_fn.metrics["f1"] >= 0.8
    found = head_fn("the phone was very awful")
    assert [(s.text, s.label) for s in found] == [("phone", "ITEM"), ("awful", "BAD")]
    assert found[0].start == 4 and 0 < found[0].score <= 1
    metrics = head_fn.evaluate(toy_rows(10, seed=2))
    assert set(metrics) == {"f1", "precision", "recall", "examples", "per_type"}
    assert metrics["examples"] == 10 and set(metrics["per_type"]) <= {"BAD", "GOOD", "ITEM"}
    assert head_fn.manifest.training["eval_source"] == "given"


def test_evaluate_rejects_an_entity_type_the_function_lacks(head_fn: Tagger) -> None:
    # it was scored as a type the model never predicts: recall 0, no error
    with pytest.raises(DataError, match=r"<list>, index 1: entity type 'PLACE' is not in the "
                                        r"training data \(BAD, GOOD, ITEM\)\. Fix:"):
        head_fn.evaluate([*toy_rows(1), {"text": "in rome", "spans": [[3, 7, "PLACE"]]}])


def test_a_gold_span_over_part_of_a_word_counts_as_the_word(head_fn: Tagger) -> None:
    # training tags the whole word; as eval gold the part never matched a prediction (F1 0)
    rows = toy_rows(12, seed=5)
    whole = [{"text": " ".join(r["tokens"]),
              "spans": [[4, 4 + len(r["tokens"][1]), "ITEM"]]} for r in rows]
    part = [{**w, "spans": [[4, 6, "ITEM"]]} for w in whole]  # "fo" of "food"
    scores = head_fn.evaluate(whole)
    assert scores["f1"] > 0 and head_fn.evaluate(part) == scores


def test_eval_gold_is_what_training_reads() -> None:
    from funcformer._tasks._spans import word_spans

    ranges = {0: (0, 7), 1: (8, 12)}  # "NewYork city"
    # two spans in one word: training tags the word with the first; widening each kept both
    assert word_spans(ranges, [(0, 3, "A"), (3, 7, "B")]) == [(0, 7, "A")]
    # a span ending inside a word and the next starting there: one entity per word run
    assert word_spans(ranges, [(0, 2, "X"), (2, 12, "X")]) == [(0, 7, "X"), (8, 12, "X")]


def test_head_artifact_references_the_backbone(head_fn: Tagger, tmp_path: Path) -> None:
    path = head_fn.save(tmp_path / "tagger")
    assert sorted(p.name for p in path.iterdir()) == ["funcformer.json", "head.safetensors"]
    manifest = json.loads((path / "funcformer.json").read_text("utf-8"))
    assert manifest["task"] == "tag" and manifest["method"] == "head"
    assert manifest["backbone"]["included"] is False
    assert manifest["options"]["scheme"] == "IOB2" and manifest["options"]["alignment"] == "first"
    assert manifest["options"]["tags"] == tag_list(["BAD", "GOOD", "ITEM"])
    loaded = funcformer.load(path)
    texts = ["the phone was very awful", "the room was very lovely and the app was slow"]
    assert loaded(texts) == head_fn(texts)


def test_damaged_artifacts_are_artifact_errors(head_fn: Tagger, tmp_path: Path) -> None:
    path = head_fn.save(tmp_path / "tagger")
    (path / "head.safetensors").write_bytes(b"not weights")
    with pytest.raises(funcformer.ArtifactError, match="cannot load the head weights"):
        funcformer.load(path)
    path = head_fn.save(tmp_path / "tagger")
    manifest = json.loads((path / "funcformer.json").read_text("utf-8"))
    manifest["options"]["tags"] = manifest["options"]["tags"][:-1]
    (path / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(funcformer.ArtifactError, match="tag list does not match its head"):
        funcformer.load(path)


def test_full_trains_saves_and_loads_identically(tiny_backbone: Path, tmp_path: Path) -> None:
    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    rows = toy_rows(12)
    fn = funcformer.train("tag", rows, backbone=tiny_backbone, epochs=2, batch_size=4,
                          progress=False)  # full is tag's default method
    assert fn.manifest.method == "full" and fn.manifest.backbone.included
    assert fn.manifest.config["learning_rate"] == 1e-4
    assert fn.manifest.training["eval_source"] == "none" and fn.manifest.training["windows"] == 12
    for key, value in shared.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(v, before[k]) for k, v in fn.encoder.state_dict().items())
    path = fn.save(tmp_path / "full")
    assert sorted(p.name for p in path.iterdir()) == ["encoder", "funcformer.json",
                                                      "head.safetensors"]
    assert not list(path.rglob("*.bin")) and (path / "encoder" / "model.safetensors").is_file()
    loaded = funcformer.load(path)
    texts = ["the phone was very awful", "the staff was very friendly"]
    assert [e.to_dict() for e in loaded(texts)] == [e.to_dict() for e in fn(texts)]
    probe = loaded.coder.encode(texts)
    a = np.concatenate([p.ravel() for p in fn_probs(fn, probe)])
    b = np.concatenate([p.ravel() for p in fn_probs(loaded, probe)])
    assert np.array_equal(a, b)
    assert funcformer.load(loaded.save(tmp_path / "again"))(texts) == fn(texts)


def fn_probs(fn: Tagger, encoded) -> list[np.ndarray]:
    return probabilities(fn.model, fn.backbone, encoded.windows)


def test_lora_trains_an_adapter_and_saves_only_it(tiny_backbone: Path, tmp_path: Path) -> None:
    from funcformer import _lora

    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    fn = funcformer.train("tag", toy_rows(12), backbone=tiny_backbone, method="lora", epochs=2,
                          batch_size=4, learning_rate=1e-2, progress=False)
    assert fn.manifest.method == "lora" and not fn.manifest.backbone.included
    assert fn.manifest.adapter["targets"] and _lora.is_view(fn.encoder)
    assert all(torch.equal(v, before[k]) for k, v in shared.model.state_dict().items())
    pointers = {p.data_ptr() for p in shared.model.parameters()}
    assert {p.data_ptr() for n, p in fn.encoder.named_parameters() if "lora_" not in n} \
        <= pointers
    path = fn.save(tmp_path / "lora")
    assert {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} == {
        "funcformer.json", "head.safetensors", "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors"}
    loaded = funcformer.load(path, backbone=tiny_backbone)
    assert loaded.digest == fn.digest
    probe = fn.coder.encode(["the phone was very awful", "the staff was very friendly"])
    expected = np.concatenate([p.ravel() for p in fn_probs(fn, probe)])
    plain = Tagger(backbone=shared, head=fn.head, manifest=fn.manifest)
    assert not np.allclose(np.concatenate([p.ravel() for p in fn_probs(plain, probe)]),
                           expected, atol=1e-4)  # the adapter changed the states
    assert np.allclose(np.concatenate([p.ravel() for p in fn_probs(loaded, probe)]), expected,
                       atol=1e-5)
    merged = funcformer.load(path, backbone=tiny_backbone, merge_adapter=True)
    assert not _lora.is_view(merged.encoder)
    assert np.allclose(np.concatenate([p.ravel() for p in fn_probs(merged, probe)]), expected,
                       atol=1e-4)


def test_auto_picks_the_default_for_few_rows(tiny_backbone: Path, capsys) -> None:
    fn = funcformer.train("tag", toy_rows(12), backbone=tiny_backbone, method="auto", epochs=1,
                          batch_size=4, progress=True)
    assert fn.manifest.method == "full" and fn.manifest.config["learning_rate"] == 1e-4
    assert fn.manifest.training["method_reason"].startswith("auto: 12 examples")
    assert "method auto -> full" in capsys.readouterr().err


def test_held_out_eval_and_reproducibility(tiny_backbone: Path) -> None:
    runs = [funcformer.train("tag", toy_rows(100), backbone=tiny_backbone, method="head",
                             epochs=2, eval_fraction=0.2, progress=False, seed=s)
            for s in (3, 3, 4)]
    assert runs[0].manifest.training["eval_source"] == "held out 20"
    assert runs[0].manifest.training["examples"] == 100
    assert runs[0].manifest.config["epochs"] == 2
    assert "held_out_f1" in runs[0].metrics
    assert runs[0].digest == runs[1].digest != runs[2].digest


def test_training_errors(tiny_backbone: Path) -> None:
    with pytest.raises(DataError, match="no entities in the training data"):
        funcformer.train("tag", [{"tokens": ["a"], "tags": ["O"]}], backbone=tiny_backbone)
    with pytest.raises(DataError, match=r"<list>, index 0: entity type 'PLACE' is not in the "
                                        r"training data \(BAD, GOOD, ITEM\)"):
        funcformer.train("tag", toy_rows(5), eval_data=[{"text": "in rome", "spans": [
            [3, 7, "PLACE"]]}], backbone=tiny_backbone)
    with pytest.raises(TaskError, match=r"Unknown alignment 'middle'\. Choose first or all"):
        funcformer.train("tag", toy_rows(5), backbone=tiny_backbone, alignment="middle")
    with pytest.raises(TaskError, match="Unknown training method"):
        funcformer.train("tag", toy_rows(5), backbone=tiny_backbone, method="qlora")
    with pytest.raises(TaskError, match=r"'full' \(the default\), 'lora', 'head' or 'auto', "
                                        "not 'contrastive'"):
        funcformer.train("tag", toy_rows(5), backbone=tiny_backbone, method="contrastive")
    with pytest.raises(TaskError, match="no informed start"):
        funcformer.train("tag", toy_rows(5), backbone=tiny_backbone, init="zero_shot")


def test_all_alignment_and_head_defaults(tiny_backbone: Path) -> None:
    fn = funcformer.train("tag", toy_rows(40), eval_data=toy_rows(20, seed=1),
                          backbone=tiny_backbone, method="head", batch_size=8, progress=False)
    assert fn.manifest.options["alignment"] == "all" and fn.metrics["f1"] > 0.5
    assert fn.manifest.config["epochs"] == 10 and fn.manifest.config["learning_rate"] == 0.05


# ---------------------------------------------------------------------------- Chinese


CHINESE = [("我在中国", [(2, 4, "LOC")]), ("他来中国了", [(2, 4, "LOC")]),
           ("你好 服务", []), ("我们在中国, 他在国中", [(3, 5, "LOC")])]


def test_chinese_alignment_is_per_character(tiny_chinese_backbone: Path) -> None:
    tokenizer = bb.load(tiny_chinese_backbone).tokenizer
    coder = Coder(tokenizer, tag_list(["LOC"]), limit=32)
    text, spans = "我们 在中国。", [(4, 6, "LOC")]
    encoded = coder.encode([text])
    assert [text[a:b] for a, b in encoded.ranges[0].values()] == list("我们在中国。")
    row = coder.targets(encoded, [spans])[0]
    assert [coder.tags[row[k]] for k in encoded.windows[0].firsts] == [
        "O", "O", "O", "B-LOC", "I-LOC", "O"]
    decoded = coder.decode(encoded, one_hot(coder, encoded, [spans]))[0]
    assert [(text[a:b], a, b) for a, b, _, _ in decoded] == [("中国", 4, 6)]


def test_chinese_spans_train_and_map_back_exactly(tiny_chinese_backbone: Path,
                                                  tmp_path: Path) -> None:
    rows = [{"text": t, "spans": [list(s) for s in spans]} for t, spans in CHINESE] * 8
    fn = funcformer.train("tag", rows, backbone=tiny_chinese_backbone, method="head",
                          epochs=15, learning_rate=0.05, batch_size=8, progress=False)
    texts = ["他在中国", "我们在 中国。很好"]
    results = fn(texts)
    assert [[(s.text, s.label) for s in r] for r in results] == [[("中国", "LOC")]] * 2
    for text, result in zip(texts, results, strict=True):
        assert all(text[s.start:s.end] == s.text for s in result)
    assert results[1][0].start == 4
    loaded = funcformer.load(fn.save(tmp_path / "zh"))
    assert loaded(texts) == results


# ----------------------------------------------------------------- real backbone


FIRST = ["Angela", "Barack", "Emma", "Pedro", "Yuki", "Olga", "Kwame", "Marie"]
LAST = ["Merkel", "Obama", "Watson", "Sánchez", "Tanaka", "Petrova", "Mensah", "Curie"]
CITIES = ["Paris", "Berlin", "Tokyo", "Lagos", "Madrid", "Chicago", "Warsaw", "Cairo"]
TEMPLATES = ["{p} visited {c}.", "Yesterday {p} flew to {c} for talks.",
             "{c} welcomed {p} on Monday.", "In {c}, {p} met the press."]


def people_and_places(first: list[str], last: list[str], cities: list[str],
                      seed: int) -> list[dict]:
    rng, rows = random.Random(seed), []
    for template in TEMPLATES * 8:
        person, city = f"{rng.choice(first)} {rng.choice(last)}", rng.choice(cities)
        text = template.format(p=person, c=city)
        spans = sorted([[text.index(person), text.index(person) + len(person), "PER"],
                        [text.index(city), text.index(city) + len(city), "LOC"]])
        rows.append({"text": text, "spans": spans})
    return rows


@pytest.mark.integration
def test_minilm_head_finds_people_and_places() -> None:
    train = people_and_places(FIRST[:6], LAST[:6], CITIES[:6], seed=0)
    unseen = people_and_places(FIRST[6:], LAST[6:], CITIES[6:], seed=1)
    fn = funcformer.train("tag", train, eval_data=unseen[:16], method="head", progress=False)
    text = "Yesterday ANGELA Merkel flew to Paris for talks."
    found = fn(text)
    assert [(s.text, s.label) for s in found] == [("ANGELA Merkel", "PER"), ("Paris", "LOC")]
    assert all(text[s.start:s.end] == s.text for s in found)
    assert fn.evaluate(unseen[16:])["f1"] >= 0.5  # unseen names and cities; measured 0.69


def test_cli_train_predict_eval(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    data = write_jsonl(tmp_path / "tags.jsonl", toy_rows(30))
    out = tmp_path / "ner"

    from conftest import run_cli as cli

    assert cli("train", "tag", data, "--out", out, "--backbone", tiny_backbone, "--epochs",
               "1", "--method", "head") == 0
    assert "Trained tag (head)" in capsys.readouterr().out
    assert cli("predict", out, "the food was very great") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["text"] == "the food was very great" and isinstance(line["spans"], list)
    assert cli("eval", out, data) == 0
    printed = capsys.readouterr().out
    assert "f1" in printed and "ITEM" in printed  # the per-type table
