"""Explanations: word re-assembly, Integrated Gradients' completeness, occlusion, the fallback
without captum, rendering, the CLI; on the tiny random-init backbone (a MiniLM sanity check is
marked integration)."""

from __future__ import annotations

import json
import logging
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_reviews, run_cli

import funcformer
from funcformer import DataError, MissingExtra, TaskError
from funcformer import _backbone as bb
from funcformer._backbone import pool
from funcformer._explain import Explanation, Probe, Word, explain, occlusion, tokenize, words

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def head_fn(tiny_backbone: Path) -> funcformer.Function:
    return funcformer.train("classify", make_reviews(), backbone=tiny_backbone, progress=False,
                            epochs=20)


@pytest.fixture(scope="module")
def full_fn(tiny_backbone: Path) -> funcformer.Function:
    return funcformer.train("classify", make_reviews(5), backbone=tiny_backbone, method="full",
                            epochs=2, progress=False)


# ------------------------------------------------------------------------- words


def test_sub_word_tokens_become_words_with_offsets_into_the_original(tiny_backbone: Path) -> None:
    text = "The  FOOD was unbelievably terrible!"
    tokens = tokenize(bb.load(tiny_backbone).tokenizer, (text,), 64)
    pieces = [k for k in tokens.keys if k == (0, 3)]
    assert len(pieces) > 3  # 'unbelievably' is spelt out of ##letters
    assert tokens.keys[0] is None and tokens.keys[-1] is None  # [CLS], [SEP]
    values = {key: float(key[1]) for key in tokens.keys if key is not None}
    found = words(tokens, values)[0]
    assert [(w.word, w.start, w.end) for w in found] == [
        ("The", 0, 3), ("FOOD", 5, 9), ("was", 10, 13), ("unbelievably", 14, 26),
        ("terrible", 27, 35), ("!", 35, 36)]
    assert all(text[w.start:w.end] == w.word for w in found)
    assert [w.attribution for w in found] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_pair_words_point_into_each_text(tiny_backbone: Path) -> None:
    texts = ("cheap  flights", "Low-cost airlines")
    tokens = tokenize(bb.load(tiny_backbone).tokenizer, texts, 64, types=True)
    assert tokens.types is not None and set(tokens.types) == {0, 1}
    a, b = words(tokens, {})
    assert [w.word for w in a] == ["cheap", "flights"]
    assert [w.word for w in b] == ["Low", "-", "cost", "airlines"]
    assert all(texts[1][w.start:w.end] == w.word for w in b)


def test_occlusion_drops_all_of_a_words_tokens(tiny_backbone: Path) -> None:
    """A score counting the tokens kept: dropping a word loses exactly its sub-word tokens."""
    backbone = bb.load(tiny_backbone)
    tokens = tokenize(backbone.tokenizer, ("the food was unbelievably good",), 64)

    def score(batch: dict[str, torch.Tensor], kept: object) -> torch.Tensor:
        return batch["attention_mask"].sum(dim=1).float()

    values = occlusion(Probe(tokens, score, None, backbone, "count"))
    counts = [sum(1 for k in tokens.keys if k == key) for key in sorted(values)]
    assert [values[key] for key in sorted(values)] == counts
    assert counts[3] > 1 and counts[:3] == [1, 1, 1]


# ---------------------------------------------------------------- Integrated Gradients


def _baseline_probability(fn: funcformer.Function, text: str, target: str) -> float:
    """The target's probability for [CLS] [PAD] ... [PAD] [SEP], computed here by hand."""
    tokenizer = fn.backbone.tokenizer
    ids = tokenizer(text)["input_ids"]
    ids = [ids[0]] + [tokenizer.pad_token_id] * (len(ids) - 2) + [ids[-1]]
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids),
                                                                            dtype=torch.long)}
    encoder = fn.encoder if fn.encoder is not None else fn.backbone.model
    with torch.no_grad():
        states = encoder(**batch).last_hidden_state
        probs = torch.softmax(fn.head(pool(states, batch["attention_mask"],
                                           fn.backbone.pooling)), dim=-1)
    return float(probs[0, fn.labels.index(target)])


@pytest.mark.parametrize("which", ["head_fn", "full_fn"])
def test_integrated_gradients_add_up_to_the_score_change(which: str,
                                                         request: pytest.FixtureRequest) -> None:
    fn = request.getfixturevalue(which)
    text = "the staff was friendly but the room was dirty"
    e = explain(fn, text, method="ig", steps=48)
    predicted = fn(text)
    assert e.method == "ig" and e.target == predicted.label
    assert e.score == pytest.approx(predicted.score, abs=1e-5)
    assert e.baseline == pytest.approx(_baseline_probability(fn, text, e.target), abs=1e-5)
    total = sum(w.attribution for w in e.words)
    assert abs(e.score - e.baseline) > 1e-3  # something to attribute
    assert total == pytest.approx(e.score - e.baseline, abs=2e-3, rel=0.02)
    assert [w.word for w in e.words] == text.split()


