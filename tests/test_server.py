"""The HTTP server, in-process through httpx's ASGI transport (one real-socket subprocess test
for SIGHUP and SIGTERM). Functions are trained once per module on the tiny backbone and copied
into a fresh directory per test, since reload tests change them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from conftest import NEGATIVE, NOUNS, POSITIVE, make_reviews, run_cli

import funcformer
from funcformer import DataError, MissingExtra, TaskError
from funcformer._server import check_binding, create_app
from funcformer._serving import Limits

TEXTS = ["the food was great", "the staff was rude", "lovely hotel"]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def artifacts(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sentiment and polarity (head classifiers, labels negative/positive and bad/good), an
    embed function and a zero-shot function, all on the tiny backbone."""
    root = tmp_path_factory.mktemp("artifacts")
    common = {"backbone": tiny_backbone, "epochs": 2, "progress": False}
    funcformer.train("classify", make_reviews(), **common).save(root / "sentiment")
    relabelled = [(t, {"negative": "bad", "positive": "good"}[y]) for t, y in make_reviews(seed=1)]
    funcformer.train("classify", relabelled, seed=1, **common).save(root / "polarity")
    pairs = [(f"the {n} was {p}", f"{n} {p}") for n, p in zip(NOUNS, POSITIVE, strict=True)]
    pairs += [(f"the {n} was {q}", f"{n} {q}") for n, q in zip(NOUNS, NEGATIVE, strict=True)]
    funcformer.train("embed", pairs, backbone=tiny_backbone, epochs=1, progress=False,
                     batch_size=8).save(root / "vectors")
    funcformer.ZeroShot(["food", "service"], backbone=tiny_backbone).save(root / "topic")
    return root


@pytest.fixture()
def functions(artifacts: Path, tmp_path: Path) -> Path:
    target = tmp_path / "functions"
    shutil.copytree(artifacts, target)
    return target


@contextlib.asynccontextmanager
async def serving(directory: Path, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                           Any]]:
    """A started app (lifespan run, functions loaded) and a client for it."""
    options.setdefault("reload_interval", 0)
    app = create_app(directory, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            await app.state.server.registry.scanned.wait()
            yield client, app.state.server


def run(scenario: Any) -> Any:
    return asyncio.run(scenario())


def direct(path: Path, texts: list[str]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in funcformer.load(path)(texts)]


def assert_outputs(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + "$", text, re.M)
    assert found, f"{name} {labels} not in /metrics"
    return float(found.group(1))


def test_lists_every_function_with_task_labels_version_and_options(functions: Path) -> None:
    async def scenario() -> None:
        async with serving(functions) as (client, _):
            listed = (await client.get("/v1/functions")).json()["functions"]
        by_name = {f["name"]: f for f in listed}
        assert sorted(by_name) == ["polarity", "sentiment", "topic", "vectors"]
        sentiment = by_name["sentiment"]
        assert sentiment["status"] == "ready" and sentiment["error"] is None
        assert (sentiment["task"], sentiment["labels"]) == ("classify", ["negative", "positive"])
        fn = funcformer.load(functions / "sentiment")
        assert sentiment["digest"] == fn.digest
        assert sentiment["version"] == fn.digest.removeprefix("sha256:")[:12]
        assert sentiment["options"] == [] and "metrics" in sentiment
        assert by_name["topic"]["options"] == ["labels"]
        assert by_name["vectors"]["task"] == "embed"

    run(scenario)


def test_outputs_equal_the_function_called_directly(functions: Path) -> None:
    async def scenario() -> None:
        async with serving(functions) as (client, _):
            response = await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})
        assert response.status_code == 200
        assert_outputs(response.json()["outputs"], direct(functions / "sentiment", TEXTS))

    run(scenario)


def test_bfloat16_serves_the_functions_in_bfloat16(functions: Path) -> None:
    async def scenario() -> None:
        async with serving(functions, dtype="bfloat16") as (client, server):
            response = await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})
            version = server.registry.acquire("sentiment")
            dtype = next(version.function.backbone.model.parameters()).dtype
            server.registry.release(version)
        assert response.status_code == 200
        assert dtype == torch.bfloat16
        got, want = response.json()["outputs"], direct(functions / "sentiment", TEXTS)
        assert [g["label"] for g in got] == [w["label"] for w in want]

    run(scenario)


