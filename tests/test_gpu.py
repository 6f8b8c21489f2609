"""Training and inference on a CUDA GPU (skipped without one: CI and the CPU-only torch build
have none; run them where a GPU is lent with `python -m pytest tests/test_gpu.py`).

Every trainable task and method trains on `device="cuda"`, its function answers on the GPU,
and the saved artifact answers the same on a CPU (float32 both sides: the differences are
rounding, far below any label flip on these separable toy sets). Half-precision inference,
bfloat16 autocast training, seeded reproducibility and kill-and-resume are checked on the GPU
as the CPU tests check them on the CPU. So is everything else that runs a function on the GPU:
ONNX export, explain, the server, search, zero-shot, suggest and self-training, tune, PEFT
adapters (attached and merged there), sampling and streaming, and map.

`FUNCFORMER_TEST_DEVICE` names another device to run them on (`cpu` checks the tests
themselves on a machine without a GPU; `cuda:1` a second GPU).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_reviews
from test_checkpoint import train_until_killed

import funcformer

DEVICE = os.environ.get("FUNCFORMER_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (or FUNCFORMER_TEST_DEVICE=cpu)")

TEXTS = ["the food was great", "the staff was rude", "the room was very lovely",
         "the battery was broken and the app was slow"]


def flatten(value: Any) -> list[Any]:
    """The strings and numbers of a function's answer, in order (labels, ids, scores,
    vectors), for comparing answers made on two devices."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in [key, *flatten(value[key])]]
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in flatten(item)]
    if isinstance(value, np.ndarray):
        return [float(x) for x in value.ravel()]
    if hasattr(value, "__dict__") and not isinstance(value, (str, int, float)):
        return flatten(vars(value))
    return [value]


def assert_same_answers(a: Any, b: Any, atol: float) -> None:
    left, right = flatten(a), flatten(b)
    assert len(left) == len(right), (left, right)
    for x, y in zip(left, right, strict=True):
        if isinstance(x, float) or isinstance(y, float):
            assert math.isfinite(x) and abs(x - y) <= atol, (x, y, left, right)
        else:
            assert x == y, (x, y)


def on_device(fn: Any) -> bool:
    """Whether `fn`'s encoder (or language model) is on DEVICE."""
    fn = getattr(fn, "embedder", fn)  # a Searcher answers through its Embedder
    module = (getattr(fn, "encoder", None) or getattr(fn, "model", None)
              or getattr(getattr(fn, "lm", None), "model", None) or fn.backbone.model)
    where, wanted = next(module.parameters()).device, torch.device(DEVICE)
    # "cuda" places tensors on cuda:0: a device without an index matches any index
    return where.type == wanted.type and wanted.index in (None, where.index)


@pytest.mark.parametrize("method", ["head", "full", "lora", "contrastive"])
def test_classify_trains_on_cuda_and_its_artifact_answers_the_same_on_a_cpu(
        tiny_backbone: Path, tmp_path: Path, method: str) -> None:
    fn = funcformer.train("classify", make_reviews(24), backbone=tiny_backbone, method=method,
                          epochs=3, batch_size=8, progress=False, device=DEVICE)
    assert on_device(fn)
    assert np.isfinite(fn.manifest.training["history"]["epochs"][-1].get("loss", 0.0))
    on_gpu = fn(TEXTS)
    path = fn.save(tmp_path / method)
    assert_same_answers(funcformer.load(path)(TEXTS), on_gpu, atol=1e-4)
    assert_same_answers(funcformer.load(path, device=DEVICE)(TEXTS), on_gpu, atol=1e-5)


def test_multi_label_trains_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [(text, f"{label}|review") for text, label in make_reviews(16)]
    fn = funcformer.train("classify", rows, backbone=tiny_backbone, method="full", epochs=2,
                          progress=False, device=DEVICE)
    assert fn.manifest.options["multi_label"] is True
    assert_same_answers(funcformer.load(fn.save(tmp_path / "ml"))(TEXTS), fn(TEXTS), atol=1e-4)


def test_one_backbone_per_gpu_whatever_its_spelling(tiny_backbone: Path) -> None:
    from funcformer import _backbone

    index = torch.device(DEVICE).index or 0
    spellings = [DEVICE, torch.device(DEVICE)] + ([f"cuda:{index}"] if "cuda" in DEVICE else [])
    assert len({id(_backbone.load(tiny_backbone, device=d)) for d in spellings}) == 1


