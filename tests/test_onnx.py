"""ONNX export and the ONNX Runtime runner, checked against the torch model on tiny_backbone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import torch

from funcformer import _backbone, _onnx
from funcformer._errors import MissingExtra
from funcformer._model import FunctionModel, LinearHead

TEXTS = ["great", "the food was excellent", "the staff was rude and the room was very dirty",
         "the phone is slow", "the hotel was lovely, the service was friendly and the "
         "delivery was fast", "not good"]


@pytest.fixture(scope="module")
def backbone(tiny_backbone: Path) -> _backbone.Backbone:
    return _backbone.load(tiny_backbone)


@pytest.fixture(scope="module")
def model(backbone: _backbone.Backbone) -> FunctionModel:
    torch.manual_seed(0)
    head = LinearHead(backbone.hidden_size, 3)
    return FunctionModel(backbone.model, head, backbone.pooling).eval()


@pytest.fixture(scope="module")
def exported(model: FunctionModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    return {"fp32": _onnx.export(model, out / "fp32.onnx"),
            "int8": _onnx.export(model, out / "int8.onnx", int8=True)}


def _batch(backbone: _backbone.Backbone, texts: list[str]) -> dict[str, torch.Tensor]:
    return backbone.pad(backbone.tokenize(texts).input_ids)  # (B, T) right-padded


def _torch(model: FunctionModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch)


def test_fp32_matches_torch_on_padded_batch(backbone, model, exported) -> None:
    batch = _batch(backbone, TEXTS)
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # rows really differ in length
    logits = _onnx.OnnxRunner(exported["fp32"])(**batch)
    assert logits.dtype == torch.float32 and logits.shape == (len(TEXTS), 3)
    assert (logits - _torch(model, batch)).abs().max().item() < 1e-4


def test_the_runner_uses_the_cpu_provider_only(exported, monkeypatch) -> None:
    """With onnxruntime-gpu installed, the CUDA provider was put first: a function loaded with
    device="cpu" (the ONNX runtimes' documented place) ran on the GPU."""
    import onnxruntime

    asked: list[list[str]] = []
    session = onnxruntime.InferenceSession

    def recording(path, options=None, providers=None, **kwargs):
        asked.append(list(providers or []))
        return session(path, options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    _onnx.OnnxRunner(exported["fp32"])
    assert asked == [["CPUExecutionProvider"]]


def test_int8_close_to_torch(backbone, model, exported) -> None:
    # QInt8 weights and run-time quantized activations: with these logits (|x| up to ~1.2)
    # the error measured 0.005-0.01 over 5 head seeds, so 0.1 leaves 10x headroom yet still
    # catches a broken graph (mask ignored, padding pooled), which is off by more than that.
    batch = _batch(backbone, TEXTS)
    expected = _torch(model, batch)
    logits = _onnx.OnnxRunner(exported["int8"])(**batch)
    assert (logits - expected).abs().max().item() < 0.1
    agree = (logits.argmax(1) == expected.argmax(1)).float().mean().item()
    assert agree >= 0.8


def test_optimize_fuses_bert_ops(exported) -> None:
    import onnx

    ops = {node.op_type for node in onnx.load(str(exported["fp32"])).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    quantized = {node.op_type for node in onnx.load(str(exported["int8"])).graph.node}
    assert {"QAttention", "MatMulInteger"} <= quantized


def test_dynamic_axes(backbone, model, exported) -> None:
    runner = _onnx.OnnxRunner(exported["fp32"], threads=1)
    one = _batch(backbone, [TEXTS[1]])  # batch 1, no padding
    assert (runner(**one) - _torch(model, one)).abs().max().item() < 1e-4
    long = _batch(backbone, [" ".join(TEXTS) * 2, "great"])  # far past the 8-token export
    assert long["input_ids"].shape[1] > 40
    assert (runner(**long) - _torch(model, long)).abs().max().item() < 1e-4


def test_unoptimized_export_matches(backbone, model, tmp_path: Path) -> None:
    path = _onnx.export(model, tmp_path / "plain.onnx", optimize=False)
    batch = _batch(backbone, TEXTS)
    logits = _onnx.OnnxRunner(path)(**batch)
    assert (logits - _torch(model, batch)).abs().max().item() < 1e-4


def test_interrupted_export_leaves_nothing(model, tmp_path: Path, monkeypatch) -> None:
    import onnxruntime.quantization

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", fail)
    target = tmp_path / "fn.onnx"
    with pytest.raises(KeyboardInterrupt):
        _onnx.export(model, target, int8=True, optimize=False)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary directory
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        _onnx.export(model, target, int8=True, optimize=False)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("module", ["onnxruntime", "onnxscript", "onnx"])
def test_missing_package_names_the_extra(model, tmp_path: Path, monkeypatch, module) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'funcformer\[onnx\]'"):
        _onnx.export(model, tmp_path / "fn.onnx")
    assert list(tmp_path.iterdir()) == []


def test_runner_without_onnxruntime(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match="'onnxruntime' package"):
        _onnx.OnnxRunner(tmp_path / "fn.onnx")


def test_runner_is_thread_safe(backbone, model, exported) -> None:
    from concurrent.futures import ThreadPoolExecutor

    runner = _onnx.OnnxRunner(exported["fp32"], threads=1)
    batches = [_batch(backbone, TEXTS[i:] or TEXTS) for i in range(len(TEXTS))] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: runner(**b), batches))
    for batch, logits in zip(batches, results, strict=True):
        assert (logits - _torch(model, batch)).abs().max().item() < 1e-4


def test_function_export_and_onnx_runtime_round_trip(tiny_backbone: Path, tmp_path: Path) -> None:
    """export_onnx writes into the artifact; load(runtime=...) serves the same results API."""
    from conftest import make_reviews

    import funcformer

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=2,
                          method="full", progress=False)
    out = fn.save(tmp_path / "fn")
    texts = ["the food was great", "the staff were rude and the room was dirty", "slow"]
    with pytest.raises(funcformer.ArtifactError, match="funcformer export"):
        funcformer.load(out, runtime="onnx")
    loaded = funcformer.load(out)
    loaded.export_onnx(out)
    loaded.export_onnx(out, int8=True)
    onnx_fn = funcformer.load(out, runtime="onnx")
    assert onnx_fn.runtime == "onnx"
    torch.testing.assert_close(onnx_fn.logits(texts), loaded.logits(texts), rtol=0, atol=1e-4)
    assert [p.label for p in onnx_fn(texts)] == [p.label for p in loaded(texts)]
    int8_fn = funcformer.load(out, runtime="onnx-int8")
    assert len(int8_fn(texts)) == 3 and isinstance(int8_fn("slow"), funcformer.Prediction)
    engine = funcformer.Engine({"onnx": onnx_fn, "torch": loaded}, cache=None)
    both = engine.run(["onnx", "torch"], texts)
    assert [p.label for p in both["onnx"]] == [p.label for p in both["torch"]]
    fn.save(out)  # the same version saved again keeps the export made from it
    assert funcformer.load(out, runtime="onnx").runtime == "onnx"
    with pytest.raises(funcformer.TaskError, match="Unknown runtime"):
        funcformer.load(out, runtime="tensorrt")