def test_the_device_reaches_every_load(functions: Path, tiny_backbone: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Functions and the untrained embedder of a backbone all load on the server's device
    ('cuda:1' recorded, then loaded on the CPU: this machine has no GPU)."""
    from funcformer import _backbone

    devices = []
    real_load = _backbone.load

    def load(*args: Any, device: str = "cpu", **kwargs: Any) -> Any:
        devices.append(device)
        return real_load(*args, device="cpu", **kwargs)

    monkeypatch.setattr(_backbone, "check_device", lambda device: None)
    monkeypatch.setattr(_backbone, "load", load)

    async def scenario() -> list[httpx.Response]:
        async with serving(functions, device="cuda:1") as (client, _):
            return [await client.post("/v1/functions/sentiment", json={"inputs": TEXTS}),
                    await client.post("/v1/embeddings", json={"model": str(tiny_backbone),
                                                              "input": TEXTS})]

    assert [r.status_code for r in run(scenario)] == [200, 200]
    assert len(devices) == 5 and set(devices) == {"cuda:1"}  # 4 functions and the backbone


def test_concurrent_requests_share_batches_and_get_their_own_outputs(functions: Path) -> None:
    calls = [("sentiment" if i % 2 else "polarity", TEXTS[: 1 + i % 3]) for i in range(12)]

    async def scenario() -> tuple[list[httpx.Response], str]:
        async with serving(functions, max_wait_ms=100) as (client, _):
            responses = await asyncio.gather(*[
                client.post(f"/v1/functions/{name}", json={"inputs": texts})
                for name, texts in calls])
            return responses, (await client.get("/metrics")).text

    responses, metrics = run(scenario)
    for (name, texts), response in zip(calls, responses, strict=True):
        assert response.status_code == 200
        assert_outputs(response.json()["outputs"], direct(functions / name, texts))
    batches = metric(metrics, "funcformer_batch_requests_count")
    assert batches < 4  # two functions on one backbone: one batch (a few if the machine lags)
    assert metric(metrics, "funcformer_batch_requests_sum") == 12
    assert metric(metrics, "funcformer_requests_total", function="sentiment", status="200") == 6
    assert metric(metrics, "funcformer_request_seconds_count", function="polarity") == 6


def test_the_onnx_runtime_serves_every_function_on_its_export(
        functions: Path, tiny_backbone: Path) -> None:
    """Embed, zero-shot and tag functions were served on torch under --runtime onnx; now on
    their export, with the same vectors, scores and entities. A classify function without an
    export fails to load, saying how to make one, and the others serve."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    from test_tag import toy_rows

    funcformer.train("tag", toy_rows(20), backbone=tiny_backbone, method="head", epochs=2,
                     progress=False).save(functions / "entities")
    for name in ("sentiment", "vectors", "topic", "entities"):
        funcformer.load(functions / name).export_onnx(functions / name)

    async def scenario() -> tuple[dict[str, Any], list[httpx.Response]]:
        async with serving(functions, runtime="onnx") as (client, _):
            listed = (await client.get("/v1/functions")).json()["functions"]
            return {f["name"]: f for f in listed}, [
                *[await client.post(f"/v1/functions/{name}", json={"inputs": TEXTS})
                  for name in ("sentiment", "vectors", "topic", "entities")],
                # the OpenAI-shaped route read the width from the (absent) torch model: a 500
                await client.post("/v1/embeddings", json={"model": "vectors", "input": TEXTS})]

    listed, (sentiment, vectors, topic, entities, openai) = run(scenario)
    assert [listed[n]["runtime"] for n in ("sentiment", "vectors", "topic", "entities")] == \
        ["onnx", "onnx", "onnx", "onnx"]
    assert listed["polarity"]["status"] == "failed"
    assert "funcformer export" in listed["polarity"]["error"]
    assert sentiment.status_code == vectors.status_code == topic.status_code == 200
    assert_outputs(topic.json()["outputs"], direct(functions / "topic", TEXTS))
    assert entities.status_code == 200, entities.text
    got, want = entities.json()["outputs"], direct(functions / "entities", TEXTS)
    assert sum(len(w["spans"]) for w in want) > 0
    assert [[(s["start"], s["end"], s["label"]) for s in g["spans"]] for g in got] == \
        [[(s["start"], s["end"], s["label"]) for s in w["spans"]] for w in want]
    assert [s["score"] for g in got for s in g["spans"]] == pytest.approx(
        [s["score"] for w in want for s in w["spans"]], abs=1e-5)
    assert_outputs(sentiment.json()["outputs"], direct(functions / "sentiment", TEXTS))
    want = funcformer.load(functions / "vectors").encode(TEXTS)
    np.testing.assert_allclose([o["vector"] for o in vectors.json()["outputs"]], want, atol=1e-5)
    assert openai.status_code == 200, openai.text
    np.testing.assert_allclose([d["embedding"] for d in openai.json()["data"]], want, atol=1e-5)


def test_by_default_a_lone_request_runs_at_once_and_requests_gather_while_a_batch_runs(
        functions: Path) -> None:
    # max_wait_ms 0 (the default): no timer; the load alone decides how big a batch is
    async def scenario() -> tuple[list[httpx.Response], list[int]]:
        async with serving(functions) as (client, server):
            original, sizes = server.engine.run, []
            started, release = threading.Event(), threading.Event()

            def blocking_run(names: Any, texts: list[str]) -> Any:
                sizes.append(len(texts))
                started.set()
                release.wait(30)  # the first batch holds the worker until the others queue
                return original(names, texts)

            server.engine.run = blocking_run
            first = asyncio.create_task(client.post("/v1/functions/sentiment",
                                                    json={"inputs": ["first"]}))
            assert await asyncio.to_thread(started.wait, 30)  # ran with nobody else queued
            others = [asyncio.create_task(client.post("/v1/functions/sentiment",
                                                      json={"inputs": [text]}))
                      for text in ("second", "third", "fourth")]
            while server.batcher.queued < 3:
                await asyncio.sleep(0.01)
            release.set()
            return await asyncio.gather(first, *others), sizes

    responses, sizes = run(scenario)
    assert [r.status_code for r in responses] == [200] * 4
    assert sizes == [1, 3]


def test_a_request_that_fails_in_its_batch_fails_alone(functions: Path) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(functions, max_wait_ms=200) as (client, server):
            original = server.engine.run

            def run_unless_poisoned(names: Any, texts: list[str]) -> Any:
                if "the food was poison" in texts:
                    raise DataError("the food was poison: rejected by the function")
                if "the room was cursed" in texts:
                    raise RuntimeError("a bug")
                return original(names, texts)

            server.engine.run = run_unless_poisoned
            bodies = [["lovely hotel"], ["the food was poison"], ["the staff was rude"],
                      ["the room was cursed"]]
            return await asyncio.gather(*[client.post("/v1/functions/sentiment",
                                                      json={"inputs": b}) for b in bodies])

    fine, poisoned, also_fine, buggy = run(scenario)
    assert fine.status_code == also_fine.status_code == 200
    assert "rejected by the function" in error_of(poisoned, 422)["message"]
    assert error_of(buggy, 500)["type"] == "internal"


def test_call_options_are_passed_and_unknown_ones_rejected(functions: Path) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            return [await client.post(f"/v1/functions/{name}", json=body) for name, body in (
                ("topic", {"inputs": TEXTS, "options": {"labels": ["hotel", "staff"]}}),
                ("topic", {"inputs": TEXTS, "options": {"labels": ["hotel"], "k": 3}}),
                ("sentiment", {"inputs": TEXTS, "options": {"threshold": 0.5}}),
                ("topic", {"inputs": TEXTS, "options": {"labels": 7}}))]

    relabelled, unknown, no_options, wrong_type = run(scenario)
    outputs = relabelled.json()["outputs"]
    assert len(outputs) == 3 and set(outputs[0]["scores"]) == {"hotel", "staff"}
    error = error_of(unknown, 422)
    assert error["field"] == "options.k" and "labels" in error["message"]
    assert error_of(no_options, 422)["field"] == "options.threshold"
    assert wrong_type.status_code == 422


def test_embeddings_have_the_openai_shape(functions: Path, tiny_backbone: Path) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            return [await client.post("/v1/embeddings", json=body) for body in (
                {"model": "vectors", "input": TEXTS},
                {"model": "vectors", "input": TEXTS[0], "encoding_format": "base64"},
                {"model": str(tiny_backbone), "input": TEXTS, "user": "someone"},
                {"model": "nothing", "input": TEXTS},
                {"model": "sentiment", "input": TEXTS},
                {"model": "vectors", "input": TEXTS, "dimensions": 3},
                {"model": "vectors", "input": [[1, 2, 3]]},
                {"model": "vectors", "input": ["ok", " "]},
                {"model": "vectors", "input": []},
                {"model": "vectors", "input": TEXTS, "dimensions": "32"},
                {"model": "vectors", "input": TEXTS, "dimensions": True})]

    (floats, encoded, backbone, unknown, not_embed, dimensions, tokens, blank, empty,
     as_text, as_bool) = run(scenario)
    body = floats.json()
    assert body["object"] == "list" and body["model"] == "vectors"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert body["data"][0]["object"] == "embedding"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(TEXTS)
    want = funcformer.load(functions / "vectors").encode(TEXTS)
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    np.testing.assert_allclose(struct.unpack(f"<{len(raw) // 4}f", raw), want[0], atol=1e-5)
    untrained = np.array([d["embedding"] for d in backbone.json()["data"]])
    np.testing.assert_allclose(untrained, funcformer.embed(TEXTS, backbone=tiny_backbone),
                               atol=1e-5)
    assert "vectors" in error_of(unknown, 404)["message"]
    assert error_of(not_embed, 422)["field"] == "model"
    assert error_of(dimensions, 422)["field"] == "dimensions"
    error = error_of(tokens, 422)  # it named the union branch: 'input.str'
    assert error["field"] == "input" and "expected a text or a non-empty list" in error["message"]
    assert error_of(blank, 422)["field"] == "input.1"  # OpenAI's name for the texts
    assert error_of(empty, 422)["field"] == "input"  # was 200 with no data
    assert len(body["data"][0]["embedding"]) == 32  # the right size, but not a number:
    assert error_of(as_text, 422)["field"] == "dimensions"  # was read as 32
    assert error_of(as_bool, 422)["field"] == "dimensions"


def test_bad_requests_get_422_naming_the_field(functions: Path) -> None:
    cases = [(b'{"inputs": ["ok",', "body"), (b'{"options": {}}', "inputs"),
             (b'{"inputs": "one text"}', "inputs"), (b'{"inputs": []}', "inputs"),
             (b'{"inputs": ["ok"], "extra": 1}', "extra"),
             (b'{"inputs": ["ok", " "]}', "inputs.1"), (b'{"inputs": [5]}', "inputs.0"),
             (b'{"inputs": ["ok"], "' + b"k" * 20_000 + b'": 1}', "k" * 80 + "...")]

    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            # no content type, as `curl -d` would send a form's: still read as JSON
            return [await client.post("/v1/functions/sentiment", content=body)
                    for body, _ in cases]

    responses = run(scenario)
    for (body, field), response in zip(cases, responses, strict=True):
        assert error_of(response, 422)["field"] == field, body
    # the message speaks of the request's inputs, not of a Python list
    assert error_of(responses[5], 422)["message"].startswith("inputs.1, field 'text': the text "
                                                            "is empty")


def test_hostile_inputs_get_4xx_never_500(functions: Path) -> None:
    """Each of these was a 500 (or a silent wrong answer) before; found by probing a live
    server with nested, non-Unicode and oversized input."""
    deep = b'{"inputs": [' + b"[" * 500 + b'"a"' + b"]" * 500 + b"]}"
    labels = [f"l{i}" for i in range(3000)]
    cases = [  # (path, body, status, field or None, words in the message)
        ("sentiment", deep, 422, "inputs.0", "nested more than 8 deep"),
        ("sentiment", b'{"inputs": ["ok", "\\ud800"]}', 422, "inputs.1", "lone surrogate"),
        ("sentiment", b'{"inputs": ["ok"], "options": {"\\ud800": 1}}', 422, None,
         "not an option"),
        ("sentiment", b'{"inputs": ["\xff\xfe"]}', 422, "body", "cannot be read as JSON"),
        ("topic", {"inputs": ["ok"], "options": {"labels": labels}}, 413, "options",
         "3,001 names and values, over the limit of 256"),
        ("topic", {"inputs": ["ok"], "options": {"labels": ["food", "x" * 10_001]}}, 413,
         "options", "a value of 10,001 characters"),
        ("topic", {"inputs": ["ok"], "options": {"labels": "food"}}, 422, "options.labels",
         "must be a list of names"),
        ("topic", {"inputs": ["ok"], "options": {"labels": ["a", "a"]}}, 422, "options.labels",
         "'a' is given twice"),
        ("topic", {"inputs": ["ok"], "options": {"labels": {"a": "x", "b": None}}}, 422,
         "options.labels", "descriptions must be strings"),  # was the description "None"
        ("vectors", {"inputs": ["ok"], "options": {"normalize": True}}, 422, "options.normalize",
         "not an option of embed functions"),
    ]

    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            out = []
            for name, body, *_ in cases:
                given = {"json": body} if isinstance(body, dict) else {"content": body}
                out.append(await client.post(f"/v1/functions/{name}", **given))
            # a string body from a browser's fetch arrives as text/plain: read as JSON too
            out.append(await client.post("/v1/functions/sentiment", content=b'{"inputs": ["ok"]}',
                                         headers={"Content-Type": "text/plain;charset=UTF-8"}))
            out.append(await client.get("/v1/functions/sentiment"))
            return out

    *responses, plain, method = run(scenario)
    for (name, _, status, field, words), response in zip(cases, responses, strict=True):
        error = error_of(response, status)
        assert words in error["message"], (name, error)
        if field is not None:
            assert error["field"] == field, (name, error)
    assert plain.status_code == 200, plain.text
    assert error_of(method, 405) and method.headers["allow"] == "POST"


def test_unknown_functions_and_routes_get_404(functions: Path) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            return [await client.post("/v1/functions/nope", json={"inputs": TEXTS}),
                    await client.get("/v2/anything"),
                    await client.get("/v1/functions/sentiment"),
                    await client.post("/v1/functions/" + "x" * 20_000, json={"inputs": TEXTS})]

    unknown, route, method, long = run(scenario)
    assert "sentiment" in error_of(unknown, 404)["message"]  # says what there is
    assert len(error_of(long, 404)["message"]) < 300  # the name is not echoed in full
    assert error_of(route, 404)["type"] == "not_found"
    assert error_of(method, 405)["type"] == "method_not_allowed"


def test_api_key_is_required_except_for_probes_and_docs(functions: Path) -> None:
    call = {"inputs": TEXTS}

    async def scenario() -> list[httpx.Response]:
        async with serving(functions, api_key="s3cret") as (client, _):
            post = client.post
            return [await post("/v1/functions/sentiment", json=call),
                    await post("/v1/functions/sentiment", json=call,
                               headers={"Authorization": "Bearer wrong"}),
                    await post("/v1/functions/nope", json=call),
                    await client.get("/metrics"),
                    await post("/v1/functions/sentiment", json=call,
                               headers={"Authorization": "Bearer s3cret"}),
                    await post("/v1/functions/sentiment", json=call,
                               headers={"X-API-Key": "s3cret"}),
                    await client.get("/healthz"), await client.get("/readyz"),
                    await client.get("/openapi.json")]

    missing, wrong, unknown, metrics, *allowed = run(scenario)
    for response in (missing, wrong, unknown, metrics):
        assert error_of(response, 401)["type"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert [r.status_code for r in allowed] == [200] * 5


def test_size_limits_give_413_with_the_limit(functions: Path) -> None:
    limits = Limits(max_body_bytes=2_000, max_inputs=4, max_chars=100)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"inputs": ["'
        for _ in range(30):
            yield b"x" * 100
        yield b'"]}'

    async def scenario() -> list[httpx.Response]:
        async with serving(functions, limits=limits) as (client, _):
            post = client.post
            return [await post("/v1/functions/sentiment", json={"inputs": ["x" * 3_000]}),
                    await post("/v1/functions/sentiment", content=chunks()),
                    await post("/v1/functions/sentiment", json={"inputs": ["ok"] * 5}),
                    await post("/v1/functions/sentiment", json={"inputs": ["ok", "x" * 101]}),
                    await post("/v1/embeddings", json={"model": "vectors",
                                                        "input": ["ok"] * 5})]

    body, streamed, count, chars, embeddings = run(scenario)
    assert "2,000 bytes (--max-body-bytes)" in error_of(body, 413)["message"]
    assert "2,000 bytes" in error_of(streamed, 413)["message"]
    assert "limit of 4 per request (--max-inputs)" in error_of(count, 413)["message"]
    error = error_of(chars, 413)
    assert error["field"] == "inputs.1"
    assert "limit of 100 per input (--max-chars)" in error["message"]
    assert "limit of 4" in error_of(embeddings, 413)["message"]


def test_a_full_queue_gives_429_with_retry_after(functions: Path) -> None:
    limits = Limits(max_inputs=2, max_queue=2)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with serving(functions, limits=limits, max_wait_ms=1000) as (client, _):
            first = asyncio.ensure_future(client.post("/v1/functions/sentiment",
                                                      json={"inputs": TEXTS[:2]}))
            await asyncio.sleep(0.1)  # the first waits for company in the queue
            second = await client.post("/v1/functions/sentiment", json={"inputs": ["ok"]})
            return await first, second

    first, second = run(scenario)
    assert first.status_code == 200
    assert "limit 2, --max-queue" in error_of(second, 429)["message"]
    assert second.headers["retry-after"] == "1"


def test_a_function_that_failed_to_load_gets_503_and_the_others_serve(functions: Path) -> None:
    (functions / "broken").mkdir()
    (functions / "broken" / "funcformer.json").write_text("{not json", "utf-8")

    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            return [await client.post("/v1/functions/broken", json={"inputs": TEXTS}),
                    await client.post("/v1/functions/sentiment", json={"inputs": TEXTS}),
                    await client.get("/v1/functions"), await client.get("/readyz")]

    broken, working, listed, ready = run(scenario)
    assert "not valid JSON" in error_of(broken, 503)["message"]
    assert working.status_code == 200
    entry = next(f for f in listed.json()["functions"] if f["name"] == "broken")
    assert entry["status"] == "failed" and "not valid JSON" in entry["error"]
    assert ready.json() == {"status": "ready", "functions": 4, "failed": 1}


def test_not_ready_until_loaded(functions: Path) -> None:
    async def scenario() -> list[httpx.Response]:
        app = create_app(functions)  # lifespan not started: nothing loaded yet
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://localhost") as client:
            return [await client.get("/readyz"), await client.get("/healthz"),
                    await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})]

    ready, healthy, call = run(scenario)
    assert ready.status_code == 503 and healthy.json() == {"status": "ok"}
    assert error_of(call, 503)["type"] == "loading" and call.headers["retry-after"] == "1"


def test_an_update_serves_new_requests_while_queued_ones_finish_on_the_old(
        functions: Path) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response, list[str]]:
        async with serving(functions, max_wait_ms=1500) as (client, server):
            queued = asyncio.ensure_future(client.post("/v1/functions/sentiment",
                                                       json={"inputs": TEXTS}))
            await asyncio.sleep(0.1)
            funcformer.load(functions / "polarity").save(functions / "sentiment")
            await server.registry.scan()
            assert server.batcher.queued == len(TEXTS)  # swapped while the first still waits
            fresh = await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})
            old = await queued
            return old, fresh, server.engine.names

    old, fresh, engine_names = run(scenario)
    assert {o["label"] for o in old.json()["outputs"]} <= {"negative", "positive"}
    assert {o["label"] for o in fresh.json()["outputs"]} <= {"bad", "good"}
    assert len([n for n in engine_names if n.startswith("sentiment#")]) == 1  # old one dropped