def test_embed_on_cuda_returns_every_batch_in_input_order(tiny_backbone: Path) -> None:
    """Pooled features are queued on the GPU and copied back together: rows must land where
    their texts were, whatever batch they ran in."""
    from funcformer import _backbone

    texts = [" ".join(["word"] * (1 + i % 17)) + f" {i}" for i in range(300)]
    on_gpu, cut = _backbone.load(tiny_backbone, device=DEVICE).embed(texts, batch_tokens=64)
    cpu = _backbone.load(tiny_backbone)
    alone = [cpu.embed([text]) for text in texts]  # one text a batch: nothing to reorder
    on_cpu = np.concatenate([features for features, _ in alone])
    assert cut == sum(truncated for _, truncated in alone) and on_gpu.shape == on_cpu.shape
    assert np.abs(on_gpu - on_cpu).max() < 1e-4


def test_seeded_cuda_training_is_reproducible(tiny_backbone: Path) -> None:
    runs = [funcformer.train("classify", make_reviews(16), backbone=tiny_backbone,
                             method="full", epochs=2, progress=False, device=DEVICE, seed=seed)
            for seed in (5, 5, 6)]
    assert runs[0].digest == runs[1].digest != runs[2].digest


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inference_agrees_with_float32(tiny_backbone: Path, tmp_path: Path,
                                                      dtype: str) -> None:
    fn = funcformer.train("classify", make_reviews(24), backbone=tiny_backbone, method="full",
                          epochs=3, progress=False)
    path = fn.save(tmp_path / "fn")
    half = funcformer.load(path, device=DEVICE, dtype=dtype)
    assert next(half.backbone.model.parameters()).dtype == getattr(torch, dtype)
    assert_same_answers([p.scores for p in half(TEXTS)], [p.scores for p in fn(TEXTS)],
                        atol=0.05)
    features, _ = half.backbone.embed(TEXTS)
    assert features.dtype == np.float32


def test_bf16_autocast_training_on_cuda(tiny_backbone: Path) -> None:
    fn = funcformer.train("classify", make_reviews(24), backbone=tiny_backbone, method="full",
                          epochs=3, progress=False, device=DEVICE, precision="bf16")
    assert fn.manifest.config["precision"] == "bf16"
    for epoch in fn.manifest.training["history"]["epochs"]:
        assert all(np.isfinite(v) for v in epoch.values() if isinstance(v, float)), epoch
    # The weights stay float32 (autocast casts per operation), so the artifact is plain fp32.
    assert next(fn.encoder.parameters()).dtype == torch.float32


def test_embed_search_tag_pair_train_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    from test_embed_task import paraphrases
    from test_pair import make_pairs
    from test_search import FAQ
    from test_tag import toy_rows

    cases = {
        "embed": (paraphrases(), lambda fn: fn.encode(TEXTS)),
        "search": (FAQ, lambda fn: [fn(text, k=2) for text in TEXTS]),
        "tag": (toy_rows(16), lambda fn: fn(["the phone was very awful"])),
        "pair": (make_pairs(24), lambda fn: fn([(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[0])])),
    }
    for task, (rows, answer) in cases.items():
        options = {"pairs": [{"text": f"how was the {doc['id']}", "id": doc["id"]}
                             for doc in FAQ] * 4} if task == "search" else {}
        fn = funcformer.train(task, rows, backbone=tiny_backbone, epochs=2, progress=False,
                              device=DEVICE, **options)
        assert on_device(fn), task
        on_gpu = answer(fn)
        loaded = funcformer.load(fn.save(tmp_path / task))
        assert DEVICE == "cpu" or not on_device(loaded), task
        assert_same_answers(answer(loaded), on_gpu, atol=1e-4)


def test_generate_trains_on_cuda(tmp_path: Path) -> None:
    from test_generate import PAIRS, write_tiny_lm

    lm = write_tiny_lm(tmp_path / "lm")
    fn = funcformer.train("generate", PAIRS * 4, backbone=lm, progress=False, epochs=2,
                          learning_rate=1e-2, batch_size=8, device=DEVICE)
    assert on_device(fn)
    on_gpu = fn("say A:", max_new_tokens=8)
    loaded = funcformer.load(fn.save(tmp_path / "gen"))
    assert DEVICE == "cpu" or not on_device(loaded)
    assert loaded("say A:", max_new_tokens=8).text == on_gpu.text  # greedy: the same tokens