@pytest.mark.parametrize("link", ["onnx", "onnx/config.json"])
def test_export_refuses_to_write_through_a_link(tiny_backbone: Path, tmp_path: Path,
                                                link: str) -> None:
    """A function folder from someone else may hold onnx/ (or a file in it) as a link to a
    folder or file of yours: the export would overwrite it and make it world-readable."""
    from conftest import make_reviews

    import funcformer

    out = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                           progress=False).save(tmp_path / "fn")
    victim = tmp_path / "victim"
    victim.mkdir()
    secret = victim / "config.json"
    secret.write_text("mine", "utf-8")
    secret.chmod(0o600)
    fn = funcformer.load(out)  # (a folder with such links is refused by load too)
    if link == "onnx":
        (out / "onnx").symlink_to(victim)
    else:
        (out / "onnx").mkdir()
        (out / link).symlink_to(secret)
    # refused when the manifest is read (a link out of the function), or by export itself
    with pytest.raises(funcformer.ArtifactError,
                       match=rf"{link}: a (symbolic link .*rm |link to .*outside the function)"):
        fn.export_onnx(out)
    assert sorted(p.name for p in victim.iterdir()) == ["config.json"]
    assert secret.read_text("utf-8") == "mine" and secret.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("method", ["full", "lora"])