def test_a_broken_update_is_reported_and_the_old_version_keeps_serving(
        functions: Path) -> None:
    async def scenario() -> list[Any]:
        async with serving(functions) as (client, server):
            (functions / "sentiment" / "funcformer.json").write_text("{", "utf-8")
            await server.registry.scan()
            out = [await client.get("/v1/functions"),
                   await client.post("/v1/functions/sentiment", json={"inputs": TEXTS}),
                   (await client.get("/metrics")).text]
            funcformer.load(functions / "polarity").save(functions / "sentiment")
            await server.registry.scan()
            return [*out, await client.get("/v1/functions")]

    broken, served, metrics, repaired = run(scenario)
    entry = next(f for f in broken.json()["functions"] if f["name"] == "sentiment")
    assert entry["status"] == "ready" and "not valid JSON" in entry["error"]
    assert entry["labels"] == ["negative", "positive"]
    assert served.status_code == 200
    assert metric(metrics, "funcformer_artifact_loads_total", result="failed") == 1
    entry = next(f for f in repaired.json()["functions"] if f["name"] == "sentiment")
    assert entry["error"] is None and entry["labels"] == ["bad", "good"]


def test_a_function_saved_over_while_it_loads_is_loaded_again(functions: Path,
                                                              artifacts: Path) -> None:
    # the load could read one save's manifest and the next one's weights: that mix served
    # (and filled the result cache under the wrong digest) until the next scan
    async def scenario() -> list[list[str]]:
        async with serving(functions) as (client, server):
            registry, read = server.registry, server.registry._read

            def saved_over_meanwhile(path: Path, task: str) -> Any:
                loaded = read(path, task)
                registry._read = read
                shutil.rmtree(path)
                shutil.copytree(artifacts / "sentiment", path)
                return loaded

            registry._read = saved_over_meanwhile
            funcformer.load(functions / "polarity").save(functions / "sentiment")
            labels = []
            for _ in range(2):
                await registry.scan()
                response = await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})
                labels.append(sorted(response.json()["outputs"][0]["scores"]))
            return labels

    assert run(scenario) == [["negative", "positive"]] * 2


