"""The search task: index, top-k, filters, FAQ answers with a calibrated threshold, training
from (query, id) pairs, add/remove, artifact round trip, ANN backend, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import funcformer
from funcformer import ArtifactError, DataError, TaskError
from funcformer._tasks.search import (
    Answer,
    Document,
    Hits,
    Index,
    Searcher,
    read_documents,
    read_queries,
)

FAQ = [
    {"id": "food", "text": "the food was great", "answer": "Thanks for the food praise.",
     "metadata": {"lang": "en", "topic": "food"}},
    {"id": "room", "text": "the room was dirty", "answer": "Sorry about the room.",
     "metadata": {"lang": "en", "topic": "room"}},
    {"id": "staff", "text": "the staff was rude", "answer": "We will talk to the staff.",
     "metadata": {"lang": "de", "topic": "staff"}},
]


@pytest.fixture(scope="module")
def faq(tiny_backbone: Path) -> Searcher:
    return funcformer.train("search", FAQ, backbone=tiny_backbone)


def test_top_k_is_exact_and_sorted(faq: Searcher) -> None:
    hits = faq("the food was great", k=2)
    assert isinstance(hits, Hits) and len(hits) == 2
    assert hits[0].id == "food" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score >= hits[1].score
    vectors = faq.embedder.encode(["the room was lovely"])
    expected = (vectors @ faq.index.vectors.T)[0]
    got = faq("the room was lovely", k=3)
    assert [h.score for h in got] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
    assert faq(["a", "b"], k=1)[1].hits[0].id in {"food", "room", "staff"}
    assert len(faq("x", k=50)) == 3


def test_metadata_filters(faq: Searcher) -> None:
    assert [h.id for h in faq.search("the food was great", filter={"lang": "de"})] == ["staff"]
    assert {h.id for h in faq.search("x", filter=lambda m: m["topic"] != "staff")} == {
        "food", "room"}
    assert len(faq.search("x", filter={"lang": "fr"})) == 0
    # answers obey the filter too: answer=True ignored it (and k) and answered 'food'
    for answered in (faq("the food was great", answer=True, filter={"lang": "de"}),
                     faq.answer("the food was great", filter={"lang": "de"})):
        assert answered.id in (None, "staff")
    assert faq.answer("x", filter={"lang": "fr"}).answered is False
    with pytest.raises(TaskError, match="k must be a whole number"):
        faq("x", answer=True, k=0)
    # a field no document has matched nothing, silently
    for call in (lambda: faq.search("x", filter={"langue": "en"}),
                 lambda: faq.answer("x", filter={"langue": "en"})):
        with pytest.raises(TaskError, match=r"filter field 'langue' is in no document's "
                                            r"metadata \(fields: lang, topic\)") as caught:
            call()
        assert caught.value.option == "filter"


@pytest.mark.parametrize(("options", "option"), [
    ({"k": 0}, "k"), ({"k": "3"}, "k"), ({"k": True}, "k"), ({"answer": "yes"}, "answer"),
    ({"filter": ["lang"]}, "filter")])
def test_option_errors_name_the_option(faq: Searcher, options: dict, option: str) -> None:
    with pytest.raises(TaskError, match=f"^{option} must") as caught:
        faq("the food was great", **options)
    assert caught.value.option == option  # the server's field: options.<option>


def test_answer_and_no_answer(faq: Searcher) -> None:
    answer = faq.answer("the food was great")
    assert answer == Answer(True, "food", "Thanks for the food praise.", "the food was great",
                            answer.score)
    faq.manifest.options["threshold"] = 1.01
    try:
        assert faq.answer(["the food was great"])[0].answered is False
    finally:
        faq.manifest.options["threshold"] = 0.5


@pytest.mark.parametrize("threshold", ["abc", [1], 1.5])
def test_threshold_must_be_a_cosine(tiny_backbone: Path, threshold: object) -> None:
    # 'abc' was a ValueError from float(), 1.5 an FAQ that never answers
    with pytest.raises(TaskError, match=r"search: threshold must be a cosine similarity from "
                                        r"-1 to 1"):
        funcformer.train("search", FAQ, backbone=tiny_backbone, threshold=threshold)


def test_a_named_id_column_must_be_there(tiny_backbone: Path) -> None:
    docs = [{"id": "a", "text": "the food was great"}, {"id": "b", "text": "the room"}]
    # it was ignored: ids became row numbers and the real ids metadata
    with pytest.raises(DataError, match="<list>, index 0: no id in the field 'nope' "
                                        r"\(id_column\)\. Fix: .* \(fields here: id, text\)"):
        funcformer.train("search", docs, backbone=tiny_backbone, id_column="nope")
    with pytest.raises(DataError, match="field 'id': an id is a text or a number, got \\[2\\]"):
        funcformer.train("search", [{"id": [2], "text": "x"}], backbone=tiny_backbone)


def test_a_missing_text_column_names_the_text_column_option(tiny_backbone: Path) -> None:
    docs = [{"faq_id": "a", "question": "the food was great"}, {"faq_id": "b", "question": "x"}]
    faq = funcformer.train("search", docs, backbone=tiny_backbone, text_column="question",
                           id_column="faq_id")
    # the fix named 'question_column=', which no function takes
    with pytest.raises(DataError, match=r"'question' is missing.*text_column=") as error:
        faq.add([{"faq_id": "c", "text": "the room"}])
    assert "question_column" not in str(error.value)


def test_gold_ids_must_be_documents(faq: Searcher) -> None:
    # calibrating on an unknown id counted every answer wrong and turned answering off
    queries = [{"text": "the food was great", "id": "food"}, {"text": "x", "id": "nope"}]
    for call in (faq.calibrate, faq.evaluate):
        with pytest.raises(DataError, match="<list>, index 1, field 'id': no document has the "
                                            "id 'nope'"):
            call(queries)
    assert faq.threshold == 0.5


def test_calibration_from_queries(tiny_backbone: Path) -> None:
    fn = funcformer.train("search", FAQ, backbone=tiny_backbone)
    queries = [{"text": d["text"], "id": d["id"]} for d in FAQ] + [
        {"text": "delivery app slow", "id": ""}, {"text": "phone screen broken", "id": ""}]
    threshold = fn.calibrate(queries)
    texts, gold = read_queries(queries)
    top = [(h[0].score, h[0].id in g) for h, g in zip(fn(texts, k=1), gold, strict=True)]
    best = max(sum((s >= t) == ok for s, ok in top) for t in [s for s, _ in top] + [1.01])
    assert sum((s >= threshold) == ok for s, ok in top) == best
    assert fn.evaluate(queries)["answer_accuracy"] == pytest.approx(best / len(queries))


def test_add_remove_change_results_and_digest(tiny_backbone: Path, tmp_path: Path) -> None:
    fn = funcformer.train("search", FAQ, backbone=tiny_backbone)
    before = fn.digest
    fn.add([{"id": "wifi", "text": "the app was slow"}])
    assert fn("the app was slow", k=1)[0].id == "wifi" and fn.digest != before
    with pytest.raises(DataError, match="id 'wifi' is already in the index"):
        fn.add([{"id": "wifi", "text": "again"}])
    assert fn.remove(["wifi", "nope"]) == 1 and fn.digest == before
    loaded = funcformer.load(fn.save(tmp_path / "s"))
    loaded.add([{"id": "wifi", "text": "the app was slow"}])
    fn.add([{"id": "wifi", "text": "the app was slow"}])
    assert loaded.digest == fn.digest


def test_documents_without_ids_add_after_the_index(tiny_backbone: Path) -> None:
    # they were numbered from 0 again: "id '0' is already in the index" for any id-less index
    fn = funcformer.train("search", ["the food was great", "the room was dirty"],
                          backbone=tiny_backbone)
    fn.remove("0")
    assert fn.add(["the staff was rude", "the app was slow"]) == 2
    assert [d.id for d in fn.index.documents] == ["1", "2", "3"]
    with pytest.raises(DataError, match="remove takes an id or a list of ids, got NoneType"):
        fn.remove(None)
    with pytest.raises(DataError, match="Got NoneType: answer takes a query or a list"):
        fn.answer(None)


def test_artifact_round_trip(faq: Searcher, tmp_path: Path) -> None:
    out = faq.save(tmp_path / "faq")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "funcformer.json", "index/documents.jsonl", "index/vectors.safetensors"]
    loaded = funcformer.load(out)
    assert isinstance(loaded, Searcher) and loaded.digest == faq.digest
    assert loaded("the room was lovely") == faq("the room was lovely")
    assert loaded.index.documents[0].metadata == {"lang": "en", "topic": "food"}
    (out / "index" / "vectors.safetensors").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="cannot read the index"):
        funcformer.load(out)


def test_documents_from_csv_with_metadata_columns(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("faq_id,question,answer,lang\n1,How do I pay?,By card.,en\n"
                    "2,Where is it?,Here.,de\n", "utf-8")
    docs = read_documents(str(path), id_column="faq_id", text_column="question")
    assert docs[1] == Document("2", "Where is it?", "Here.", {"lang": "de"})
    path.write_text("faq_id,question\n1,a\n1,b\n", "utf-8")
    with pytest.raises(DataError, match=r"faq.csv, line 3, field 'faq_id': duplicate id '1' "
                                        r"\(first at line 2\)"):
        read_documents(str(path), id_column="faq_id", text_column="question")
    assert [d.id for d in read_documents(["a", "b"])] == ["0", "1"]


def test_a_filter_field_added_with_new_documents_is_known(tiny_backbone: Path) -> None:
    fn = funcformer.train("search", [{"text": "the food", "metadata": {"lang": "en"}}],
                          backbone=tiny_backbone)
    with pytest.raises(TaskError, match="filter field 'region'"):
        fn.search("x", filter={"region": "eu"})
    fn.add([{"text": "the room", "metadata": {"region": "eu"}}])  # the field set is redone
    assert [h.text for h in fn.search("x", filter={"region": "eu"})] == ["the room"]
    fn.remove(["1"])
    with pytest.raises(TaskError, match="filter field 'region'"):
        fn.search("x", filter={"region": "eu"})


def test_whole_float_ids_are_integers() -> None:
    # pandas makes an id column with a gap float: 7 -> 7.0, whose id '7.0' no query named
    docs = read_documents([{"id": 7.0, "text": "a"}, {"id": 8, "text": "b"}])
    assert [d.id for d in docs] == ["7", "8"]
    _, gold = read_queries([{"text": "q", "id": 7.0}, {"text": "r", "id": float("nan")}],
                           known={"7", "8"})
    assert gold == [{"7"}, set()]  # NaN was the id 'nan': "no document has the id 'nan'"


def test_blank_ids_and_answers_are_missing() -> None:
    # a blank id was the id '' (no query can name it), a blank answer was answered as '  '
    docs = read_documents([{"id": " ", "text": "a", "answer": "  "}, {"text": "b"}])
    assert [(d.id, d.answer) for d in docs] == [("0", None), ("1", None)]
    with pytest.raises(DataError, match=r"<list>, index 1, field 'id': duplicate id '1' \(the "
                                        r"number given to this document, which has no id\) "
                                        r"\(first at "
                                        r"index 0\)"):
        read_documents([{"id": "1", "text": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match=r"index 0: no id in the field 'faq_id'"):
        read_documents([{"faq_id": " ", "text": "a"}], id_column="faq_id")


def test_training_from_query_pairs_improves_retrieval(tiny_backbone: Path) -> None:
    from conftest import NEGATIVE, NOUNS, POSITIVE

    # Documents share no word with their queries: only training can connect them.
    docs = [{"id": noun, "text": f"very {good} and {bad}"}
            for noun, good, bad in zip(NOUNS, POSITIVE, NEGATIVE, strict=True)]
    queries = [{"text": f"the {noun} was {word}", "id": noun}
               for noun in NOUNS for word in ("not", "is", "the", "very")]
    untrained = funcformer.train("search", docs, backbone=tiny_backbone)
    tuned = funcformer.train("search", docs, pairs=queries, eval_data=queries,
                             backbone=tiny_backbone, progress=False, epochs=6,
                             learning_rate=1e-3, batch_size=16)
    assert tuned.manifest.method == "full" and tuned.manifest.backbone.included
    assert tuned.evaluate(queries)["mrr_at_10"] > untrained.evaluate(queries)["mrr_at_10"]
    with pytest.raises(DataError, match="index 0, field 'id': no document has the id 'nope'"):
        funcformer.train("search", docs, pairs=[{"text": "q", "id": "nope"}],
                         backbone=tiny_backbone, progress=False)
    with pytest.raises(TaskError, match="only used when tuning the encoder"):
        funcformer.train("search", docs, backbone=tiny_backbone, epochs=3)


def test_faiss_backend_agrees_with_exact_search() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [Document(str(i), f"doc {i}", metadata={"even": i % 2 == 0}) for i in range(500)]
    exact, ann = Index(docs, vectors, "exact"), Index(docs, vectors, "faiss")
    queries = vectors[:20] + 0.01
    agree = [e[0][0] == a[0][0] for e, a in zip(exact.search(queries, 5),
                                                  ann.search(queries, 5), strict=True)]
    assert sum(agree) >= 19
    filtered = ann.search(queries[:3], 3, {"even": True})
    assert all(int(docs[i].id) % 2 == 0 for row in filtered for i, _ in row)
    # a filter few documents pass: the 10x over-fetch held none of them, so no hit at all
    rare = [{"rare": i in (7, 300)} for i in range(500)]
    for doc, metadata in zip(docs, rare, strict=True):
        doc.metadata.update(metadata)
    found = ann.search(queries[:3], 1, {"rare": True})
    want = exact.search(queries[:3], 1, {"rare": True})
    assert [[i for i, _ in row] for row in found] == [[i for i, _ in row] for row in want]
    assert [row[0][1] for row in found] == pytest.approx([row[0][1] for row in want], abs=1e-5)


def test_cli_train_predict_answer(tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    from conftest import run_cli as cli

    data = tmp_path / "faq.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in FAQ), "utf-8")
    out = tmp_path / "faq"
    assert cli("train", "search", data, "--out", out, "--backbone", tiny_backbone) == 0
    capsys.readouterr()
    assert cli("predict", out, "the food was great", "--set", "k=1") == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "food"
    assert cli("predict", out, "the food was great", "--set", "answer=true") == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "Thanks for the food praise."
    assert cli("predict", out, "x", "--set", "top=3") == 1
    assert "--set top: not an option of search functions" in capsys.readouterr().err


def test_lora_tuning_saves_index_and_adapter_only(tiny_backbone: Path, tmp_path: Path,
                                                  capsys) -> None:
    from conftest import NOUNS

    from funcformer import _backbone as bb
    from funcformer import _lora

    docs = [{"id": noun, "text": f"all about the {noun}"} for noun in NOUNS]
    queries = [{"text": f"the {noun} was {word}", "id": noun}
               for noun in NOUNS for word in ("not", "very")]
    fn = funcformer.train("search", docs, pairs=queries, backbone=tiny_backbone,
                          method="lora", epochs=2, learning_rate=1e-2, progress=False)
    assert fn.manifest.method == "lora" and fn.manifest.adapter["type"] == "lora"
    assert not fn.manifest.backbone.included and _lora.is_view(fn.embedder.encoder)
    path = fn.save(tmp_path / "faq")
    assert {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} == {
        "funcformer.json", "index/vectors.safetensors", "index/documents.jsonl",
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    texts = [q["text"] for q in queries[:6]]
    expected = fn.embedder.encode(texts)
    loaded = funcformer.load(path, backbone=tiny_backbone)
    assert loaded.digest == fn.digest
    assert np.allclose(loaded.embedder.encode(texts), expected, atol=1e-5)
    assert [h.id for h in loaded(texts[0])] == [h.id for h in fn(texts[0])]
    pointers = {p.data_ptr() for p in bb.load(tiny_backbone).model.parameters()}
    base = [p for n, p in loaded.embedder.encoder.named_parameters() if "lora_" not in n]
    assert {p.data_ptr() for p in base} <= pointers
    merged = funcformer.load(path, backbone=tiny_backbone, merge_adapter=True)
    assert np.allclose(merged.embedder.encode(texts), expected, atol=1e-4)
    auto = funcformer.train("search", docs, pairs=queries, backbone=tiny_backbone,
                            method="auto", epochs=1, progress=True)
    assert auto.manifest.method == "full" and "method auto -> full" in capsys.readouterr().err
    with pytest.raises(TaskError, match=r"'full' \(the default\), 'lora' or 'auto', not "
                                        r"'contrastive'"):
        funcformer.train("search", docs, pairs=queries, backbone=tiny_backbone,
                         method="contrastive")
    with pytest.raises(TaskError, match="method 'lora': only used when tuning"):
        funcformer.train("search", docs, backbone=tiny_backbone, method="lora")


def test_removed_numbers_are_not_given_again(tiny_backbone: Path, tmp_path: Path) -> None:
    # removing the highest numbered document gave its id to the next one added without an id
    fn = funcformer.train("search", ["the food was great", "the room was dirty"],
                          backbone=tiny_backbone)
    assert fn.remove("1") == 1
    fn.add(["the staff was rude"])
    assert [d.id for d in fn.index.documents] == ["0", "2"]
    fn.remove(["2", "0"])
    loaded = funcformer.load(fn.save(tmp_path / "s"))  # kept across a save
    loaded.add(["the app was slow"])
    assert [d.id for d in loaded.index.documents] == ["3"]