def test_embed_export_and_onnx_runtime_round_trip(tiny_backbone: Path, tmp_path: Path,
                                                  method: str) -> None:
    """An embed function exports its encoder and pooling (no head) like a classifier, and its
    ONNX runtime gives the torch runtime's vectors (normalised after the graph, as on torch)."""
    import numpy as np
    from test_embed_task import paraphrases

    import funcformer
    from funcformer._cache import MemoryCache

    fn = funcformer.train("embed", paraphrases(), backbone=tiny_backbone, method=method,
                          epochs=1, progress=False)
    out = fn.save(tmp_path / "fn")
    with pytest.raises(funcformer.ArtifactError, match="funcformer export"):
        funcformer.load(out, runtime="onnx")
    loaded = funcformer.load(out)
    loaded.export_onnx(out)
    loaded.export_onnx(out, int8=True)
    graph = funcformer.load(out, runtime="onnx", threads=1)
    assert graph.runtime == "onnx" and loaded.runtime == "torch"
    want = loaded.encode(TEXTS)
    np.testing.assert_allclose(graph.encode(TEXTS), want, rtol=0, atol=1e-5)
    assert graph("great").vector == pytest.approx(loaded("great").vector, abs=1e-5)
    assert graph.similarity("great", "not good") == pytest.approx(
        loaded.similarity("great", "not good"), abs=1e-5)
    assert graph.evaluate(paraphrases(8, seed=1)) == pytest.approx(
        loaded.evaluate(paraphrases(8, seed=1)), abs=1e-4)
    int8 = funcformer.load(out, runtime="onnx-int8").encode(TEXTS)
    assert np.sum(int8 * want, axis=1).min() > 0.9  # (a tiny random-init encoder)
    cache = MemoryCache()  # the graph's features are cached, apart per graph
    np.testing.assert_allclose(graph.encode(TEXTS, cache=cache), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(graph.encode(TEXTS, cache=cache), want, rtol=0, atol=1e-5)
    assert len(cache) == len(set(TEXTS))
    np.testing.assert_array_equal(
        funcformer.load(out, runtime="onnx-int8").encode(TEXTS, cache=cache), int8)
    for call in (lambda: graph.save(tmp_path / "copy"), lambda: graph.export_onnx(out)):
        with pytest.raises(funcformer.TaskError, match="runtime='torch'"):
            call()
    assert not (tmp_path / "copy").exists()


def test_search_queries_run_on_the_export(tiny_backbone: Path, tmp_path: Path) -> None:
    """A search function exports its encoder; on ONNX its queries, and documents added later,
    are encoded by the graph: the same hits and scores as on torch."""
    from test_search import FAQ

    import funcformer

    out = funcformer.train("search", FAQ, backbone=tiny_backbone).save(tmp_path / "faq")
    loaded = funcformer.load(out)
    loaded.export_onnx(out)
    graph = funcformer.load(out, runtime="onnx")
    assert graph.runtime == "onnx" and loaded.runtime == "torch"
    queries = ["how do I get my money back", "opening hours", "lost password"]
    for want, got in zip(loaded(queries, k=3), graph(queries, k=3), strict=True):
        assert [h.id for h in got.hits] == [h.id for h in want.hits]
        assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits],
                                                            abs=1e-5)
    new = [{"id": "new", "text": "we ship to every country in Europe"}]
    assert loaded.add(new) == graph.add(new) == 1
    assert graph("do you ship abroad").hits[0].score == pytest.approx(
        loaded("do you ship abroad").hits[0].score, abs=1e-5)
    with pytest.raises(funcformer.TaskError, match="runtime='torch'"):
        graph.save(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_pair_scores_rankings_and_explanations_on_the_export(tiny_backbone: Path,
                                                            tmp_path: Path, method: str) -> None:
    """A pair function exports its cross-encoder with token types as a third input: the
    same scores, rankings and (occlusion) explanations as torch."""
    from conftest import NEGATIVE, NOUNS, POSITIVE

    import funcformer

    words = list(zip(NOUNS, POSITIVE, NEGATIVE, strict=True))
    rows = [(f"the {n} was {p}", f"{n} {p}", 1.0) for n, p, _ in words]
    rows += [(f"the {n} was {q}", f"{n} {p}", 0.0) for n, p, q in words]
    fn = funcformer.train("pair", rows, backbone=tiny_backbone, method=method, epochs=1,
                          progress=False)
    out = fn.save(tmp_path / "pair")
    loaded = funcformer.load(out)
    loaded.export_onnx(out)
    loaded.export_onnx(out, int8=True)
    graph = funcformer.load(out, runtime="onnx")
    assert graph.runtime == "onnx"
    pairs = [(a, b) for a, b, _ in rows]
    assert [p.score for p in graph(pairs)] == pytest.approx([p.score for p in loaded(pairs)],
                                                            abs=1e-5)
    items = [b for _, b, _ in rows[:6]]
    assert [r.index for r in graph.rank("the food was great", items)] == \
        [r.index for r in loaded.rank("the food was great", items)]
    assert graph.evaluate(rows) == pytest.approx(loaded.evaluate(rows), abs=1e-4)
    int8 = funcformer.load(out, runtime="onnx-int8")
    assert [p.score for p in int8(pairs)] == pytest.approx([p.score for p in loaded(pairs)],
                                                           abs=0.05)
    pair = ("the food was great", "food great")
    want = funcformer.explain(loaded, pair, method="occlusion")
    got = funcformer.explain(graph, pair, method="occlusion")
    assert got.score == pytest.approx(want.score, abs=1e-5)
    assert [w.attribution for w in got.words + got.words_b] == pytest.approx(
        [w.attribution for w in want.words + want.words_b], abs=1e-4)
    assert len(got.words) == 4 and len(got.words_b) == 2
    for call in (lambda: graph.save(tmp_path / "copy"), lambda: graph.export_onnx(out)):
        with pytest.raises(funcformer.TaskError, match="runtime='torch'"):
            call()
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_tag_entities_and_explanations_on_the_export(tiny_backbone: Path, tmp_path: Path,
                                                     method: str) -> None:
    """A tagger exports its encoder and tag head as one graph with logits per token: the
    same entities (scores included), metrics and occlusion explanations as torch, also for a
    text windowed past the token limit."""
    from test_tag import toy_rows

    import funcformer

    fn = funcformer.train("tag", toy_rows(40), backbone=tiny_backbone, method=method,
                          epochs=2, max_length=16, progress=False)
    out = fn.save(tmp_path / "tag")
    loaded = funcformer.load(out)
    loaded.export_onnx(out)
    loaded.export_onnx(out, int8=True)
    graph = funcformer.load(out, runtime="onnx")
    assert graph.runtime == "onnx" and graph.labels == loaded.labels
    assert graph.runner.session.get_outputs()[0].shape[:2] == ["batch", "sequence"]
    long = " ".join(["the phone was very awful and"] * 6) + " the room was very lovely"
    texts = ["the phone was very awful", "the food was lovely", long]
    assert [len(e) for e in loaded(texts)][2] > 2  # windows of 16 tokens, entities in several
    for want, got in zip(loaded(texts), graph(texts), strict=True):
        assert [(s.start, s.end, s.label) for s in got] == [(s.start, s.end, s.label)
                                                            for s in want]
        assert [s.score for s in got] == pytest.approx([s.score for s in want], abs=1e-5)
    rows = toy_rows(20, seed=1)
    assert graph.evaluate(rows) == loaded.evaluate(rows)  # counts of the same entities
    int8 = funcformer.load(out, runtime="onnx-int8")
    assert len(int8(texts)) == 3
    want = funcformer.explain(loaded, texts[0], method="occlusion")
    got = funcformer.explain(graph, texts[0], method="occlusion")
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert a.target == b.target and a.score == pytest.approx(b.score, abs=1e-5)
        assert [w.attribution for w in a.words] == pytest.approx(
            [w.attribution for w in b.words], abs=1e-4)
    with pytest.raises(funcformer.TaskError, match="method='occlusion'"):
        funcformer.explain(graph, texts[0], method="ig")
    for call in (lambda: graph.save(tmp_path / "copy"), lambda: graph.export_onnx(out)):
        with pytest.raises(funcformer.TaskError, match="runtime='torch'"):
            call()
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_scores_on_the_export(tiny_backbone: Path, tmp_path: Path,
                                        multi_label: bool, monkeypatch) -> None:
    """A zero-shot function exports the backbone it names (encoder and pooling): the same
    scores for its labels and for labels given per call, and calibration; label vectors are
    cached per graph, so the int8 graph never reuses the float32 one's."""
    import funcformer
    from funcformer import _embed
    from funcformer._cache import MemoryCache

    labels = {"food": "the food was great", "staff": "the staff was rude",
              "room": "the room was dirty"}
    fn = funcformer.ZeroShot(labels, backbone=tiny_backbone, multi_label=multi_label,
                             threshold=0.5)
    out = fn.save(tmp_path / "zs")
    fn.export_onnx(out)
    fn.export_onnx(out, int8=True)
    graph = funcformer.load(out, runtime="onnx")
    assert graph.runtime == "onnx" and graph.digest == fn.digest
    assert graph.manifest.backbone == fn.manifest.backbone
    texts = [*TEXTS, "the food was great"]
    for got, want in zip(graph(texts), fn(texts), strict=True):
        assert got.scores == pytest.approx(want.scores, abs=1e-5)
    per_call = ["food", "service"]
    for got, want in zip(graph(texts, labels=per_call), fn(texts, labels=per_call), strict=True):
        assert got.scores == pytest.approx(want.scores, abs=1e-5)
    if multi_label:  # calibrated on ONNX, saved, and loaded on torch with its threshold
        rows = [{"text": t, "label": "food" if "food" in t else "staff"} for t in texts]
        threshold = graph.calibrate(rows)
        assert threshold == pytest.approx(fn.calibrate(rows), abs=0.011)
        again = funcformer.load(graph.save(tmp_path / "calibrated"))
        assert again.threshold == threshold and again.digest == graph.digest
    int8 = funcformer.load(out, runtime="onnx-int8")
    first = [r.scores for r in int8(texts)]
    monkeypatch.setattr(_embed, "_labels_cache", MemoryCache())
    assert [r.scores for r in int8(texts)] == first  # its own label vectors, cached or not
    for call in (lambda: graph.export_onnx(out),
                 lambda: graph.fit([("the food", "food"), ("the staff", "staff")])):
        with pytest.raises(funcformer.TaskError, match="runtime='torch'"):
            call()


def test_functions_with_the_same_graph_share_one_session(tiny_backbone: Path,
                                                         tmp_path: Path) -> None:
    """Zero-shot functions on one backbone export the same graph: loaded on ONNX, they hold
    one ONNX Runtime session (one copy of the weights), as on torch they share one backbone."""
    import gc
    import weakref

    import funcformer

    paths = []
    for name, labels in (("a", ["food", "staff"]), ("b", ["room", "price", "view"])):
        fn = funcformer.ZeroShot(labels, backbone=tiny_backbone)
        paths.append(fn.save(tmp_path / name))
        fn.export_onnx(paths[-1])
        fn.export_onnx(paths[-1], int8=True)
    # threads=3: a key of this test's own (the same tiny graph loaded by an earlier test in
    # this process, say the server's, is the same bytes and would be shared with it)
    a, b = (funcformer.load(p, runtime="onnx", threads=3) for p in paths)
    assert a.runner is b.runner
    assert a("the food was great").scores.keys() == {"food", "staff"}  # each its own labels
    assert b("the room was dirty").scores.keys() == {"room", "price", "view"}
    int8 = funcformer.load(paths[0], runtime="onnx-int8", threads=3)
    assert int8.runner is not a.runner
    assert funcformer.load(paths[0], runtime="onnx", threads=1).runner is not a.runner
    session = weakref.ref(a.runner)
    del a, b
    gc.collect()
    assert session() is None  # the sharing keeps no graph alive that no function holds


def test_generate_functions_do_not_run_on_onnx(tmp_path: Path) -> None:
    from test_generate import write_tiny_lm

    import funcformer
    from funcformer._tasks import generate

    out = generate.from_backbone(write_tiny_lm(tmp_path / "lm")).save(tmp_path / "g")
    with pytest.raises(funcformer.TaskError, match="serves classify, zero_shot, embed, search, "
                                                   "pair and tag functions; this is a generate "
                                                   "function"):
        funcformer.load(out, runtime="onnx")


def test_cli_exports_an_embed_function_and_predicts_on_onnx(tiny_backbone: Path, tmp_path: Path,
                                                            capsys) -> None:
    import json

    from test_cli import cli
    from test_embed_task import paraphrases

    import funcformer

    out = funcformer.train("embed", paraphrases(), backbone=tiny_backbone, method="full",
                           epochs=1, progress=False).save(tmp_path / "fn")
    code, printed, err = cli(capsys, "export", out, "--onnx")
    assert code == 0, err
    assert "--runtime onnx" in printed
    vectors = {}
    for runtime in ("torch", "onnx"):
        code, printed, err = cli(capsys, "predict", out, "great", "--runtime", runtime)
        assert code == 0, err
        vectors[runtime] = json.loads(printed.splitlines()[0])["vector"]
    assert vectors["onnx"] == pytest.approx(vectors["torch"], abs=1e-5)


def test_cli_exports_every_function_of_a_directory(tiny_backbone: Path, tmp_path: Path,
                                                   capsys) -> None:
    """`funcformer export DIR --onnx` on what `serve` serves: each function exported, a
    generate function skipped (it runs on torch), a damaged one named with the others done."""
    from test_cli import assert_clean_error, cli
    from test_generate import write_tiny_lm
    from test_tag import toy_rows

    import funcformer
    from funcformer._tasks import generate

    functions = tmp_path / "functions"
    funcformer.ZeroShot(["food", "staff"], backbone=tiny_backbone).save(functions / "topic")
    funcformer.train("tag", toy_rows(20), backbone=tiny_backbone, method="head", epochs=1,
                     progress=False).save(functions / "entities")
    generate.from_backbone(write_tiny_lm(tmp_path / "lm")).save(functions / "writer")
    code, printed, err = cli(capsys, "export", functions, "--onnx", "--int8")
    assert code == 0, err
    assert "writer: a generate function, which runs on torch; skipped." in printed
    assert f"funcformer serve {functions} --runtime onnx-int8" in printed
    for name in ("topic", "entities"):
        assert (functions / name / "onnx" / "model.onnx").is_file()
        assert funcformer.load(functions / name, runtime="onnx-int8").runtime == "onnx"
    assert not (functions / "writer" / "onnx").exists()
    (functions / "broken").mkdir()
    (functions / "broken" / "funcformer.json").write_text("{bad", "utf-8")
    code, printed, err = cli(capsys, "export", functions, "--onnx")
    assert_clean_error(code, err)
    assert "1 of 4 functions" in err and "broken/funcformer.json: not valid JSON" in err
    assert (functions / "topic" / "onnx" / "model.onnx").is_file()


def test_directory_export_goes_on_past_a_full_disk(tiny_backbone: Path, tmp_path: Path,
                                                   capsys, monkeypatch) -> None:
    """An OSError in one function's export (a full disk) stopped the run unnamed and left an
    empty onnx/ there: now the others are exported and the failure is named."""
    import errno

    from test_cli import assert_clean_error, cli

    import funcformer
    from funcformer import _onnx

    functions = tmp_path / "functions"
    for name in ("a", "b"):
        funcformer.ZeroShot(["food", "staff"], backbone=tiny_backbone).save(functions / name)
    real = _onnx.export

    def export(model, path, **options):  # type: ignore[no-untyped-def]
        if Path(path).parent.parent.name == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(model, path, **options)

    monkeypatch.setattr(_onnx, "export", export)
    code, _, err = cli(capsys, "export", functions, "--onnx")
    assert_clean_error(code, err)
    assert "1 of 2 functions" in err and "a: OSError: [Errno 28] No space left" in err
    assert not (functions / "a" / "onnx").exists()  # no empty or partial export left
    assert funcformer.load(functions / "b", runtime="onnx").runtime == "onnx"
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "export", tmp_path / "empty", "--onnx")
    assert_clean_error(code, err)
    assert "neither a function (no funcformer.json) nor a directory of functions" in err