@pytest.mark.parametrize("harm, says", [("cut", "head.safetensors: cannot be read"),
                                         ("delete", "head.safetensors: gone")])
def test_a_harmed_weight_file_under_an_unchanged_manifest_is_reported(
        functions: Path, tmp_path: Path, harm: str, says: str) -> None:
    """The manifest's digest is the same, so the loaded copy keeps serving; but a restart
    would fail to load it, so /v1/functions says so (it said ready, no error)."""
    head = functions / "sentiment" / "head.safetensors"
    whole = head.read_bytes()

    async def scenario() -> list[Any]:
        async with serving(functions) as (client, server):
            if harm == "cut":
                head.write_bytes(whole[:-8])
            else:
                head.rename(tmp_path / "head.safetensors")
            await server.registry.scan()
            out = [await client.get("/v1/functions"),
                   await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})]
            head.write_bytes(whole)
            await server.registry.scan()
            return [*out, await client.get("/v1/functions")]

    harmed, served, mended = run(scenario)
    entry = next(f for f in harmed.json()["functions"] if f["name"] == "sentiment")
    assert entry["status"] == "ready" and says in entry["error"]
    assert served.status_code == 200
    entry = next(f for f in mended.json()["functions"] if f["name"] == "sentiment")
    assert entry["error"] is None


