"""AdaLoRA, IA³, prompt and prefix tuning (through PEFT) on a view of the shared backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import funcformer
from funcformer import IA3, AdaLoRA, PrefixTuning, PromptTuning, TaskError, _lora, _peft
from funcformer import _backbone as bb
from funcformer._train import Plan, run
from tests.conftest import make_reviews, run_cli

METHODS = ("adalora", "ia3", "prompt", "prefix")
ARTIFACT = {"funcformer.json", "head.safetensors", "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors"}
TEXTS = [t for t, _ in make_reviews(3, seed=5)]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _train(backbone: Path, method: object, **options: object) -> funcformer.Function:
    options = {"epochs": 2, "progress": False, **options}
    return funcformer.train("classify", make_reviews(12), backbone=backbone, method=method,
                            **options)


@pytest.fixture(scope="module")
def trained(tiny_backbone: Path) -> dict[str, funcformer.Function]:
    """One function per method, trained once for the module (a second each)."""
    return {method: _train(tiny_backbone, method) for method in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_trains_saves_adapter_only_and_reloads(trained: dict, method: str, tiny_backbone: Path,
                                               tmp_path: Path) -> None:
    fn = trained[method]
    expected = torch.softmax(fn.logits(TEXTS), -1)
    path = fn.save(tmp_path / method)
    assert _files(path) == ARTIFACT
    manifest = json.loads((path / "funcformer.json").read_text())
    assert manifest["method"] == method and manifest["backbone"]["included"] is False
    assert manifest["adapter"]["type"] == method and manifest["adapter"]["parameters"] > 0
    peft_type = json.loads((path / "adapter/adapter_config.json").read_text())["peft_type"]
    assert _peft._TYPES[peft_type] == method  # PEFT's own format
    loaded = funcformer.load(path, backbone=tiny_backbone)
    assert loaded.digest == fn.digest
    assert torch.allclose(torch.softmax(loaded.logits(TEXTS), -1), expected, atol=1e-5)
    # The adapter changed what the encoder computes (the head alone would not).
    shared = bb.load(tiny_backbone)
    plain, _ = shared.embed(TEXTS)
    tuned, _ = shared.embed(TEXTS, encoder=loaded.encoder)
    assert not torch.allclose(torch.from_numpy(plain), torch.from_numpy(tuned))


@pytest.mark.parametrize("method", METHODS)
def test_view_shares_backbone_weights_and_never_changes_them(method: str,
                                                             tiny_backbone: Path) -> None:
    shared = bb.load(tiny_backbone)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    view = _peft.view(shared.model, method, steps=10)
    pointers = {p.data_ptr() for p in shared.model.parameters()}
    trainable = [p for p in view.parameters() if p.requires_grad]
    frozen = [p for p in view.parameters() if not p.requires_grad]
    assert trainable and sum(p.numel() for p in trainable) < 20_000
    # Every frozen tensor is the backbone's own (AdaLoRA's rank counters aside).
    assert {p.data_ptr() for p in frozen if p.numel() > 1} <= pointers
    assert all(p.requires_grad for p in shared.model.parameters())  # flags untouched
    ids = torch.tensor([[2, 60, 70, 3]])
    view(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.sum().backward()
    with torch.no_grad():
        for param in trainable:
            param.add_(0.5)
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in shared.model.parameters())


@pytest.mark.parametrize("method", ["adalora", "ia3"])
def test_merge_folds_into_private_weights(trained: dict, method: str, tiny_backbone: Path,
                                          tmp_path: Path) -> None:
    fn = trained[method]
    path = fn.save(tmp_path / method)
    merged = funcformer.load(path, backbone=tiny_backbone, merge_adapter=True)
    assert not _lora.is_view(merged.encoder)
    assert torch.allclose(torch.softmax(merged.logits(TEXTS), -1),
                          torch.softmax(fn.logits(TEXTS), -1), atol=1e-4)
    with pytest.raises(TaskError, match="merge_adapter=True"):
        merged.save(tmp_path / "again")
    # Merged weights are private copies; the rest is still the backbone's; nothing changed.
    shared = bb.load(tiny_backbone)
    own = dict(shared.model.named_parameters())
    weights = {n.removeprefix("peft.base_model.model."): p
               for n, p in merged.encoder.named_parameters()}
    private = [n for n, p in weights.items() if p.data_ptr() != own[n].data_ptr()]
    assert private and all(n.endswith(("weight", "bias")) for n in private)
    assert all(not torch.equal(weights[n], own[n]) for n in private if n.endswith("weight"))
    plain, _ = shared.embed(TEXTS)
    fresh = bb._load(bb.resolve(str(tiny_backbone)), "cpu", False, None)
    again, _ = fresh.embed(TEXTS)
    assert torch.allclose(torch.from_numpy(plain), torch.from_numpy(again))


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_merge_of_prompt_or_prefix_names_what_merges(trained: dict, method: str,
                                                     tiny_backbone: Path, tmp_path: Path) -> None:
    path = trained[method].save(tmp_path / method)
    with pytest.raises(TaskError, match=r"no weights to merge.*lora, adalora, ia3"):
        funcformer.load(path, backbone=tiny_backbone, merge_adapter=True)


def test_prompt_tokens_are_cut_off_and_pooling_ignores_them(tiny_backbone: Path) -> None:
    shared = bb.load(tiny_backbone)
    view = _peft.view(shared.model, "prompt", PromptTuning(num_virtual_tokens=5)).eval()
    batch = shared.pad(shared.tokenize(["the food was great", "bad"]).input_ids)
    with torch.no_grad():
        states = view(**batch).last_hidden_state
    assert states.shape[:2] == batch["input_ids"].shape  # (B, T, H): no virtual tokens
    # Right padding and batching change nothing: each text pooled alone gives the same vector.
    together, _ = shared.embed(["the food was great", "bad"], encoder=view)
    alone = torch.cat([torch.from_numpy(shared.embed([t], encoder=view)[0])
                       for t in ["the food was great", "bad"]])
    assert torch.allclose(torch.from_numpy(together), alone, atol=1e-5)


def test_virtual_tokens_shorten_the_token_limit(trained: dict, tiny_backbone: Path) -> None:
    # The tiny model has 64 positions; 20 virtual tokens come first, leaving 44 for the text.
    for method in ("prompt", "prefix"):
        fn = trained[method]
        assert fn.manifest.config["max_length"] == 44
        assert fn(" ".join(["great"] * 80)).label in ("positive", "negative")
    assert trained["ia3"].manifest.config["max_length"] is None
    with pytest.raises(TaskError, match="fewer num_virtual_tokens"):
        _train(tiny_backbone, PromptTuning(num_virtual_tokens=60), epochs=1)


def test_adalora_allocates_its_rank_budget(tiny_backbone: Path, tmp_path: Path) -> None:
    spec = AdaLoRA(r=2, init_r=4, interval=1, warmup=0.0, final=0.5)
    fn = _train(tiny_backbone, spec, epochs=3)
    adapter = fn.manifest.adapter
    # 8 adapted matrices (4 attention projections x 2 layers) share a budget of 2 each.
    assert len(adapter["targets"]) == 8 and adapter["ranks"] == 16
    path = fn.save(tmp_path / "ada")
    from safetensors.torch import load_file

    kept = [v.shape[0] for k, v in load_file(str(path / "adapter/adapter_model.safetensors"))
            .items() if "lora_E" in k]
    assert sum(kept) == 16 and max(kept) <= 4  # saved at the allocated ranks
    again = funcformer.load(path, backbone=tiny_backbone)
    assert torch.allclose(again.logits(TEXTS), fn.logits(TEXTS), atol=1e-5)


def test_after_step_hook_sees_every_step(tiny_backbone: Path) -> None:
    seen: list[int] = []
    model = torch.nn.Linear(2, 2)
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))] * 3
    plan = Plan(model=model, batches=lambda epoch: batches, forward=lambda m, x: m(x),
                loss=torch.nn.functional.cross_entropy,
                after_step=lambda step: seen.append(step) or None)
    run(plan, funcformer.TrainConfig(method="head", epochs=2).resolved(), progress=False)
    assert seen == [1, 2, 3, 4, 5, 6]


def test_settings_objects_and_dicts(tiny_backbone: Path) -> None:
    fn = _train(tiny_backbone, IA3(targets=["key", "value"], feed_forward=[]), epochs=1)
    assert fn.manifest.method == "ia3" and fn.manifest.adapter["targets"] == ["key", "value"]
    assert fn.manifest.config["peft"] == {"targets": ("key", "value"), "feed_forward": ()}
    fn = _train(tiny_backbone, "prefix", peft={"num_virtual_tokens": 3}, epochs=1)
    assert fn.manifest.adapter["num_virtual_tokens"] == 3
    assert PrefixTuning.from_value({"projection": True}).projection
    with pytest.raises(TaskError, match=r"Unknown PromptTuning option.*num_virtual_tokens"):
        _train(tiny_backbone, "prompt", peft={"tokens": 3})
    with pytest.raises(TaskError, match="peft settings apply to methods adalora, ia3"):
        funcformer.TrainConfig(method="lora", peft={"num_virtual_tokens": 3})
    with pytest.raises(TaskError, match=r"IA3.*do not fit method 'prompt'"):
        funcformer.TrainConfig(method="prompt", peft=IA3())
    with pytest.raises(TaskError, match=r"lora=.*'ia3' does not use them"):
        _train(tiny_backbone, "ia3", lora={"r": 2})
    with pytest.raises(TaskError, match=r"warmup \+ final < 1"):
        AdaLoRA(warmup=0.5, final=0.5)


def test_methods_that_do_not_fit_name_the_alternatives(tiny_backbone: Path,
                                                       tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    # PEFT does not know DistilBERT's config names (`dim`, not `hidden_size`).
    model = DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2,
                                             hidden_dim=64, max_position_embeddings=64))
    for method in ("prefix", "prompt"):
        with pytest.raises(TaskError, match=rf"cannot put a {method} adapter on this "
                                            r"DistilBertModel.*Fix: use method 'lora', "):
            _peft.view(model, method)
    assert _peft.view(model, "ia3", IA3(targets=["q_lin", "v_lin"], feed_forward=[]))

    class NoPrefix(BertModel):  # a model whose forward takes no past key values
        def forward(self, *args: object, past_key_values: object = None, **kw: object) -> object:
            if past_key_values is not None:
                raise TypeError("unexpected argument past_key_values")
            return super().forward(*args, **kw)

    model = NoPrefix(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64))
    with pytest.raises(TaskError, match=r"prefix tuning does not work with this NoPrefix "
                                        r"\(TypeError.*Fix: use method 'lora', 'adalora'"):
        _peft.view(model, "prefix")
    assert _peft.view(model, "prompt")  # it takes input embeddings: prompt tuning works
    pairs = [("a cat", "a kitten"), ("a car", "an automobile")] * 4
    with pytest.raises(TaskError, match=r"'full' \(the default\), 'lora' or 'auto', not "
                                        r"'ia3' \(AdaLoRA, IA³, prompt and prefix tuning train"):
        funcformer.train("embed", pairs, backbone=tiny_backbone, method="ia3")
    with pytest.raises(TaskError, match="resume cannot restore AdaLoRA"):
        _train(tiny_backbone, "adalora", checkpoint_dir=str(tmp_path / "ck"), resume=True)


def test_cli_method_flag_and_config_file(tiny_backbone: Path, reviews_csv: Path,
                                         tmp_path: Path, capsys) -> None:
    out = tmp_path / "ia3"
    assert run_cli("train", "classify", str(reviews_csv), "--out", str(out), "--method", "ia3",
                   "--backbone", str(tiny_backbone), "--set", "epochs=1") == 0
    assert json.loads((out / "funcformer.json").read_text())["adapter"]["type"] == "ia3"
    config = tmp_path / "train.yaml"
    config.write_text("method: prompt\nepochs: 1\npeft:\n  num_virtual_tokens: 4\n")
    out = tmp_path / "prompt"
    assert run_cli("train", "classify", str(reviews_csv), "--out", str(out), "--config",
                   str(config), "--backbone", str(tiny_backbone)) == 0
    assert json.loads((out / "funcformer.json").read_text())["adapter"]["num_virtual_tokens"] == 4
    capsys.readouterr()
    assert run_cli("info", str(out)) == 0
    assert "prompt tuning, 4 virtual tokens" in capsys.readouterr().out
    assert run_cli("predict", str(out), "nice") == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("positive", "negative")


@pytest.mark.integration
def test_ia3_on_minilm_is_tiny_and_reloads(tmp_path: Path) -> None:
    rows = make_reviews(16)
    fn = funcformer.train("classify", rows, method="ia3", epochs=1, progress=False)
    path = fn.save(tmp_path / "ia3")
    assert _files(path) == ARTIFACT
    assert _lora.size_bytes(path) < 200_000  # about 37k scaling values
    loaded = funcformer.load(path)
    assert loaded.backbone is fn.backbone  # one backbone in memory
    assert torch.allclose(loaded.logits(TEXTS), fn.logits(TEXTS), atol=1e-4)
    assert loaded.evaluate(make_reviews(10, seed=3))["accuracy"] >= 0.8


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_onnx_export_runs_the_virtual_tokens_too(trained: dict, method: str,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    fn = trained[method]
    path = fn.save(tmp_path / method)
    fn.export_onnx(path)
    graph = funcformer.load(path, runtime="onnx")
    texts = [*TEXTS, "the staff was very rude and the room was dirty and cold"]
    assert torch.allclose(torch.softmax(graph.logits(texts), -1),
                          torch.softmax(fn.logits(texts), -1), atol=1e-4)


def test_multi_label_with_prompt_tuning(tiny_backbone: Path, tmp_path: Path) -> None:
    rows = [(t, [y] if i % 3 else [y, "other"]) for i, (t, y) in enumerate(make_reviews(10))]
    fn = funcformer.train("classify", rows, backbone=tiny_backbone,
                          method=PromptTuning(num_virtual_tokens=4), epochs=1, progress=False)
    assert fn.task.multi_label and fn.manifest.adapter["num_virtual_tokens"] == 4
    again = funcformer.load(fn.save(tmp_path / "ml"), backbone=tiny_backbone)
    assert [p.labels for p in again(TEXTS)] == [p.labels for p in fn(TEXTS)]