def test_saving_a_function_again_unchanged_keeps_its_export(tiny_backbone: Path,
                                                           tmp_path: Path) -> None:
    """Saving into the function's own directory replaced it whole, export included, even
    with nothing changed; an ONNX-only host could not make the export again. The export now
    stays when it was made from the version saved, and goes when the version changed, unless
    its graph still computes what the new version needs (a zero-shot function's is its
    backbone's, whatever the threshold)."""
    import json

    from conftest import make_reviews

    import funcformer

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                          progress=False, method="head")
    out = fn.save(tmp_path / "fn")
    fn.export_onnx(out)
    fn.export_onnx(out, int8=True)
    funcformer.load(out).save(out)  # torch, unchanged
    assert funcformer.load(out, runtime="onnx-int8").runtime == "onnx"
    zs = funcformer.ZeroShot(["food", "staff"], backbone=tiny_backbone, multi_label=True)
    out = zs.save(tmp_path / "zs")
    zs.export_onnx(out)
    graph = funcformer.load(out, runtime="onnx")
    graph.save(out)  # the function running from this export saves over it, unchanged
    assert funcformer.load(out, runtime="onnx")("the food").scores == graph("the food").scores
    first = graph("the food").scores
    threshold = graph.calibrate([{"text": "the food", "label": "food"},
                                 {"text": "a staff", "label": "staff"}])
    graph.save(out)  # a new version, but its graph is the backbone's: the export holds
    again = funcformer.load(out, runtime="onnx")
    assert again.digest == graph.digest != zs.digest and again.threshold == threshold
    assert again("the food").scores == first
    assert funcformer.load(out).threshold == threshold  # and on torch
    record = json.loads((out / "onnx/export.json").read_text())
    record["graph_of"] = record["graph_of"].replace(":", ":other", 1)  # another backbone's
    (out / "onnx/export.json").write_text(json.dumps(record))
    again.calibrate([{"text": "the food", "label": "staff"}, {"text": "a staff", "label": "food"}])
    assert again.digest != graph.digest
    again.save(out)
    assert not (out / "onnx").exists()  # a graph of something else is not carried over
    with pytest.raises(funcformer.ArtifactError, match="no ONNX export"):
        funcformer.load(out, runtime="onnx")
    assert again("the food").scores  # the loaded function keeps running