def test_the_poller_picks_up_new_and_removed_functions(functions: Path) -> None:
    async def until(check: Any) -> None:
        for _ in range(100):
            if await check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("not picked up within 5 s")

    async def scenario() -> None:
        async with serving(functions, reload_interval=0.05) as (client, _):
            async def status(name: str) -> int:
                response = await client.post(f"/v1/functions/{name}", json={"inputs": TEXTS})
                return response.status_code

            shutil.copytree(functions / "polarity", functions / "added")
            await until(lambda: _equals(status("added"), 200))
            shutil.rmtree(functions / "polarity")
            await until(lambda: _equals(status("polarity"), 404))

    run(scenario)


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected


def test_metrics_count_requests_batches_queue_and_cache(functions: Path) -> None:
    async def scenario() -> tuple[str, str]:
        async with serving(functions) as (client, _):
            await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})
            before = (await client.get("/metrics")).text
            await client.post("/v1/functions/sentiment", json={"inputs": TEXTS})
            await client.post("/v1/functions/nope", json={"inputs": TEXTS})
            await client.post("/v1/functions/sentiment", json={"inputs": []})  # fails schema
            sent: list[dict[str, Any]] = []

            async def gone() -> dict[str, Any]:  # the client left before its body arrived
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await client._transport.app(  # type: ignore[attr-defined]
                {"type": "http", "method": "POST", "path": "/v1/functions/sentiment",
                 "headers": [(b"host", b"localhost")], "query_string": b""}, gone, send)
            assert not sent  # nothing to answer
            return before, (await client.get("/metrics")).text

    before, after = run(scenario)
    hits = (metric(after, "funcformer_cache_hits_total")
            - metric(before, "funcformer_cache_hits_total"))
    assert hits == len(TEXTS)  # the repeated request came from the result cache
    assert metric(after, "funcformer_requests_total", function="sentiment", status="200") == 2
    assert metric(after, "funcformer_requests_total", function="-", status="404") == 1
    # rejected before its route ran, still counted under the function it named
    assert metric(after, "funcformer_requests_total", function="sentiment", status="422") == 1
    # gone before any answer: 499 (nginx's "client closed request"), not a status of "0"
    assert metric(after, "funcformer_requests_total", function="sentiment", status="499") == 1
    assert metric(after, "funcformer_batch_inputs_sum") == 2 * len(TEXTS)
    assert metric(after, "funcformer_queue_inputs") == 0
    assert metric(after, "funcformer_functions", status="ready") == 4


