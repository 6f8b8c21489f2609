"""Training and inference on a CUDA GPU (skipped without one: CI and the CPU-only torch build
have none; run them where a GPU is lent with `python -m pytest tests/test_gpu.py`).

Every trainable task and method trains on `device="cuda"`, its function answers on the GPU,
and the saved artifact answers the same on a CPU (float32 both sides: the differences are
rounding, far below any label flip on these separable toy sets). Half-precision inference,
bfloat16 autocast training, seeded reproducibility and kill-and-resume are checked on the GPU
as the CPU tests check them on the CPU.

`FUNCFORMER_TEST_DEVICE` names another device to run them on (`cpu` checks the tests
themselves on a machine without a GPU; `cuda:1` a second GPU).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_reviews

import funcformer

DEVICE = os.environ.get("FUNCFORMER_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (or FUNCFORMER_TEST_DEVICE=cpu)")

ROOT = Path(__file__).parent
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
    assert fn.backbone.device == DEVICE
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


def test_killed_cuda_run_resumes_to_the_same_weights(tiny_backbone: Path,
                                                     tmp_path: Path) -> None:
    checkpoints = tmp_path / "ck"
    train = dict(method="full", epochs=2, batch_size=8, progress=False, seed=3, device=DEVICE)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import funcformer
        from funcformer import _checkpoint
        from conftest import make_reviews

        saves = 0
        original = _checkpoint.save

        def save_then_die(*args, **kwargs):
            global saves
            original(*args, **kwargs)
            saves += 1
            if saves == 7:  # epoch 1: 5 step saves and its end; then epoch 2, step 1
                os.kill(os.getpid(), signal.SIGKILL)

        _checkpoint.save = save_then_die
        funcformer.train("classify", make_reviews(16), backbone={str(tiny_backbone)!r},
                         **{train!r}, checkpoint_dir={str(checkpoints)!r},
                         checkpoint_steps=1)
        print("not killed")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
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
    half = funcformer.load(path, device=DEVICE, dtype="float16")  # and one loaded in half
    half.export_onnx(path)
    assert_same_answers(funcformer.load(path, runtime="onnx").logits(TEXTS).tolist(),
                        half.logits(TEXTS).tolist(), atol=0.05)


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