def test_update_and_distill_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    fn = funcformer.train("classify", make_reviews(16), backbone=tiny_backbone, method="full",
                          epochs=2, progress=False, device=DEVICE, memory=4)
    new = [("the delivery was late", "late"), ("late again, the delivery", "late")] * 6
    updated = fn.update(new, progress=False, epochs=2)
    assert set(updated.labels) == {"positive", "negative", "late"}
    loaded = funcformer.load(updated.save(tmp_path / "up"))
    assert_same_answers(loaded(TEXTS), updated(TEXTS), atol=1e-4)
    # The teacher as a function on the device, as a directory, and loaded on the CPU: the
    # student trains on DEVICE each time.
    for teacher in (fn, fn.save(tmp_path / "teacher"), funcformer.load(tmp_path / "teacher")):
        student = funcformer.distill(teacher, student_layers=1, data=make_reviews(16),
                                     epochs=2, progress=False, device=DEVICE)
        assert on_device(student)
        assert len(student.encoder.encoder.layer) == 1
        loaded = funcformer.load(student.save(tmp_path / "student"))
        assert_same_answers(loaded(TEXTS), student(TEXTS), atol=1e-4)
    # Without device=, the student trains where the teacher is (this one: on DEVICE).
    assert on_device(funcformer.distill(fn, student_layers=1, data=make_reviews(16), epochs=1,
                                        progress=False))


def test_killed_cuda_run_resumes_to_the_same_weights(tiny_backbone: Path,
                                                     tmp_path: Path) -> None:
    checkpoints = tmp_path / "ck"
    train = dict(method="full", epochs=2, batch_size=8, progress=False, seed=3, device=DEVICE)
    train_until_killed(tiny_backbone, checkpoints, train)  # at epoch 2, step 1
    resumed = funcformer.train("classify", make_reviews(16), backbone=tiny_backbone, **train,
                               checkpoint_dir=str(checkpoints), checkpoint_steps=1, resume=True)
    plain = funcformer.train("classify", make_reviews(16), backbone=tiny_backbone, **train)
    assert resumed.digest == plain.digest
    # A checkpoint written on the GPU resumes on a CPU too (tensors are saved device-free).
    on_cpu = funcformer.train("classify", make_reviews(16), backbone=tiny_backbone,
                              **{**train, "device": "cpu"}, checkpoint_dir=str(checkpoints),
                              checkpoint_steps=1, resume=True)
    assert_same_answers(on_cpu(TEXTS), plain(TEXTS), atol=1e-3)


def test_export_onnx_of_a_cuda_function_runs_on_a_cpu_copy(tiny_backbone: Path,
                                                            tmp_path: Path) -> None:
    """The encoder is on the GPU, the head on the CPU: the export traces a float32 CPU copy
    of both (tracing the function as it is mixed the devices) and leaves the function be."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    fn = funcformer.train("classify", make_reviews(16), backbone=tiny_backbone, method="full",
                          epochs=2, progress=False, device=DEVICE)
    path = fn.save(tmp_path / "fn")
    fn.export_onnx(path)
    assert on_device(fn)
    exported = funcformer.load(path, runtime="onnx")
    assert_same_answers(exported.logits(TEXTS).tolist(), fn.logits(TEXTS).tolist(), atol=1e-4)
    half = funcformer.load(path, device=DEVICE, dtype="float16")  # one loaded in half: refused
    with pytest.raises(funcformer.TaskError, match="loaded in float16"):
        half.export_onnx(path)


def test_zero_shot_answers_on_cuda_and_fits_there(tiny_backbone: Path, tmp_path: Path) -> None:
    topic = funcformer.ZeroShot(["positive", "negative"], backbone=tiny_backbone,
                                device=DEVICE)
    assert on_device(topic)
    on_cpu = funcformer.ZeroShot(["positive", "negative"], backbone=tiny_backbone)
    assert_same_answers(topic(TEXTS), on_cpu(TEXTS), atol=1e-4)
    assert_same_answers(funcformer.load(topic.save(tmp_path / "zs"), device=DEVICE)(TEXTS),
                        on_cpu(TEXTS), atol=1e-4)
    # fit trains on the zero-shot function's device (it trained on the CPU whatever the
    # function's device was)
    fn = topic.fit(make_reviews(8), method="full", epochs=2, progress=False)
    assert on_device(fn)
    assert_same_answers(funcformer.load(fn.save(tmp_path / "fit"))(TEXTS), fn(TEXTS),
                        atol=1e-4)


def test_explain_classify_pair_tag_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    """Integrated Gradients (captum's hooks on the GPU's embedding layer, the classify head's
    gradient coming back from the CPU) and occlusion give the CPU's attributions."""
    pytest.importorskip("captum")
    from test_pair import make_pairs
    from test_tag import toy_rows

    cases = {
        "classify": (make_reviews(12), {"method": "full"}, "the food was great"),
        "pair": (make_pairs(24), {}, ("the food was great", "the room was lovely")),
        "tag": (toy_rows(40), {"method": "head", "epochs": 10, "learning_rate": 0.05,
                               "batch_size": 8}, "the phone was very awful"),
    }
    for task, (rows, options, text) in cases.items():
        options = {"epochs": 2, **options}
        fn = funcformer.train(task, rows, backbone=tiny_backbone, progress=False, device=DEVICE,
                              **options)
        loaded = funcformer.load(fn.save(tmp_path / task))
        for method in ("ig", "occlusion"):
            on_gpu = fn.explain(text, method=method)
            assert on_gpu, task  # tag: at least one entity found and explained
            assert_same_answers(loaded.explain(text, method=method), on_gpu, atol=1e-3)