def test_openapi_docs_are_served(functions: Path) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with serving(functions) as (client, _):
            return await client.get("/docs"), await client.get("/openapi.json")

    async def keyed() -> dict[str, Any]:
        async with serving(functions, api_key="s3cret") as (client, _):
            return (await client.get("/openapi.json")).json()

    docs, schema = run(scenario)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert {"/v1/functions", "/v1/functions/{name}", "/v1/embeddings", "/healthz", "/readyz",
            "/metrics"} <= set(schema.json()["paths"])
    assert "securitySchemes" not in schema.json().get("components", {})
    guarded = run(keyed)  # /docs's 'Authorize' sends the key ('Try it out' got 401 without)
    assert set(guarded["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    paths = guarded["paths"]
    assert paths["/v1/functions/{name}"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" in paths["/metrics"]["get"] and "security" not in paths["/healthz"]["get"]


def test_embeddings_of_a_manifests_backbone_name_never_go_online(
        functions: Path, tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --runtime onnx no backbone is loaded, so the first /v1/embeddings request for a
    backbone a served manifest names loaded it by that name: online, from a hub, when the name
    was not here (then a 500). A manifest's name must not make the server fetch weights."""
    pytest.importorskip("onnxruntime")
    import huggingface_hub

    path = functions / "plain"  # a head function: it references its backbone by name
    funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method="head",
                     epochs=2, progress=False).save(path)
    funcformer.load(path).export_onnx(path)
    manifest = json.loads((path / "funcformer.json").read_text("utf-8"))
    manifest["backbone"]["name"] = "attacker-org/evil-model"
    (path / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    calls: list[dict[str, Any]] = []

    def snapshot_download(*args: Any, **kwargs: Any) -> str:
        calls.append(kwargs)
        raise OSError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    async def scenario() -> httpx.Response:
        async with serving(functions, runtime="onnx") as (client, _):
            return await client.post("/v1/embeddings", json={"model": "attacker-org/evil-model",
                                                             "input": "hi"})

    answer = run(scenario)
    assert error_of(answer, 503)["type"] == "unavailable"
    assert "attacker-org/evil-model" in error_of(answer, 503)["message"]
    assert calls and all(call.get("local_files_only") for call in calls)


def test_docs_pages_load_nothing_from_the_internet(functions: Path) -> None:
    """/docs and /redoc work on a host with no internet: every script, style sheet, font and
    icon they name is served here (FastAPI's defaults load them from a CDN), without the API
    key, and only the files of that fixed list are."""
    async def scenario() -> tuple[list[httpx.Response], dict[str, httpx.Response], list[Any]]:
        async with serving(functions, api_key="s3cret") as (client, _):
            pages = [await client.get("/docs"), await client.get("/redoc"),
                     await client.get("/docs/oauth2-redirect")]
            named = {url for page in pages[:2]
                     for url in re.findall(r"(?:src|href|url)\s*[=:(]\s*['\"]([^'\"]+)['\"]",
                                           page.text)}
            fetched = {url: await client.get(url) for url in named}
            others = [await client.get("/docs/assets/%2e%2e/openapi.json"),
                      await client.get("/docs/assets/index.html")]
            return pages, fetched, others

    pages, fetched, (escaped, unlisted) = run(scenario)
    assert [page.status_code for page in pages] == [200, 200, 200]
    assert not re.search(r"https?://", pages[0].text + pages[1].text)  # no CDN, no Google Fonts
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css",
            "/docs/assets/redoc.standalone.js", "/openapi.json"} <= set(fetched)
    for url, response in fetched.items():
        assert response.status_code == 200 and len(response.content) > 1000, url
    js = fetched["/docs/assets/swagger-ui-bundle.js"]
    assert js.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in js.text
    assert fetched["/docs/assets/swagger-ui.css"].headers["content-type"].startswith("text/css")
    assert error_of(escaped, 401)["type"] == "unauthorized"  # not an open path: no file either
    assert error_of(unlisted, 401)["type"] == "unauthorized"


def test_docs_pages_behind_a_proxy_prefix(functions: Path) -> None:
    """Behind a proxy that mounts the server under a prefix (root_path), the pages name their
    files under it, with no double slash for a prefix given with a trailing one."""
    from starlette.testclient import TestClient

    app = create_app(functions, reload_interval=0)
    with TestClient(app, root_path="/api/", base_url="http://localhost") as client:
        page = client.get("/docs").text + client.get("/redoc").text
    assert "/api/docs/assets/swagger-ui-bundle.js" in page and "/api/openapi.json" in page
    assert "/api/docs/assets/redoc.standalone.js" in page and "//" not in page.replace("://", "")


@pytest.mark.parametrize("root", ["", "/api", "/api/", "/"])
@pytest.mark.parametrize("route", ["/healthz", "/v1/functions/x", "", "x", "/"])
def test_the_guard_strips_a_root_path_as_starlette_routes(root: str, route: str) -> None:
    """uvicorn builds the path as root_path + path: with --root-path /api/ a request for
    /healthz is '/api//healthz', which Starlette routes to /healthz."""
    from starlette._utils import get_route_path

    from funcformer._server import route_path

    for path in (root + route, "/apix" + route, route):
        scope = {"path": path, "root_path": root}
        assert route_path(scope) == get_route_path(scope), scope


def test_behind_a_proxy_prefix_the_guard_sees_the_route(functions: Path) -> None:
    """uvicorn --root-path /api puts '/api/healthz' in the request's path: the Guard compared
    that with its open paths and '/v1/' (so the probes needed the key, and a text/plain body
    was not read as JSON, nor counted in the metrics)."""
    from starlette.testclient import TestClient

    app = create_app(functions, reload_interval=0, api_key="s3cret")
    with TestClient(app, root_path="/api", base_url="http://localhost") as client:
        for _ in range(600):  # the functions load in the background
            if client.get("/api/readyz").status_code == 200:
                break
            time.sleep(0.05)
        health = client.get("/api/healthz")
        called = client.post("/api/v1/functions/sentiment", content=json.dumps({"inputs": TEXTS}),
                             headers={"X-API-Key": "s3cret", "Content-Type": "text/plain"})
        refused = client.post("/api/v1/functions/sentiment", json={"inputs": TEXTS})
        metrics = client.get("/api/metrics", headers={"X-API-Key": "s3cret"}).text
    assert health.status_code == 200
    assert called.status_code == 200, called.text
    assert error_of(refused, 401)["type"] == "unauthorized"
    assert 'funcformer_requests_total{function="sentiment",status="200"} 1.0' in metrics


def test_docs_without_fastapi_offline_fall_back_to_the_cdn(
        functions: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fastapi_offline" else find_spec(name, *a))

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with serving(functions) as (client, _):
            return await client.get("/docs"), await client.get("/docs/assets/swagger-ui.css")

    with caplog.at_level(logging.WARNING, logger="funcformer.server"):
        docs, asset = run(scenario)
    assert docs.status_code == 200 and "cdn.jsdelivr.net" in docs.text  # FastAPI's own page
    assert asset.status_code == 404
    assert "install 'funcformer[server]'" in caplog.text


def test_settings_are_checked(functions: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="max_queue"):
        Limits(max_inputs=10, max_queue=5)
    with pytest.raises(DataError, match="no such directory"):
        create_app(tmp_path / "missing")
    with pytest.raises(DataError, match="runtime"):
        create_app(functions, runtime="tensorrt")
    with pytest.raises(DataError, match="Unknown dtype 'int4'"):
        create_app(functions, dtype="int4")
    with pytest.raises(DataError, match="applies to the torch runtime"):
        create_app(functions, runtime="onnx", dtype="bfloat16")
    with pytest.raises(DataError, match="device 'cuda' applies to the torch runtime; runtime "
                                        "'onnx' runs the ONNX export on the CPU"):
        create_app(functions, runtime="onnx", device="cuda")
    with pytest.raises(TaskError, match="device 'tpu' is not a torch device"):
        create_app(functions, device="tpu")
    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    check_binding("0.0.0.0", "key")
    with pytest.raises(DataError, match="without an API key"):
        check_binding("0.0.0.0", None)


def test_a_missing_extra_names_the_pip_line(functions: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now fails
    with pytest.raises(MissingExtra, match=r"pip install 'funcformer\[server\]'"):
        create_app(functions)


def test_serve_refuses_a_public_address_without_a_key(
        functions: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNCFORMER_API_KEY", raising=False)
    assert run_cli("serve", functions, "--host", "0.0.0.0") == 1
    err = capsys.readouterr().err
    assert "Refusing to listen on 0.0.0.0 without an API key" in err
    assert "Traceback" not in err
    for key in (" ", " s3cret"):  # headers arrive stripped: such a key could never match
        assert run_cli("serve", functions, "--api-key", key) == 1
        assert "API key is empty or starts or ends with whitespace" in capsys.readouterr().err
    assert run_cli("serve", functions, "--cors-origin", "*") == 1
    assert "--cors-origin '*' lets every web page call the server" in capsys.readouterr().err
    assert run_cli("serve", "--help") == 0
    out = capsys.readouterr().out
    assert "--max-batch-tokens" in out and "--cors-origin" in out


@pytest.mark.parametrize(("device", "says"), [
    ("tpu", "device 'tpu' is not a torch device"),
    pytest.param("cuda", "device 'cuda': this machine", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a GPU"))])
def test_serve_refuses_an_unusable_device_before_binding(
        functions: Path, device: str, says: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def bound(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "Server", bound)
    assert run_cli("serve", functions, "--device", device) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and "Fix: " in err, err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(check: Any, seconds: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_sighup_reloads_and_sigterm_drains_then_exits_zero(functions: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("FUNCFORMER_API_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "funcformer", "serve", str(functions), "--port", str(port),
         "--max-wait-ms", "1500", "--reload-interval", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 90, process)
        shutil.copytree(functions / "polarity", functions / "added")
        process.send_signal(signal.SIGHUP)
        names = lambda: [f["name"] for f in httpx.get(f"{url}/v1/functions").json()["functions"]]  # noqa: E731
        _wait_for(lambda: "added" in names(), 30, process)
        answers: list[httpx.Response] = []
        request = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/functions/added", json={"inputs": TEXTS}, timeout=30)))
        request.start()
        time.sleep(0.5)  # the request now waits in the queue (max wait 1.5 s)
        process.send_signal(signal.SIGTERM)
        request.join(30)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.communicate()[1]
    assert answers and answers[0].status_code == 200, stderr
    assert {o["label"] for o in answers[0].json()["outputs"]} <= {"bad", "good"}
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_without_a_key_only_this_machine_and_its_pages_are_answered(functions: Path) -> None:
    """A server with no API key listens on loopback, but a web page the user visits could
    still reach it: a text/plain POST needs no CORS preflight (so any site could run the
    functions), and a page that rebinds its own name to 127.0.0.1 could read the answers.
    Without a key, another Host or a foreign Origin gets 403; probes stay open."""
    call = {"inputs": TEXTS}

    async def scenario() -> list[httpx.Response]:
        async with serving(functions) as (client, _):
            post = client.post
            out = [await post("/v1/functions/sentiment", content=b'{"inputs": ["a"]}',
                              headers={"Origin": "https://evil.example",
                                       "Content-Type": "text/plain"}),
                   await post("/v1/functions/sentiment", json=call,
                              headers={"Origin": "null"}),
                   await client.get("/v1/functions", headers={"Host": "evil.example:8000"}),
                   await client.get("/metrics", headers={"Host": "x" * 500}),
                   # every header counts (Starlette reads the first, a dict the last)
                   await client.get("/v1/functions", headers=[("Host", "evil.example"),
                                                              ("Host", "localhost")]),
                   await client.get("/v1/functions", headers={"Host": "localhost:80@evil"})]
            allowed = [await post("/v1/functions/sentiment", json=call),
                       await post("/v1/functions/sentiment", json=call,
                                  headers={"Origin": "http://localhost:3000"}),
                       await client.get("/v1/functions", headers={"Host": "127.0.0.1:8000"}),
                       await client.get("/v1/functions", headers={"Host": "[::1]:8000"}),
                       await client.get("/healthz", headers={"Host": "evil.example"})]
            return out + allowed

    async def keyed() -> httpx.Response:
        async with serving(functions, api_key="s3cret") as (client, _):
            return await client.post("/v1/functions/sentiment", json=call, headers={
                "Host": "api.example.com", "Origin": "https://app.example.com",
                "X-API-Key": "s3cret"})

    *refused, ok, page, v4, v6, probe = run(scenario)
    for response in refused:
        assert error_of(response, 403)["type"] == "forbidden"
        assert len(response.text) < 600  # a long header is not echoed in full
    assert "evil.example" in error_of(refused[0], 403)["message"]
    assert "--api-key" in error_of(refused[2], 403)["message"]
    assert [r.status_code for r in (ok, page, v4, v6, probe)] == [200] * 5
    assert run(keyed).status_code == 200  # with a key, the key decides


def test_an_empty_api_key_is_refused_not_taken_for_none(
        functions: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--api-key "$KEY"` with KEY unset served with no key at all."""
    with pytest.raises(DataError, match="API key is empty"):
        create_app(functions, api_key="")
    monkeypatch.delenv("FUNCFORMER_API_KEY", raising=False)
    assert run_cli("serve", functions, "--api-key", "") == 1
    assert "API key is empty" in capsys.readouterr().err
    monkeypatch.setenv("FUNCFORMER_API_KEY", "")
    assert run_cli("serve", functions) == 1
    assert "API key is empty" in capsys.readouterr().err


def test_request_edges_answer_in_json_with_the_fix(functions: Path) -> None:
    """A long unknown option name got a 422 quoting it twice (1.8 MB for a 0.9 MB name);
    text/json bodies were not read as JSON; a trailing slash got a 307 to a URL built from
    the Host header; HEAD /healthz got 405."""
    limits = Limits(max_chars=1_000)

    async def scenario() -> list[httpx.Response]:
        async with serving(functions, limits=limits) as (client, _):
            post = client.post
            return [await post("/v1/functions/topic",
                               json={"inputs": ["x"], "options": {"a" * 5_000: 1}}),
                    await post("/v1/functions/topic",
                               json={"inputs": ["x"], "options": {"b" * 900: 1}}),
                    await post("/v1/functions/sentiment", content=b'{"inputs": ["good"]}',
                               headers={"Content-Type": "text/json"}),
                    await post("/v1/functions/sentiment", content=b'{"inputs": ["good"]}',
                               headers={"Content-Type": "application/x-ndjson"}),
                    await post("/v1/functions/sentiment/", json={"inputs": ["good"]}),
                    await client.head("/healthz")]

    long, unknown, text_json, ndjson, slash, head = run(scenario)
    assert error_of(long, 413)["type"] == "too_large" and len(long.text) < 600
    assert error_of(unknown, 422)["field"] == "options." + "b" * 80 + "..."
    assert len(unknown.text) < 1_000
    assert text_json.status_code == ndjson.status_code == 200, text_json.text
    error = error_of(slash, 404)
    assert "POST /v1/functions/sentiment/" in error["message"]
    assert "POST /v1/functions/{name}" in error["message"]
    assert "location" not in slash.headers
    assert head.status_code == 200


def test_serving_a_function_folder_or_an_empty_one_is_said(
        functions: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DataError, match=r"is itself a function .* Fix: funcformer serve "):
        create_app(functions / "sentiment")
    (tmp_path / "empty").mkdir()
    create_app(tmp_path / "empty")
    assert "holds no functions yet" in caplog.text


def test_functions_not_yet_loaded_are_listed_as_loading(
        functions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At start-up the list showed the function being loaded and none of those after it."""
    from funcformer._serving import Registry

    seen: list[list[tuple[str, str]]] = []
    load = Registry._load

    async def spy(self: Registry, name: str, path: Path, slot: Any) -> None:
        seen.append([(f["name"], f["status"]) for f in self.describe()])
        await load(self, name, path, slot)

    monkeypatch.setattr(Registry, "_load", spy)

    async def scenario() -> None:
        async with serving(functions):
            pass

    run(scenario)
    names = sorted(p.name for p in functions.iterdir())
    assert [name for name, _ in seen[0]] == names
    assert {status for _, status in seen[0]} == {"loading"}
    assert [status for _, status in seen[-1]].count("ready") == len(names) - 1


def test_limits_name_their_flags() -> None:
    with pytest.raises(DataError, match=r"max_queue \(--max-queue\) 5 must be at least "
                                        r"max_inputs \(--max-inputs\) 10"):
        Limits(max_inputs=10, max_queue=5)
    with pytest.raises(DataError, match=r"Limits.max_generated_tokens "
                                        r"\(--max-generated-tokens\)"):
        Limits(max_generated_tokens=0)


def test_cors_origins_let_named_pages_call_from_a_browser(functions: Path) -> None:
    """OPTIONS got 405, so no browser page could call the server; --cors-origin names the
    pages that may (a preflight is answered, the answer carries the CORS header), also past
    the key-less guard, which still refuses other sites."""
    page = "http://localhost:3000"
    app_page = "https://app.example.com"

    async def scenario() -> list[httpx.Response]:
        async with serving(functions, cors_origins=[app_page, page]) as (client, _):
            return [await client.options("/v1/functions/sentiment", headers={
                        "Origin": app_page, "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type"}),
                    await client.post("/v1/functions/sentiment", json={"inputs": TEXTS},
                                      headers={"Origin": app_page}),
                    await client.post("/v1/functions/sentiment", json={"inputs": TEXTS},
                                      headers={"Origin": "https://evil.example"})]

    preflight, allowed, other = run(scenario)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == app_page
    assert allowed.status_code == 200 and \
        allowed.headers["access-control-allow-origin"] == app_page
    assert error_of(other, 403)["type"] == "forbidden"
    assert "--cors-origin" in error_of(other, 403)["message"]
    with pytest.raises(DataError, match=r"'\*' lets every web page .* no API key"):
        create_app(functions, cors_origins=["*"])
    create_app(functions, cors_origins=["*"], api_key="s3cret")
    for bad in ("app.example.com", "https://app.example.com/", "ftp://x", "https://x:443",
                "http://*.example.com", "http://a b", "https://user@x", "https://café.fr"):
        with pytest.raises(DataError, match="is not an origin"):
            create_app(functions, cors_origins=[bad])  # browsers never send these
    with pytest.raises(DataError, match="must be a list of origins"):
        create_app(functions, cors_origins=app_page)  # type: ignore[arg-type]
    create_app(functions, cors_origins=["HTTPS://App.Example.com"])  # taken lowercased


def test_cors_answers_chromiums_private_network_preflight(functions: Path) -> None:
    """A public page calling the loopback server: Chromium's preflight asks for private
    network access, and got 400 'Disallowed CORS private-network'."""
    async def scenario() -> httpx.Response:
        async with serving(functions, cors_origins=["https://app.example.com"]) as (client, _):
            return await client.options("/v1/functions/sentiment", headers={
                "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Private-Network": "true"})

    preflight = run(scenario)
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-private-network"] == "true"
