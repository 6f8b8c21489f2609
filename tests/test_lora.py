"""The `lora` method (PEFT adapter on a view of the shared backbone) and `auto`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import LoRA, TaskError, _lora
from funcformer import _backbone as bb
from funcformer._methods import choose
from tests.conftest import make_reviews, run_cli


@pytest.fixture()
def lora_fn(tiny_backbone: Path) -> funcformer.Function:
    return funcformer.train("classify", make_reviews(12), backbone=tiny_backbone, method="lora",
                            epochs=2, progress=False)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_view_shares_base_weights_and_leaves_backbone_alone(tiny_backbone: Path) -> None:
    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    view = _lora.view(shared.model, LoRA(r=4))
    base = dict(shared.model.named_parameters())
    for name, param in view.named_parameters():
        if "lora_" in name:
            assert param.requires_grad
            continue
        assert not param.requires_grad
        assert param.data_ptr() == base[name.replace(".base_layer", "")].data_ptr()
    assert all(p.requires_grad for p in shared.model.parameters())  # flags untouched
    targets = view.peft_config["default"].target_modules
    assert targets and all("attention" in t for t in targets)
    with torch.no_grad():
        for param in view.parameters():
            if param.requires_grad:
                param.add_(0.5)
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_feed_forward_and_explicit_targets(tiny_backbone: Path) -> None:
    model = bb.load(tiny_backbone).model
    attention = _lora.target_modules(model, LoRA())
    both = _lora.target_modules(model, LoRA(feed_forward=True))
    assert set(attention) < set(both) and any("intermediate" in t for t in both)
    assert all(t.endswith("query") for t in _lora.target_modules(model, LoRA(targets=["query"])))
    with pytest.raises(TaskError, match="no modules"):
        _lora.target_modules(model, LoRA(targets=["nope"]))
    with pytest.raises(TaskError, match="r >= 1"):
        LoRA(r=0)
    for settings, says in (({"r": "x"}, "r must be a whole number, got 'x'"),
                           ({"r": 4.0}, "r must be a whole number, got 4.0"),
                           ({"alpha": None}, "alpha must be a number, got None"),
                           ({"feed_forward": "yes"}, "feed_forward must be true or false")):
        with pytest.raises(TaskError, match=says):  # 'x' was an internal TypeError ('<')
            LoRA(**settings)


def test_lora_trains_saves_small_adapter_and_reloads(lora_fn: funcformer.Function,
                                                     tiny_backbone: Path,
                                                     tmp_path: Path) -> None:
    texts = [t for t, _ in make_reviews(3, seed=5)]
    expected = torch.softmax(lora_fn.logits(texts), -1)
    path = lora_fn.save(tmp_path / "fn")
    assert _files(path) == {"funcformer.json", "head.safetensors",
                            "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    manifest = json.loads((path / "funcformer.json").read_text())
    assert manifest["method"] == "lora" and manifest["backbone"]["included"] is False
    assert manifest["adapter"]["type"] == "lora" and manifest["adapter"]["r"] == 8
    loaded = funcformer.load(path, backbone=tiny_backbone)
    assert loaded.digest == lora_fn.digest
    assert torch.allclose(torch.softmax(loaded.logits(texts), -1), expected, atol=1e-5)
    merged = funcformer.load(path, backbone=tiny_backbone, merge_adapter=True)
    assert not _lora.is_view(merged.encoder)
    assert torch.allclose(torch.softmax(merged.logits(texts), -1), expected, atol=1e-4)
    # The adapter changed what the encoder computes; the shared backbone's output did not.
    shared = bb.load(tiny_backbone)
    plain, _ = shared.embed(texts)
    tuned, _ = shared.embed(texts, encoder=loaded.encoder)
    assert not torch.allclose(torch.from_numpy(plain), torch.from_numpy(tuned))


def test_many_lora_functions_share_one_backbone(lora_fn: funcformer.Function, tiny_backbone: Path,
                                                tmp_path: Path) -> None:
    path = lora_fn.save(tmp_path / "fn")
    loaded = [funcformer.load(path, backbone=tiny_backbone) for _ in range(3)]
    shared = bb.load(tiny_backbone)
    pointers = {p.data_ptr() for p in shared.model.parameters()}
    for fn in loaded:
        assert fn.backbone is shared
        base = [p for n, p in fn.encoder.named_parameters() if "lora_" not in n]
        assert {p.data_ptr() for p in base} <= pointers


def test_lora_config_object_and_multi_label(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [(t, [y] if i % 3 else [y, "other"]) for i, (t, y) in enumerate(make_reviews(10))]
    fn = funcformer.train("classify", rows, backbone=tiny_backbone, method=LoRA(r=2, alpha=4),
                          epochs=1, progress=False)
    assert fn.manifest.adapter["r"] == 2 and fn.manifest.config["lora"]["alpha"] == 4
    assert fn.task.multi_label
    again = funcformer.load(fn.save(tmp_path / "ml"), backbone=tiny_backbone)
    assert [p.labels for p in again(["good", "bad"])] == [p.labels for p in fn(["good", "bad"])]


def test_contrastive_with_lora_saves_only_an_adapter(tiny_backbone: Path, tmp_path: Path) -> None:
    fn = funcformer.train("classify", make_reviews(4), backbone=tiny_backbone,
                          method="contrastive", lora={"r": 4}, epochs=2, progress=False)
    path = fn.save(tmp_path / "c")
    assert "adapter/adapter_model.safetensors" in _files(path)
    assert not any(f.startswith("encoder/") for f in _files(path))
    assert funcformer.load(path, backbone=tiny_backbone)("good").label == fn("good").label


def test_damaged_adapter_is_a_clear_error(lora_fn: funcformer.Function, tiny_backbone: Path,
                                          tmp_path: Path) -> None:
    path = lora_fn.save(tmp_path / "fn")
    config = (path / "adapter" / "adapter_config.json").read_bytes()
    (path / "adapter" / "adapter_config.json").write_text("{", "utf-8")
    with pytest.raises(funcformer.ArtifactError, match=r"adapter_config\.json: cannot read the "
                                                       "adapter"):  # the file, not the folder
        funcformer.load(path, backbone=tiny_backbone)
    (path / "adapter" / "adapter_config.json").write_bytes(config)
    (path / "adapter" / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(funcformer.ArtifactError, match=r"adapter_model\.safetensors: cannot "
                                                       r"read .* Fix: copy the function again"):
        funcformer.load(path, backbone=tiny_backbone)
    (path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(funcformer.ArtifactError, match="missing"):
        funcformer.load(path, backbone=tiny_backbone)


def test_lora_settings_with_a_method_that_ignores_them_are_refused(tiny_backbone: Path) -> None:
    # method='head' trained on frozen features and dropped lora= without a word
    for method in ("head", "full"):
        with pytest.raises(funcformer.TaskError, match=f"'{method}' does not use them. Fix: "
                                                       "drop lora= or use method='lora'"):
            funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method=method,
                             lora={"r": 2}, progress=False)


def test_auto_with_lora_settings_trains_lora(tiny_backbone: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # where auto chose head, the settings were dropped (then refused as not head's)
    monkeypatch.setattr("funcformer._methods.FEW_PER_CLASS", 0)
    monkeypatch.setattr("funcformer._methods.MEDIUM_EXAMPLES", 1)
    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, lora={"r": 2},
                          epochs=1, progress=False)
    assert fn.manifest.method == "lora"
    assert "LoRA settings" in fn.manifest.training["method_reason"]


def test_auto_lora_takes_the_adapter_measured_nearest_full(
        tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # auto's lora without settings: LoRA(r=16, feed_forward=True), which bench/lora.py measured
    # nearer `full` than LoRA(); lora asked for by name keeps LoRA(), and given settings win
    monkeypatch.setattr("funcformer._methods.FEW_PER_CLASS", 0)
    auto = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, epochs=1,
                            progress=True)
    assert auto.manifest.method == "lora" and auto.manifest.adapter["r"] == 16
    assert any(t.endswith("intermediate.dense") for t in auto.manifest.adapter["targets"])
    assert auto.manifest.config["lora"]["feed_forward"] is True
    assert auto.manifest.training["method_reason"].endswith("LoRA(r=16, feed_forward=True)")
    assert "method auto -> lora" in capsys.readouterr().err
    named = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method="lora",
                             epochs=1, progress=False)
    assert named.manifest.adapter["r"] == 8
    assert all("attention" in t for t in named.manifest.adapter["targets"])
    given = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, lora={"r": 2},
                             epochs=1, progress=False)
    assert given.manifest.method == "lora" and given.manifest.adapter["r"] == 2
    assert "LoRA(" not in given.manifest.training["method_reason"]


def test_merge_adapter_on_a_head_function_is_an_error(tiny_backbone: Path, tmp_path: Path) -> None:
    fn = funcformer.train("classify", make_reviews(5), backbone=tiny_backbone, method="head",
                          epochs=1, progress=False)
    with pytest.raises(TaskError, match="merge_adapter"):
        funcformer.load(fn.save(tmp_path / "h"), backbone=tiny_backbone, merge_adapter=True)


def test_lora_checkpoint_holds_only_trainable_weights(tiny_backbone: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    funcformer.train("classify", make_reviews(6), backbone=tiny_backbone, method="lora",
                     epochs=1, progress=False, checkpoint_dir=str(tmp_path / "ck"))
    saved = load_file(str(tmp_path / "ck" / "checkpoint" / "model.safetensors"))
    assert saved and all("lora_" in k or k.startswith("head.") for k in saved)


def test_auto_chooses_from_the_data() -> None:
    assert choose(["a"] * 8 + ["b"] * 8)[0] == "contrastive"
    assert choose(["a"] * 64 + ["b"] * 100)[0] == "contrastive"  # the smallest class decides
    assert choose(["a"] * 65 + ["b"] * 65)[0] == "lora"
    assert choose(["a"] * 500 + ["b"] * 500)[0] == "lora"
    assert choose(["a"] * 15_000 + ["b"] * 15_000)[0] == "head"
    assert choose(["a"] * 15_000 + ["b"] * 15_000, device="cuda")[0] == "full"
    import torch  # a torch.device where a name is expected (it raised AttributeError)

    assert choose(["a"] * 15_000 + ["b"] * 15_000, device=torch.device("cuda"))[0] == "full"
    assert choose([["a"], ["b"]] * 4, multi_label=True)[0] == "lora"  # no contrastive there


def test_auto_is_the_default_and_says_why(tiny_backbone: Path, capsys) -> None:
    fn = funcformer.train("classify", make_reviews(6), backbone=tiny_backbone, epochs=1,
                          progress=True)
    assert fn.manifest.method == "contrastive"
    assert "contrastive" in fn.manifest.training["method_reason"]
    assert "method auto -> contrastive" in capsys.readouterr().err


def test_cli_lora_and_merge(tiny_backbone: Path, reviews_csv: Path, tmp_path: Path,
                            capsys) -> None:
    out = tmp_path / "cli"
    assert run_cli("train", "classify", str(reviews_csv), "--out", str(out), "--method", "lora",
                   "--backbone", str(tiny_backbone), "--set", "epochs=1",
                   "--set", 'lora={"r": 4}') == 0
    assert json.loads((out / "funcformer.json").read_text())["adapter"]["r"] == 4
    capsys.readouterr()
    assert run_cli("predict", str(out), "nice") == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("positive", "negative")