def test_server_answers_with_functions_loaded_on_cuda(tiny_backbone: Path,
                                                      tmp_path: Path) -> None:
    """create_app(device=): the registry loads every function on the GPU, the engine batches a
    classify function's features there, a tagger runs there, and the answers are the CPU's."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    import asyncio

    from test_tag import toy_rows

    from funcformer._server import create_app

    root = tmp_path / "functions"
    common = {"backbone": tiny_backbone, "epochs": 2, "progress": False}
    funcformer.train("classify", make_reviews(12), method="head", **common).save(root / "sentiment")
    funcformer.train("tag", toy_rows(16), **common).save(root / "items")
    requests = {"/v1/functions/sentiment": {"inputs": TEXTS},
                "/v1/functions/items": {"inputs": TEXTS},
                "/v1/embeddings": {"model": str(tiny_backbone), "input": TEXTS}}

    async def scenario() -> tuple[list[Any], list[bool]]:
        app = create_app(root, device=DEVICE, reload_interval=0)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://localhost") as client:
                registry = app.state.server.registry
                await registry.scanned.wait()
                answers = [await client.post(path, json=body) for path, body in requests.items()]
                placed = []
                for name in ("sentiment", "items"):
                    version = registry.acquire(name)
                    placed.append(on_device(version.function))
                    registry.release(version)
        return answers, placed

    answers, placed = asyncio.run(scenario())
    assert all(placed)
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    for name, response in zip(("sentiment", "items"), answers, strict=False):
        want = [r.to_dict() for r in funcformer.load(root / name)(TEXTS)]
        assert_same_answers(response.json()["outputs"], want, atol=1e-4)
    vectors = funcformer.embed(TEXTS, backbone=tiny_backbone)
    assert_same_answers([d["embedding"] for d in answers[2].json()["data"]], vectors.tolist(),
                        atol=1e-4)


def test_search_calibrates_loads_and_grows_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    from test_search import FAQ

    queries = [{"text": "the food was great", "id": "food"},
               {"text": "the staff was rude", "id": "staff"},
               {"text": "my phone is broken", "id": ""}]
    fn = funcformer.train("search", FAQ, backbone=tiny_backbone, eval_data=queries,
                          progress=False, device=DEVICE)
    assert on_device(fn)
    path = fn.save(tmp_path / "faq")
    here, there = funcformer.load(path, device=DEVICE), funcformer.load(path)
    assert on_device(here)
    for searcher in (here, there):
        searcher.add([{"id": "late", "text": "the delivery was slow"}])
    ask = ["the delivery was very slow", "the room was lovely"]
    assert_same_answers(here(ask, k=3), there(ask, k=3), atol=1e-4)
    assert_same_answers(here.answer(ask), there.answer(ask), atol=1e-4)


def test_suggest_and_self_training_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    from funcformer._unlabeled import uncertainty

    labelled = make_reviews(8)
    known = {text for text, _ in labelled}
    pool = list(dict.fromkeys(t for t, _ in make_reviews(20, seed=5) if t not in known))
    fn = funcformer.train("classify", labelled, backbone=tiny_backbone, method="full",
                          epochs=2, progress=False, device=DEVICE)
    on_cpu = funcformer.load(fn.save(tmp_path / "fn"))
    for options in ({}, {"labelled": [t for t, _ in labelled]}, {"measure": "badge"}):
        picks = funcformer.suggest(fn, pool, n=4, **options)
        texts = [p.text for p in picks]
        assert len(set(texts)) == 4 and set(texts) <= set(pool), options
        # Which texts win may hinge on rounding; each pick's score must be the CPU's.
        want = uncertainty(on_cpu.task, on_cpu.logits(texts), options.get("measure", "margin")
                           .replace("badge", "margin"))
        assert_same_answers([p.score for p in picks], want.tolist(), atol=1e-4)
    trained = funcformer.train("classify", labelled, backbone=tiny_backbone, method="full",
                               epochs=2, progress=False, device=DEVICE, unlabeled=pool,
                               self_training={"rounds": 1, "threshold": 0.55})
    assert on_device(trained)
    assert trained.manifest.training["self_training"]["rounds"]
    assert_same_answers(funcformer.load(trained.save(tmp_path / "st"))(TEXTS), trained(TEXTS),
                        atol=1e-4)


def test_tune_trains_its_trials_on_cuda(tiny_backbone: Path) -> None:
    pytest.importorskip("optuna")
    result = funcformer.tune("classify", make_reviews(12), eval_data=make_reviews(6, seed=3),
                             backbone=tiny_backbone, trials=2, methods=["full"], epochs=2,
                             progress=False, device=DEVICE)
    assert [row["state"] for row in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.best.encoder is not None and on_device(result.best)


@pytest.mark.parametrize("method", ["lora", "adalora", "ia3", "prompt", "prefix"])
def test_adapters_train_on_cuda_and_merge_there(tiny_backbone: Path, tmp_path: Path,
                                                method: str) -> None:
    """PEFT adapters made on the GPU's backbone, saved from there, attached there again
    (loaded on the CPU too) and, where they have weights, merged there."""
    fn = funcformer.train("classify", make_reviews(12), backbone=tiny_backbone, method=method,
                          epochs=2, progress=False, device=DEVICE)
    assert on_device(fn)
    path = fn.save(tmp_path / method)
    assert_same_answers(funcformer.load(path)(TEXTS), fn(TEXTS), atol=1e-4)
    assert_same_answers(funcformer.load(path, device=DEVICE)(TEXTS), fn(TEXTS), atol=1e-5)
    if method not in ("prompt", "prefix"):
        merged = funcformer.load(path, device=DEVICE, merge_adapter=True)
        assert on_device(merged)
        assert_same_answers(merged(TEXTS), fn(TEXTS), atol=1e-4)


def test_generate_samples_streams_and_merges_on_cuda(tmp_path: Path) -> None:
    """Sampling draws from a generator on the GPU (seeded: the same text twice); a stream
    joins to the call's text; a LoRA generator trained there merges there."""
    from test_generate import PAIRS, write_tiny_lm

    lm = write_tiny_lm(tmp_path / "lm")
    fn = funcformer.generator(lm, device=DEVICE)
    assert on_device(fn)
    options = {"max_new_tokens": 8, "temperature": 0.9, "top_p": 0.9, "seed": 3}
    first = fn(["say A:", "say B:"], **options)
    assert [g.text for g in fn(["say A:", "say B:"], **options)] == [g.text for g in first]
    assert "".join(fn.stream("say A:", **options)) == fn("say A:", **options).text
    tuned = funcformer.train("generate", PAIRS * 4, backbone=lm, method="lora", epochs=2,
                             learning_rate=1e-2, batch_size=8, progress=False, device=DEVICE)
    assert on_device(tuned)
    path = tuned.save(tmp_path / "gen")
    merged = funcformer.load(path, device=DEVICE, merge_adapter=True)
    assert on_device(merged)
    greedy = {"max_new_tokens": 8}
    assert merged("say A:", **greedy).text == tuned("say A:", **greedy).text
    assert funcformer.load(path)("say A:", **greedy).text == tuned("say A:", **greedy).text


def test_map_runs_a_function_on_cuda(tiny_backbone: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import csv

    path = funcformer.train("classify", make_reviews(12), backbone=tiny_backbone,
                           method="full", epochs=2, progress=False).save(tmp_path / "fn")
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in TEXTS)])
    outputs = []
    for device in (DEVICE, "cpu"):
        target = tmp_path / f"out-{device.replace(':', '-')}.csv"
        stats = funcformer.map(path, source, target, progress=False, device=device)
        assert stats["rows"] == len(TEXTS)
        with open(target, newline="", encoding="utf-8") as handle:
            outputs.append(list(csv.DictReader(handle)))
    labels = [[row["label"] for row in rows] for rows in outputs]
    assert labels[0] == labels[1]
    scores = [[float(row["score"]) for row in rows] for rows in outputs]
    assert_same_answers(scores[0], scores[1], atol=1e-4)