def test_a_stale_export_is_refused(tiny_backbone: Path, tmp_path: Path) -> None:
    import json

    from conftest import make_reviews

    import funcformer

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                          progress=False, method="head")
    out = fn.save(tmp_path / "fn")
    fn.export_onnx(out)
    record = json.loads((out / "onnx/export.json").read_text())
    record["digest"] = "sha256:other"
    (out / "onnx/export.json").write_text(json.dumps(record))
    with pytest.raises(funcformer.ArtifactError, match="exported from another version"):
        funcformer.load(out, runtime="onnx")


def test_info_names_the_runtimes_an_artifact_loads_on(saved, tmp_path: Path, capsys) -> None:
    import json
    import shutil

    from test_cli import cli

    out = _copy(saved, tmp_path)

    def runtimes() -> str:
        code, printed, err = cli(capsys, "info", out)
        assert code == 0, err
        return next(line for line in printed.splitlines() if "runtimes" in line).split(
            "runtimes", 1)[1].strip()

    assert runtimes() == "torch, onnx"
    code, _, err = cli(capsys, "export", out, "--onnx", "--int8")
    assert code == 0, err
    assert runtimes() == "torch, onnx, onnx-int8"
    record = json.loads((out / "onnx/export.json").read_text())
    (out / "onnx/export.json").write_text(json.dumps(record | {"digest": "sha256:other"}))
    assert runtimes().startswith("torch (the ONNX export in onnx/ is stale or damaged; run "
                                 f"funcformer export {out} --onnx)")
    (out / "onnx/export.json").write_text("{bad")
    assert "stale or damaged" in runtimes()
    shutil.rmtree(out / "onnx")
    assert runtimes() == "torch (no ONNX export)"