def test_a_poor_integral_is_reported(head_fn: funcformer.Function,
                                     monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    import funcformer._explain as module

    text = "the staff was friendly but the room was dirty"
    with caplog.at_level(logging.WARNING, logger="funcformer"):
        explain(head_fn, text, method="ig")
    assert "did not converge" not in caplog.text
    monkeypatch.setattr(module, "CONVERGENCE", 1e-7)  # one step misses by more than this
    with caplog.at_level(logging.WARNING, logger="funcformer"):
        explain(head_fn, text, method="ig", steps=1)
    assert "did not converge" in caplog.text and "steps=2" in caplog.text


def test_the_encoder_explained_is_the_functions_own(full_fn: funcformer.Function) -> None:
    """A fine-tuned encoder and the shared backbone give different attributions."""
    text = "the food was great"
    tuned = explain(full_fn, text, target="positive", method="ig")
    shared = funcformer.Function.__new__(type(full_fn))
    shared.__dict__.update(full_fn.__dict__, encoder=None)
    frozen = explain(shared, text, target="positive", method="ig")
    assert tuned.score != pytest.approx(frozen.score, abs=1e-4)
    assert full_fn.encoder is not None


# ------------------------------------------------------------------------ occlusion


def test_occlusion_is_the_score_lost_without_each_word(head_fn: funcformer.Function) -> None:
    text = "the delivery was very slow"
    e = explain(head_fn, text, target="negative", method="occlusion")
    assert e.method == "occlusion" and e.baseline is None
    full = head_fn(text).scores["negative"]
    assert e.score == pytest.approx(full, abs=1e-5)
    parts = text.split()
    for i, word in enumerate(e.words):
        rest = " ".join(parts[:i] + parts[i + 1:])
        assert word.attribution == pytest.approx(full - head_fn(rest).scores["negative"],
                                                 abs=1e-5), word


def test_auto_falls_back_to_occlusion_without_captum(head_fn: funcformer.Function,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert explain(head_fn, "the app was useless").method == "ig"  # captum is installed here
    for name in [m for m in sys.modules if m == "captum" or m.startswith("captum.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "captum", None)  # import captum -> ImportError
    assert explain(head_fn, "the app was useless").method == "occlusion"
    with pytest.raises(MissingExtra, match=r"pip install 'funcformer\[explain\]'"):
        explain(head_fn, "the app was useless", method="ig")


# --------------------------------------------------------------- tasks and targets


def test_multi_label_explains_the_chosen_label(tiny_backbone: Path) -> None:
    from conftest import NEGATIVE, NOUNS, POSITIVE

    rng = random.Random(0)
    rows = []
    for _ in range(60):
        good, noun = rng.random() < 0.5, rng.choice(NOUNS)
        labels = (["positive"] if good else []) + (["food"] if noun == "food" else [])
        rows.append({"text": f"the {noun} was {rng.choice(POSITIVE if good else NEGATIVE)}",
                     "label": labels})
    fn = funcformer.train("classify", rows, backbone=tiny_backbone, progress=False, epochs=5)
    result = fn("the food was great")
    default = explain(fn, "the food was great", method="occlusion")
    assert default.target == max(result.scores, key=result.scores.get)
    for label in fn.labels:
        e = explain(fn, "the food was great", target=label, method="ig")
        assert e.score == pytest.approx(result.scores[label], abs=1e-5)
        total = sum(w.attribution for w in e.words)
        assert total == pytest.approx(e.score - e.baseline, abs=2e-3, rel=0.02)
    with pytest.raises(DataError, match="knows: food, positive"):
        explain(fn, "the food was great", target="refund")


def test_pair_attributions_cover_both_texts(tiny_backbone: Path) -> None:
    from test_pair import binary, make_pairs

    fn = funcformer.train("pair", binary(make_pairs(24)), backbone=tiny_backbone, epochs=1,
                          positive="match", progress=False)
    pair = ("the food was great", "the room was dirty")
    e = fn.explain(pair, method="ig")
    assert e.target == "match" and e.score == pytest.approx(fn(pair).score, abs=1e-5)
    assert [w.word for w in e.words] == pair[0].split()
    assert e.text_b == pair[1] and [w.word for w in e.words_b] == pair[1].split()
    total = sum(w.attribution for w in e.words + e.words_b)
    assert total == pytest.approx(e.score - e.baseline, abs=2e-3, rel=0.02)
    other = fn.explain(pair, target="other", method="occlusion")
    assert other.score == pytest.approx(1 - e.score, abs=1e-5)
    assert "text_b" in e.to_dict() and len(e.to_dict()["words_b"]) == 4
    with pytest.raises(DataError, match="one pair"):
        fn.explain("just one text")


def test_tag_explains_each_entity(tiny_backbone: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    from test_tag import toy_rows

    fn = funcformer.train("tag", toy_rows(40), backbone=tiny_backbone, method="head", epochs=10,
                          learning_rate=0.05, batch_size=8, alignment="first", progress=False)
    text = "the food was very great"
    spans = fn(text).spans
    assert spans  # the toy tagger finds the item and the adjective
    found = fn.explain(text, method="ig")
    assert [(e.span, e.target) for e in found] == [((s.start, s.end), s.label) for s in spans]
    for e, span in zip(found, spans, strict=True):
        assert e.score == pytest.approx(span.score, abs=1e-5)
        total = sum(w.attribution for w in e.words)
        assert total == pytest.approx(e.score - e.baseline, abs=2e-3, rel=0.02)
    only = fn.explain(text, target=spans[0].label, method="occlusion")
    assert {e.target for e in only} == {spans[0].label}
    with pytest.raises(DataError, match="knows"):
        fn.explain(text, target="NOPE")
    long = " ".join([text] * 40)  # entities past the 64-token limit: one line, not one each
    with caplog.at_level(logging.WARNING, logger="funcformer"):
        fn.explain(long, method="occlusion")
    notes = [r.getMessage() for r in caplog.records if "past the token limit" in r.getMessage()]
    assert len(notes) == 1 and "entities lie past the token limit and are not" in notes[0]


def test_unsupported_tasks_and_options_are_task_errors(head_fn: funcformer.Function,
                                                       tiny_backbone: Path) -> None:
    zero = funcformer.train("zero_shot", ["positive", "negative"], backbone=tiny_backbone)
    with pytest.raises(TaskError, match="classify, pair, tag"):
        explain(zero, "the food was great")
    with pytest.raises(TaskError, match="auto, ig, occlusion"):
        explain(head_fn, "x", method="shap")
    with pytest.raises(TaskError, match="steps"):
        explain(head_fn, "x", steps=0)
    with pytest.raises(TaskError, match="from 1 to 1024, got 100000000"):  # was a MemoryError
        explain(head_fn, "x", steps=100_000_000)
    with pytest.raises(DataError, match="empty"):
        explain(head_fn, "   ")


def test_onnx_functions_explain_by_occlusion(head_fn: funcformer.Function,
                                             tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    head_fn.save(tmp_path / "fn")
    head_fn.export_onnx(tmp_path / "fn")
    onnx_fn = funcformer.load(tmp_path / "fn", runtime="onnx")
    e = explain(onnx_fn, "the food was great")
    reference = explain(head_fn, "the food was great", method="occlusion")
    assert e.method == "occlusion"
    assert [w.attribution for w in e.words] == pytest.approx(
        [w.attribution for w in reference.words], abs=1e-4)
    with pytest.raises(TaskError, match="runtime='torch'"):
        explain(onnx_fn, "the food was great", method="ig")


# ---------------------------------------------------------------------- rendering


def _made_up(text: str, values: list[float]) -> Explanation:
    found, at = [], 0
    for piece, value in zip(text.split(), values, strict=True):
        start = text.index(piece, at)
        found.append(Word(piece, start, start + len(piece), value))
        at = start + len(piece)
    return Explanation(text=text, target="neg<1>", score=0.9, words=found, method="occlusion")


def test_html_is_self_contained_and_escaped() -> None:
    e = _made_up('<script>alert("x")</script> & <b>bold</b>', [0.5, -0.2, 0.01])
    page = e.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&amp;" in page and "neg&lt;1&gt;" in page
    assert not re.search(r"(src|href)=|url\(|@import|https?:", page)
    assert "rgba(22, 163, 74, 0.80)" in page  # the largest positive word, strongest green


def test_terminal_colours_by_sign_and_magnitude(monkeypatch: pytest.MonkeyPatch) -> None:
    e = _made_up("the food was terrible", [0.01, 0.2, -0.05, -0.8])
    coloured = e.to_terminal(color=True)
    assert "48;5;196mterrible" in coloured  # strongest red
    assert "48;5;157mfood" in coloured  # a paler green: a quarter of the peak, step 2 of 5
    assert "the \x1b" not in coloured.splitlines()[1][:4]  # 'the' is too small to colour
    assert ANSI.sub("", coloured).splitlines()[1] == e.text
    assert "terrible -0.800" in coloured.splitlines()[-1]
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in e.to_terminal()
    monkeypatch.delenv("NO_COLOR")
    assert "\x1b" in e.to_terminal()


def test_to_dict_is_json(head_fn: funcformer.Function) -> None:
    e = explain(head_fn, "the food was great", method="occlusion")
    data = json.loads(json.dumps(e.to_dict()))
    assert data["words"][1] == {"word": "food", "start": 4, "end": 8,
                                "attribution": e.words[1].attribution}
    assert set(data) == {"text", "target", "score", "method", "words"}


# ---------------------------------------------------------------------------- CLI


def test_cli_explain(head_fn: funcformer.Function, tmp_path: Path, capsys) -> None:
    directory = head_fn.save(tmp_path / "fn")
    page = tmp_path / "out" / "why.html"
    capsys.readouterr()
    assert run_cli("explain", directory, "the food was <great>", "--html", page) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"target '{head_fn('the food was <great>').label}'")
    assert lines[1] == "the food was <great>"  # captured output is not a terminal: no colour
    assert lines[2].startswith("top words: ")
    html = page.read_text("utf-8")
    assert "<great>" not in html and "&gt;</" in html and f"Wrote {page}" in err
    assert run_cli("explain", directory, "the food was great", "--json",
                   "--method", "occlusion", "--target", "negative") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "occlusion" and data["target"] == "negative"


def test_cli_explain_errors(head_fn: funcformer.Function, tmp_path: Path, capsys) -> None:
    directory = head_fn.save(tmp_path / "fn")
    for args, message in ((["the food", "--method", "lime"], "Unknown explanation method"),
                          (["the", "food"], "explain takes one text"),
                          (["the food", "--target", "meh"], "Unknown target 'meh'"),
                          # it said "<list>, index 0" of a command-line argument
                          (["   "], "error: argument 1, field 'text'")):
        capsys.readouterr()
        assert run_cli("explain", directory, *args) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    # --html is checked before the work: it wrote over the function's own manifest, and a
    # directory failed after the explanation was printed ("Is a directory (.fn.tmp-...)")
    manifest = (directory / "funcformer.json").read_bytes()
    for page, message in ((directory / "funcformer.json", "inside the function"),
                          (directory / "why.html", "inside the function"),
                          (tmp_path, "is a directory")):
        capsys.readouterr()
        assert run_cli("explain", directory, "the food", "--html", page) == 1
        out, err = capsys.readouterr()
        assert err.startswith("error: --html ") and message in err and not out
    assert f"--html {tmp_path / 'why.html'}" in err  # the fix names a page, not results.jsonl
    assert (directory / "funcformer.json").read_bytes() == manifest
    assert not (directory / "why.html").exists()
    assert run_cli("explain", "--help") == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--target", "--method", "--html", "--json"))


# -------------------------------------------------------------------- integration


def sentiment_rows() -> list[tuple[str, str]]:
    """Hand-written review sentences from templates; 'terrible' and 'wonderful' are left out,
    so the sanity check sees words the training data never used."""
    subjects = ["The food", "The service", "The room", "The waiter", "The hotel", "The movie",
                "The pasta", "The delivery", "The price", "The music", "Our guide", "The app"]
    good = ["great", "excellent", "lovely", "fantastic", "delicious", "superb", "friendly",
            "amazing", "perfect", "pleasant"]
    bad = ["awful", "horrible", "bad", "disappointing", "rude", "dreadful", "poor",
           "disgusting", "boring", "useless"]
    verbs = ["was", "is", "was really", "seemed"]
    rng = random.Random(1)
    rows = []
    for _ in range(80):
        subject, verb = rng.choice(subjects), rng.choice(verbs)
        rows.append((f"{subject} {verb} {rng.choice(good)}.", "positive"))
        rows.append((f"{subject} {verb} {rng.choice(bad)}.", "negative"))
    return rows


@pytest.mark.integration
@pytest.mark.parametrize("method", ["head", "full"])
def test_minilm_sentiment_words_carry_the_largest_attribution(method: str) -> None:
    fn = funcformer.train("classify", sentiment_rows(), method=method, epochs=1 if method ==
                          "full" else None, progress=False)
    cases = {"The food was terrible": "terrible", "The staff were wonderful": "wonderful",
             "The room was filthy": "filthy", "The service was excellent": "excellent"}
    for text, word in cases.items():
        for how in ("ig", "occlusion"):
            e = fn.explain(text, method=how)
            assert e.target == ("negative" if word in ("terrible", "filthy") else "positive")
            assert e.top(1)[0].word == word, (method, how, e.to_dict())


def test_explain_takes_a_function_directory(head_fn: funcformer.Function,
                                            tmp_path: Path) -> None:
    path = head_fn.save(tmp_path / "fn")  # a path was an AttributeError ('str' ... 'manifest')
    by_path = explain(str(path), "the food was great", method="occlusion")
    assert by_path.top(1) == explain(head_fn, "the food was great", method="occlusion").top(1)