def test_a_function_loaded_in_half_precision_is_not_exported(tiny_backbone: Path,
                                                             tmp_path: Path) -> None:
    """A graph of the bfloat16-rounded weights would carry the float32 function's digest,
    which load(runtime="onnx") accepts as the same function: refused, nothing written, and
    the float32 load exports."""
    from conftest import make_reviews

    import funcformer

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                          progress=False, method="head")
    out = fn.save(tmp_path / "fn")
    for dtype in ("bfloat16", "float16"):
        with pytest.raises(funcformer.TaskError, match=f"loaded in {dtype}.*without dtype="):
            funcformer.load(out, dtype=dtype).export_onnx(out)
    assert not (out / "onnx").exists()
    funcformer.load(out).export_onnx(out)
    texts = ["the food was great", "the staff were rude"]
    torch.testing.assert_close(funcformer.load(out, runtime="onnx").logits(texts),
                               fn.logits(texts), rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def saved(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head function saved with its fp32 export."""
    from conftest import make_reviews

    import funcformer

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                          progress=False, method="head")
    out = fn.save(tmp_path_factory.mktemp("saved") / "fn")
    fn.export_onnx(out)
    return out


def _copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "fn"))


def test_an_export_goes_into_the_functions_own_directory(saved, tiny_backbone: Path,
                                                          tmp_path: Path) -> None:
    """An export into a directory without the function made stray files; one into another
    function's directory replaced that one's graph and record with this function's."""
    import funcformer

    fn = funcformer.load(saved)
    with pytest.raises(funcformer.TaskError, match=r"no function is saved there.*fn.save"):
        fn.export_onnx(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    other = funcformer.ZeroShot(["a", "b"], backbone=tiny_backbone).save(tmp_path / "zs")
    before = sorted(p.name for p in other.iterdir())
    with pytest.raises(funcformer.TaskError, match="holds another function"):
        fn.export_onnx(other)
    assert sorted(p.name for p in other.iterdir()) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_graph_is_an_artifact_error(saved, tmp_path: Path, damage: str) -> None:
    import funcformer

    path = _copy(saved, tmp_path)
    graph = path / "onnx/model.onnx"
    raw = graph.read_bytes()
    graph.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"not onnx",
                       "empty": b""}[damage])
    with pytest.raises(funcformer.ArtifactError, match=r"model.onnx.*funcformer export"):
        funcformer.load(path, runtime="onnx")


@pytest.mark.parametrize("record", ["{bad", "[1]", '{"digest": "x", "files": 3}', None])
def test_a_damaged_export_record_is_an_artifact_error(saved, tmp_path: Path,
                                                      record: str | None) -> None:
    """A bad or missing export.json was a JSONDecodeError / AttributeError /
    FileNotFoundError; re-exporting replaces it."""
    import funcformer

    path = _copy(saved, tmp_path)
    file = path / "onnx/export.json"
    file.unlink() if record is None else file.write_text(record)
    with pytest.raises(funcformer.ArtifactError, match=r"export.json.*funcformer export"):
        funcformer.load(path, runtime="onnx")
    funcformer.load(path).export_onnx(path)
    assert funcformer.load(path, runtime="onnx")("great").label


def test_a_swapped_graph_is_refused(saved, tiny_backbone: Path, tmp_path: Path) -> None:
    """Another function's graph put in place ran silently under this function's digest, so
    a shared result cache would answer with its results."""
    from conftest import make_reviews

    import funcformer

    path = _copy(saved, tmp_path)
    other = funcformer.train("classify", make_reviews(seed=1), backbone=tiny_backbone,
                             epochs=1, progress=False, method="head", seed=1)
    other_dir = other.save(tmp_path / "other")
    other.export_onnx(other_dir)
    (path / "onnx/model.onnx").write_bytes((other_dir / "onnx/model.onnx").read_bytes())
    with pytest.raises(funcformer.ArtifactError, match="not the graph exported"):
        funcformer.load(path, runtime="onnx")


def test_an_export_record_without_files_still_loads(saved, tmp_path: Path) -> None:
    """Exports made before graphs were hashed record only the digest."""
    import json

    import funcformer

    path = _copy(saved, tmp_path)
    record = json.loads((path / "onnx/export.json").read_text())
    assert {name for name in record["files"] if name.endswith(".onnx")} == {"model.onnx"}
    del record["files"]
    (path / "onnx/export.json").write_text(json.dumps(record))
    assert funcformer.load(path, runtime="onnx")("great").label


def test_the_int8_export_keeps_the_fp32_record(saved, tmp_path: Path) -> None:
    import json

    import funcformer

    path = _copy(saved, tmp_path)
    funcformer.load(path).export_onnx(path, int8=True)
    record = json.loads((path / "onnx/export.json").read_text())
    assert {name for name in record["files"] if name.endswith(".onnx")} == \
        {"model.onnx", "model-int8.onnx"}
    for runtime in ("onnx", "onnx-int8"):
        assert funcformer.load(path, runtime=runtime)("great").label


def test_an_onnx_function_refuses_what_needs_torch(saved, tmp_path: Path) -> None:
    """features() and save() were AttributeErrors on an ONNX-loaded function."""
    import funcformer

    fn = funcformer.load(saved, runtime="onnx")
    for call in (lambda: fn.features(["great"]), lambda: fn.save(tmp_path / "copy")):
        with pytest.raises(funcformer.TaskError, match="runtime='torch'"):
            call()
    assert not (tmp_path / "copy").exists()


def test_torch_load_options_are_refused_with_onnx(saved, tiny_backbone: Path,
                                                  tmp_path: Path) -> None:
    """dtype and merge_adapter were silently ignored; an unknown runtime for a zero_shot
    function was said to 'serve classify functions'."""
    import funcformer

    with pytest.raises(funcformer.TaskError, match="dtype 'bfloat16' applies to the torch"):
        funcformer.load(saved, runtime="onnx", dtype="bfloat16")
    with pytest.raises(funcformer.TaskError, match="merge_adapter applies to the torch"):
        funcformer.load(saved, runtime="onnx", merge_adapter=True)
    zs = funcformer.ZeroShot(["a", "b"], backbone=tiny_backbone).save(tmp_path / "zs")
    with pytest.raises(funcformer.TaskError, match="Unknown runtime 'ONNX'"):
        funcformer.load(zs, runtime="ONNX")


def test_threads_are_checked_and_apply_to_onnx_only(saved) -> None:
    """threads=-1 went to ONNX Runtime unchecked; the torch runtime ignored threads."""
    import funcformer

    for threads in (-1, 0, 1.5, True, "2"):
        with pytest.raises(funcformer.TaskError, match=r"threads=.*a whole number of 1 or more"):
            funcformer.load(saved, runtime="onnx", threads=threads)
    with pytest.raises(funcformer.TaskError, match="for the ONNX runtimes"):
        funcformer.load(saved, threads=2)
    assert funcformer.load(saved, runtime="onnx", threads=1)("great").label


def test_a_damaged_export_tokenizer_says_export_again(saved, tmp_path: Path) -> None:
    """It said to copy the function again: the export is what to redo."""
    import funcformer

    path = _copy(saved, tmp_path)
    (path / "onnx/tokenizer.json").write_text("{bad", "utf-8")
    with pytest.raises(funcformer.ArtifactError,
                       match=r"tokenizer.json: not the file exported.*Fix: run funcformer export "
                             r".*--onnx again"):
        funcformer.load(path, runtime="onnx")


def test_an_edited_export_tokenizer_is_refused(saved, tmp_path: Path) -> None:
    """export.json vouched for the graphs only: two words swapped in onnx/tokenizer.json
    loaded, and answered under the function's digest (which caches key by)."""
    import json

    import funcformer

    path = _copy(saved, tmp_path)
    vocab = json.loads((path / "onnx/tokenizer.json").read_text("utf-8"))
    words = vocab["model"]["vocab"]
    words["great"], words["the"] = words["the"], words["great"]
    (path / "onnx/tokenizer.json").write_text(json.dumps(vocab), "utf-8")
    with pytest.raises(funcformer.ArtifactError, match=r"tokenizer.json: not the file exported"):
        funcformer.load(path, runtime="onnx")
    record = json.loads((path / "onnx/export.json").read_text("utf-8"))
    record["files"]["../funcformer.json"] = record["files"]["tokenizer.json"]
    del record["files"]["tokenizer.json"]  # a record naming a file outside: refused, not read
    (path / "onnx/export.json").write_text(json.dumps(record), "utf-8")
    with pytest.raises(funcformer.ArtifactError, match=r"outside .*onnx"):
        funcformer.load(path, runtime="onnx")


def test_cli_on_a_damaged_export_says_what_to_do(saved, tmp_path: Path, capsys) -> None:
    from conftest import run_cli

    path = _copy(saved, tmp_path)
    (path / "onnx/model.onnx").write_bytes(b"not onnx")
    assert run_cli("predict", path, "great", "--runtime", "onnx") == 1
    err = capsys.readouterr().err
    assert "funcformer export" in err and "bug" not in err and "Traceback" not in err


def test_saving_again_does_not_carry_an_export_holding_a_link(saved, tmp_path: Path) -> None:
    """A save carries the export of the same function into the new copy; an onnx/ holding a
    link (to a file outside, say) was carried link and all, into a folder funcformer wrote."""
    import funcformer

    path = _copy(saved, tmp_path)
    fn = funcformer.load(path)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET", "utf-8")
    (path / "onnx/leak").symlink_to(secret)
    fn.save(path)
    assert not (path / "onnx").exists()  # dropped, not carried
    assert funcformer.load(path).labels == fn.labels
    fn.export_onnx(path)
    assert funcformer.load(path, runtime="onnx")("great").label  # exported again, whole
