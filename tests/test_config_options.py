"""Training configuration: optimizers, schedules, losses, heads and config files (issue 8)."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import NEGATIVE, POSITIVE, make_reviews

import funcformer
from funcformer import ArtifactError, DataError, TaskError, TrainConfig
from funcformer._cli import main
from funcformer._config import read_config_file
from funcformer._losses import Loss, class_weights, focal_loss, sigmoid_loss
from funcformer._model import LinearHead, MLPHead
from funcformer._train import Plan, _optimizer, _schedule, no_decay, run

LOG2 = math.log(2.0)


def _train(backbone: Path, rows: list | None = None, **options) -> funcformer.Function:
    options.setdefault("method", "head")
    options.setdefault("epochs", 3)
    return funcformer.train("classify", rows or make_reviews(), backbone=backbone,
                            progress=False, **options)


# -- optimizers -------------------------------------------------------------------------------

class _Toy(torch.nn.Module):
    """A linear 'encoder' with a LayerNorm and a learned scale (1-D, yet an ordinary weight),
    and a head: enough to see every parameter group."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(2, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.scale = torch.nn.Parameter(torch.ones(4))
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(x)) * self.scale)


def _toy_plan() -> Plan:
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    model = _Toy()
    return Plan(model=model, batches=lambda epoch: data, forward=lambda m, inputs: m(inputs),
                loss=torch.nn.functional.cross_entropy, head=model.head)


def test_weight_decay_skips_biases_and_norm_weights_by_name(tiny_backbone: Path) -> None:
    plan = _toy_plan()
    assert no_decay(plan.model) == {"encoder.bias", "norm.weight", "norm.bias", "head.bias"}
    config = TrainConfig(learning_rate=0.1, head_learning_rate=0.5, weight_decay=0.2)
    groups = _optimizer(plan, config).param_groups
    names = {id(p): n for n, p in plan.model.named_parameters()}
    seen = {(names[id(p)], g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert seen == {("encoder.weight", 0.1, 0.2), ("encoder.bias", 0.1, 0.0),
                    ("norm.weight", 0.1, 0.0), ("norm.bias", 0.1, 0.0), ("scale", 0.1, 0.2),
                    ("head.weight", 0.5, 0.2), ("head.bias", 0.5, 0.0)}
    from funcformer import _backbone

    bert = _backbone.load(tiny_backbone).model
    skipped = no_decay(bert)
    for name, _ in bert.named_parameters():
        is_norm = "LayerNorm" in name
        assert (name in skipped) == (is_norm or name.endswith("bias")), name


@pytest.mark.parametrize("name", ["adamw", "sgd", "adafactor"])
def test_each_optimizer_is_built_as_asked_and_learns(name: str) -> None:
    plan = _toy_plan()
    config = TrainConfig(optimizer=name, nesterov=name == "sgd", epochs=15, learning_rate=0.05,
                         head_learning_rate=0.05, warmup_ratio=0.0)
    optimizer = _optimizer(plan, config)
    expected = {"adamw": "RowAdamW", "sgd": "SGD", "adafactor": "Adafactor"}[name]
    assert type(optimizer).__name__ == expected  # RowAdamW: AdamW, and the tables' rows
    if name == "sgd":
        assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"]
    if name == "adafactor":
        group = optimizer.param_groups[0]
        assert group["lr"] == 0.05 and not group["relative_step"]
        assert not group["scale_parameter"]
    history = run(plan, config, progress=False)
    losses = [e["loss"] for e in history.epochs]
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize(("optimizer", "schedule", "method"),
                         [("sgd", "cosine", "head"), ("adafactor", "constant", "head"),
                          ("sgd", "linear", "full")])
def test_optimizer_and_schedule_train_a_function(tiny_backbone: Path, optimizer: str,
                                                 schedule: str, method: str) -> None:
    fn = _train(tiny_backbone, optimizer=optimizer, schedule=schedule, method=method,
                epochs=2, learning_rate=0.05 if method == "head" else 0.01)
    assert fn.manifest.config["optimizer"] == optimizer
    assert fn.manifest.config["schedule"] == schedule
    assert fn("the food was great").label in ("negative", "positive")


# -- schedules --------------------------------------------------------------------------------

def _rates(kind: str, total: int = 20, warmup_ratio: float = 0.2) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = _schedule(optimizer, total, warmup_ratio, kind)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_schedules_warm_up_then_take_their_shape() -> None:
    linear, cosine, constant = _rates("linear"), _rates("cosine"), _rates("constant")
    for rates in (linear, cosine, constant):
        assert rates[:4] == [0.25, 0.5, 0.75, 1.0]  # 4 warm-up steps, then the peak
    assert constant[4:] == [1.0] * 16
    decay_linear, decay_cosine = linear[4:], cosine[4:]
    assert decay_linear == sorted(decay_linear, reverse=True) and decay_linear[-1] < 0.1
    steps = [a - b for a, b in itertools.pairwise(decay_linear)]
    assert max(steps) - min(steps) < 1e-9  # a straight line
    assert decay_cosine == sorted(decay_cosine, reverse=True) and decay_cosine[-1] < 0.02
    assert cosine[12] == pytest.approx(0.5)  # half way through the decay: half the peak
    assert cosine[6] > linear[6] and cosine[-2] < linear[-2]  # slow start, fast end
    assert _rates("cosine", warmup_ratio=0.0)[0] == 1.0


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_run_follows_the_configured_schedule(kind: str, monkeypatch) -> None:
    from funcformer import _train

    made = []
    original = _train._schedule

    def spy(optimizer, total, warmup_ratio, schedule="linear"):  # type: ignore[no-untyped-def]
        made.append((optimizer, schedule))
        return original(optimizer, total, warmup_ratio, schedule)

    monkeypatch.setattr(_train, "_schedule", spy)
    plan = _toy_plan()
    run(plan, TrainConfig(schedule=kind, epochs=2, learning_rate=0.1, head_learning_rate=0.1),
        progress=False)
    (optimizer, used), = made
    assert used == kind
    final = optimizer.param_groups[0]["lr"]  # after the last of 8 steps
    assert final == pytest.approx({"linear": 0.0, "cosine": 0.0, "constant": 0.1}[kind])


# -- losses -----------------------------------------------------------------------------------

def test_cross_entropy_label_smoothing_and_focal_known_values() -> None:
    even = torch.tensor([[0.0, 0.0]])
    zero = torch.tensor([0])
    assert Loss()(even, zero).item() == pytest.approx(LOG2)
    # logits (2, 0): log p = (2 - z, -z) with z = log(e^2 + 1); smoothing 0.2 -> q = (0.9, 0.1)
    z = math.log(math.e ** 2 + 1)
    smoothed = Loss(smoothing=0.2)(torch.tensor([[2.0, 0.0]]), zero).item()
    assert smoothed == pytest.approx(0.9 * (z - 2) + 0.1 * z, rel=1e-5)
    assert Loss(kind="focal", gamma=2.0)(even, zero).item() == pytest.approx(0.25 * LOG2)
    # a confident right answer counts far less under focal loss than under cross-entropy
    sure = torch.tensor([[3.0, 0.0]])
    ce, focal = Loss()(sure, zero).item(), Loss(kind="focal")(sure, zero).item()
    p = 1 / (1 + math.exp(-3))
    assert focal == pytest.approx((1 - p) ** 2 * ce, rel=1e-5) and focal < ce / 100


def test_focal_with_gamma_zero_is_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 3), torch.randint(0, 3, (16,))
    weight = torch.tensor([1.0, 2.0, 5.0])
    expected = torch.nn.functional.cross_entropy(logits, targets, weight=weight)
    assert focal_loss(logits, targets, weight, gamma=0.0).item() == pytest.approx(
        expected.item(), rel=1e-5)


def test_class_weights_change_the_loss_as_expected() -> None:
    logits, targets = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    right, wrong = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    plain = Loss()(logits, targets).item()
    weighted = Loss(weight=torch.tensor([1.0, 3.0]))(logits, targets).item()
    assert plain == pytest.approx((right + wrong) / 2, rel=1e-5)
    assert weighted == pytest.approx((right + 3 * wrong) / 4, rel=1e-5)
    labels = ["major", "minor"]
    balanced = class_weights("balanced", labels, torch.tensor([0] * 10 + [1]))
    assert balanced.tolist() == pytest.approx([11 / 20, 11 / 2])  # n / (k * count)
    given = class_weights({"minor": 4}, labels, torch.tensor([0, 1]))
    assert given.tolist() == [1.0, 4.0]
    with pytest.raises(TaskError, match=r"'mnior'.*major, minor"):
        class_weights({"mnior": 4}, labels, torch.tensor([0, 1]))


def test_multi_label_bce_with_positive_weights() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    pos_weight = class_weights("balanced", ["a", "b"], targets, multi_label=True)
    assert pos_weight.tolist() == [3.0, 1.0]  # negatives / positives per label
    zeros = torch.zeros(1, 2)
    loss = sigmoid_loss(zeros, torch.tensor([[1.0, 0.0]]), torch.tensor([3.0, 3.0]))
    assert loss.item() == pytest.approx((3 * LOG2 + LOG2) / 2)  # positives count 3x
    focal = Loss(kind="focal", multi_label=True)(zeros, torch.tensor([[1.0, 0.0]]))
    assert focal.item() == pytest.approx(0.25 * LOG2)
    smoothed = Loss(smoothing=0.2, multi_label=True)(torch.tensor([[5.0]]), torch.tensor([[1.0]]))
    plain = Loss(multi_label=True)(torch.tensor([[5.0]]), torch.tensor([[1.0]]))
    assert smoothed.item() > plain.item()  # a target of 0.9 penalises overconfidence


def _imbalanced(n_major: int, n_minor: int, seed: int) -> list[tuple[str, str]]:
    """Three sentiment words per text, each from the text's own side with p=0.8: the sides
    overlap, so the 10:1 prior decides the unsure texts unless the classes are reweighed."""
    rng = random.Random(seed)
    rows = []
    for label, own, other, n in (("negative", NEGATIVE, POSITIVE, n_major),
                                 ("positive", POSITIVE, NEGATIVE, n_minor)):
        for _ in range(n):
            words = (rng.choice(own if rng.random() < 0.8 else other) for _ in range(3))
            rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def test_balanced_class_weight_beats_plain_cross_entropy_on_imbalanced_data(
        tiny_backbone: Path) -> None:
    train, dev = _imbalanced(150, 15, seed=0), _imbalanced(100, 100, seed=1)
    # eval_fraction=0: no held-out split, so every run trains all its epochs (a 10% split
    # would hold out 1 or 2 minority examples, too few to stop on)
    plain, balanced = (_train(tiny_backbone, train, epochs=20, eval_fraction=0.0,
                              class_weight=weight) for weight in (None, "balanced"))
    assert balanced.task.criterion.weight.tolist() == pytest.approx([165 / 300, 165 / 30])
    plain_f1, balanced_f1 = plain.evaluate(dev)["macro_f1"], balanced.evaluate(dev)["macro_f1"]
    assert balanced_f1 > plain_f1 + 0.15, (plain_f1, balanced_f1)
    focal = _train(tiny_backbone, train, epochs=20, eval_fraction=0.0, loss="focal",
                   class_weight="balanced")
    focal_f1 = focal.evaluate(dev)["macro_f1"]
    assert focal_f1 > plain_f1 + 0.15, (plain_f1, focal_f1)


@pytest.mark.parametrize("method", ["head", "full", "lora"])
def test_loss_settings_reach_every_method(tiny_backbone: Path, method: str,
                                          monkeypatch) -> None:
    from funcformer import _losses

    calls = []
    original = _losses.focal_loss

    def spy(logits, targets, weight=None, smoothing=0.0, gamma=2.0):  # type: ignore[no-untyped-def]
        calls.append((logits.requires_grad, weight is not None, smoothing, gamma))
        return original(logits, targets, weight, smoothing, gamma)

    monkeypatch.setattr(_losses, "focal_loss", spy)
    fn = _train(tiny_backbone, method=method, epochs=1, loss="focal", focal_gamma=1.5,
                label_smoothing=0.1, class_weight={"positive": 2.0})
    assert calls and all(c[1:] == (True, 0.1, 1.5) for c in calls)
    assert fn.manifest.config["loss"] == "focal"


def test_multi_label_trains_with_pos_weight_and_focal(tiny_backbone: Path) -> None:
    from test_multilabel import make_tagged

    fn = _train(tiny_backbone, make_tagged(), class_weight="balanced", loss="focal",
                head="mlp", head_hidden=16, epochs=5)
    weights = fn.task.criterion.weight
    assert fn.task.multi_label and weights.shape == (2,) and bool((weights > 0).all())
    assert isinstance(fn.head, MLPHead)
    assert fn.labels and isinstance(fn("the food was great").labels, list)


# -- heads ------------------------------------------------------------------------------------

HEAD_CASES = {
    "linear": ({}, {"type": "linear"}),
    "mlp": ({"head": "mlp", "head_hidden": 16},
            {"type": "mlp", "options": {"width": 16}}),
    "factory": ({"head": "custom_heads:gated", "head_options": {"scale": 0.5}},
                {"type": "factory", "factory": "custom_heads:gated", "options": {"scale": 0.5}}),
}


@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_every_head_round_trips_through_the_artifact(tiny_backbone: Path, tmp_path: Path,
                                                     case: str) -> None:
    options, record = HEAD_CASES[case]
    fn = _train(tiny_backbone, **options)
    saved = fn.save(tmp_path / case)
    assert sorted(p.name for p in saved.iterdir()) == ["funcformer.json", "head.safetensors"]
    manifest = json.loads((saved / "funcformer.json").read_text("utf-8"))
    assert manifest["head"] == {"hidden": 32, "outputs": 2, **record}
    factories = [record["factory"]] if "factory" in record else []
    loaded = funcformer.load(saved, head_factories=factories)
    assert type(loaded.head) is type(fn.head)
    texts = ["the food was great", "the room was dirty", "slow"]
    assert torch.allclose(loaded.logits(texts), fn.logits(texts), atol=1e-6)
    assert loaded.digest == fn.digest
    engine = funcformer.Engine({"fn": loaded}, cache=None)  # apply_head on shared features
    assert [p.label for p in engine.run(["fn"], texts)["fn"]] == [p.label for p in fn(texts)]


def test_mlp_head_trains_with_full_fine_tuning(tiny_backbone: Path, tmp_path: Path) -> None:
    fn = _train(tiny_backbone, method="full", head="mlp", head_hidden=8, epochs=1)
    assert isinstance(fn.head, MLPHead) and fn.head.layers[1].out_features == 8
    loaded = funcformer.load(fn.save(tmp_path / "fn"))
    assert torch.allclose(loaded.logits(["great"]), fn.logits(["great"]), atol=1e-5)


def test_mlp_head_exports_to_onnx(tiny_backbone: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    fn = _train(tiny_backbone, head="mlp", head_hidden=16)
    out = fn.save(tmp_path / "fn")
    fn.export_onnx(out)
    onnx_fn = funcformer.load(out, runtime="onnx")
    texts = ["the food was great", "the staff was rude and the room was very dirty"]
    for a, b in zip(onnx_fn(texts), fn(texts), strict=True):
        assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-4)


def test_missing_factory_code_at_load_is_a_clear_artifact_error(
        tiny_backbone: Path, tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "src"
    package.mkdir()
    module = package / "vanishing_heads.py"
    module.write_text("import torch\n\ndef make(*, hidden, outputs):\n"
                      "    return torch.nn.Linear(hidden, outputs)\n", "utf-8")
    monkeypatch.syspath_prepend(str(package))
    fn = _train(tiny_backbone, head="vanishing_heads:make")
    saved = fn.save(tmp_path / "fn")
    monkeypatch.setenv("FUNCFORMER_HEAD_FACTORIES", "other:one, vanishing_heads:make")
    assert funcformer.load(saved).labels == fn.labels  # loads while the code is there
    module.unlink()
    monkeypatch.delitem(sys.modules, "vanishing_heads")
    with pytest.raises(ArtifactError, match=r"vanishing_heads:make.*No module named "
                       r"'vanishing_heads'.*install the package.*PYTHONPATH"):
        funcformer.load(saved)


def test_factory_attribute_gone_at_load_is_an_artifact_error(tiny_backbone: Path,
                                                              tmp_path: Path) -> None:
    saved = _train(tiny_backbone, head="custom_heads:gated").save(tmp_path / "fn")
    manifest = json.loads((saved / "funcformer.json").read_text("utf-8"))
    manifest["head"]["factory"] = "custom_heads:renamed"
    (saved / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ArtifactError, match=r"custom_heads:renamed.*AttributeError"):
        funcformer.load(saved, head_factories=["custom_heads:renamed"])


def test_a_factory_named_by_an_artifact_runs_only_when_allowed(
        tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest could name any callable installed here (one that fetches and runs code,
    say): loading imports none that the caller did not allow, not even its module."""
    package = tmp_path / "src"
    package.mkdir()
    marker = tmp_path / "imported"
    (package / "planted.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "def make(*, hidden, outputs):\n    from funcformer._model import LinearHead\n"
        "    return LinearHead(hidden, outputs, 0.1)\n", "utf-8")
    monkeypatch.syspath_prepend(str(package))
    saved = _train(tiny_backbone).save(tmp_path / "fn")
    manifest = json.loads((saved / "funcformer.json").read_text("utf-8"))
    manifest["head"] = {**manifest["head"], "type": "factory", "factory": "planted:make",
                        "options": {}}
    (saved / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    monkeypatch.delenv("FUNCFORMER_HEAD_FACTORIES", raising=False)
    with pytest.raises(ArtifactError, match=r"built by 'planted:make'.*only when you allow it"
                       r".*FUNCFORMER_HEAD_FACTORIES=planted:make in the environment.*"
                       r"head_factories=\['planted:make'\]"):
        funcformer.load(saved, head_factories=["planted:other"])
    assert not marker.exists() and "planted" not in sys.modules
    with pytest.raises(TaskError, match="a list of import paths"):
        funcformer.load(saved, head_factories="planted:make")
    assert funcformer.load(saved, head_factories=["planted:make"]).labels  # allowed: it loads
    assert marker.exists()


def test_a_factory_whose_module_makes_tensors_loads_in_a_new_process(
        tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A factory's module is first imported by load in a new process: imported under the
    meta device (a size check), its module-level tensors stayed meta and the head failed."""
    package = tmp_path / "src"
    package.mkdir()
    (package / "scaled_heads.py").write_text(
        "import torch\nSCALE = torch.tensor(2.0)\n\nclass Scaled(torch.nn.Module):\n"
        "    def __init__(self, hidden, outputs):\n        super().__init__()\n"
        "        self.linear = torch.nn.Linear(hidden, outputs)\n"
        "    def forward(self, x):\n        return self.linear(x) * SCALE\n\n"
        "def make(*, hidden, outputs):\n    return Scaled(hidden, outputs)\n", "utf-8")
    monkeypatch.syspath_prepend(str(package))
    fn = _train(tiny_backbone, head="scaled_heads:make")
    saved = fn.save(tmp_path / "fn")
    monkeypatch.delitem(sys.modules, "scaled_heads")  # as in a new process
    loaded = funcformer.load(saved, head_factories=["scaled_heads:make"])
    assert sys.modules["scaled_heads"].SCALE.device.type == "cpu"
    texts = ["the food was great", "slow"]
    assert torch.allclose(loaded.logits(texts), fn.logits(texts), atol=1e-6)


def test_an_allowed_factory_is_still_bounded_by_the_encoders_width(
        tiny_backbone: Path, tmp_path: Path) -> None:
    """Allowing a factory for your own functions must not let another folder naming it
    allocate a head of any size: hidden is the encoder's width, and the shapes are checked on
    the meta device against head.safetensors before anything real is built."""
    saved = _train(tiny_backbone, head="custom_heads:gated").save(tmp_path / "fn")
    manifest = json.loads((saved / "funcformer.json").read_text("utf-8"))
    for edit, message in (({"hidden": 20_000}, r"'head.hidden' is 20000"),
                          ({"options": {"scale": 0.5, "bogus": 1}},
                           r"cannot be built \(TypeError")):
        (saved / "funcformer.json").write_text(
            json.dumps({**manifest, "head": {**manifest["head"], **edit}}), "utf-8")
        with pytest.raises(ArtifactError, match=message):
            funcformer.load(saved, head_factories=["custom_heads:gated"])


@pytest.mark.parametrize(("edit", "message"), [
    ({"head": {"type": "mlp", "options": {"width": 10**12}}},
     r"head.safetensors: its tensors .* are not those of the head funcformer.json describes"),
    ({"head": {"outputs": 2, "hidden": 10**9}},
     r"field 'head.hidden' is 1000000000.*the encoder's width is 32"),
    ({"head": {"hidden": -1}}, r"field 'head.hidden' is -1"),
    ({"head": {"type": "mlp", "options": {"width": -3}}}, r"cannot be built \(RuntimeError"),
    ({"head": {"type": "mlp", "options": {"width": "abc"}}}, r"cannot be built \(ValueError"),
    ({"head": {"type": "conv"}}, r"unknown head type 'conv'"),
    ({"options": {"task": {"bogus": 1}}}, r"field 'options.task' cannot be used"),
    ({"config": {"dropout": "abc"}}, r"field 'config.dropout' is 'abc'"),
    ({"config": {"dropout": 5}}, r"field 'config.dropout' is 5"),
])
def test_edited_head_sizes_and_options_are_artifact_errors(
        tiny_backbone: Path, tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    """Sizes come from the manifest: a width of 10**12 must be refused against the file's
    tensors, before anything of that size is allocated."""
    saved = _train(tiny_backbone).save(tmp_path / "fn")
    manifest = json.loads((saved / "funcformer.json").read_text("utf-8"))
    for key, value in edit.items():
        manifest[key] = {**manifest.get(key, {}), **value}
    (saved / "funcformer.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ArtifactError, match=message):
        funcformer.load(saved)


@pytest.mark.parametrize(("factory", "message"), [
    ("custom_heads:not_a_module", "returned object, not a torch.nn.Module"),
    ("custom_heads:wrong_width", r"to \(2, 3\); a head must give \(batch, 2\)"),
    ("no_such_package.heads:make", "No module named 'no_such_package'"),
])
def test_bad_factories_are_task_errors_at_training(tiny_backbone: Path, factory: str,
                                                   message: str) -> None:
    with pytest.raises(TaskError, match=message):
        _train(tiny_backbone, head=factory)


@pytest.mark.parametrize("method", ["head", "contrastive", "lora"])
def test_bad_factory_fails_before_any_training(tiny_backbone: Path, method: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """contrastive and lora train the encoder before they build the head: a factory that
    cannot be imported must not cost that run first."""
    import funcformer._methods

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the head factory was checked")

    monkeypatch.setattr(funcformer._methods, "fit", no_training)
    with pytest.raises(TaskError, match="No module named 'no_such_package'"):
        _train(tiny_backbone, head="no_such_package.heads:make", method=method)


def test_init_and_update_need_the_linear_head(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match=r"init= starts a linear head.*head='linear'"):
        _train(tiny_backbone, head="mlp", init="zero_shot")
    fn = _train(tiny_backbone, head="mlp", head_hidden=8)
    with pytest.raises(TaskError, match=r"update grows a linear head.*'mlp'"):
        fn.update([("the food was superb", "positive")])
    linear = _train(tiny_backbone, init="zero_shot", epochs=1)  # the linear path still works
    assert isinstance(linear.head, LinearHead)


# -- mixed precision --------------------------------------------------------------------------

@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32),
                                                  ("bf16", torch.bfloat16)])
def test_precision_sets_the_forward_dtype_and_keeps_float32_weights(
        precision: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("funcformer._train._cpu_has_bf16", lambda: True)  # no warning here
    plan = _toy_plan()
    seen: list[torch.dtype] = []
    seen_by_loss: list[torch.dtype] = []
    forward = plan.forward

    def recording_forward(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        out = forward(model, inputs)
        seen.append(out.dtype)
        return out

    def recording_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen_by_loss.append(logits.dtype)
        return torch.nn.functional.cross_entropy(logits, targets)

    plan.forward, plan.loss = recording_forward, recording_loss
    history = run(plan, TrainConfig(precision=precision, epochs=8, learning_rate=0.05,
                                    head_learning_rate=0.05), progress=False)
    assert set(seen) == {dtype} and set(seen_by_loss) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in plan.model.parameters())
    losses = [e["loss"] for e in history.epochs]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("method", ["full", "contrastive"])
def test_bf16_training_of_an_encoder_saves_a_float32_function(
        tiny_backbone: Path, tmp_path: Path, method: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("funcformer._train._cpu_has_bf16", lambda: True)
    fn = _train(tiny_backbone, method=method, epochs=1, precision="bf16")
    assert fn.manifest.config["precision"] == "bf16"
    fn.save(tmp_path / "fn")
    loaded = funcformer.load(tmp_path / "fn")
    encoder = loaded.encoder or loaded.backbone.model  # a full copy loads as its own backbone
    weights = [*encoder.parameters(), *loaded.head.parameters()]
    assert weights and all(p.dtype == torch.float32 for p in weights)
    assert [p.label for p in loaded(["the food was great"])] == \
        [p.label for p in fn(["the food was great"])]


def test_bf16_warns_on_a_cpu_without_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("funcformer._train._cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"without AVX512-BF16 or AMX.*Fix: drop precision"):
        run(_toy_plan(), TrainConfig(precision="bf16", epochs=1), progress=False)


# -- validation and config files --------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"optimizer": "adam"}, "Unknown optimizer 'adam'. Choose one of: adamw, sgd, adafactor"),
    ({"schedule": "step"}, "Unknown schedule 'step'. Choose one of: linear, cosine, constant"),
    ({"loss": "hinge"}, "Unknown loss 'hinge'. Choose one of: cross_entropy, focal"),
    ({"head": "lstm"}, "Unknown head 'lstm'. Choose one of: linear, mlp, or name your own"),
    ({"head": "mlp", "head_options": {"x": 1}}, "head_options go to a custom head factory"),
    ({"class_weight": "inverse"}, "class_weight must be None, 'balanced' or"),
    ({"class_weight": {"a": -1}}, "class_weight must be"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"focal_gamma": -1}, "focal_gamma must be at least 0"),
    ({"epochs": "3"}, "epochs must be a whole number, got '3'"),
    ({"nesterov": True, "momentum": 0.0}, "nesterov needs momentum > 0"),
    ({"head_hidden": 0}, "head_hidden must be at least 1"),
    ({"precision": "fp16"}, "Unknown precision 'fp16'. Choose one of: fp32, bf16"),
    ({"contrastive_loss": "triplet"},
     "Unknown contrastive_loss 'triplet'. Choose one of: auto, pairs, supcon"),
])
def test_config_validation_names_the_choices(options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        TrainConfig(**options)


@pytest.mark.parametrize(("options", "message"), [
    ({"seed": "1"}, "seed must be a whole number, got '1'"),
    ({"seed": None}, "seed must be a whole number"),
    ({"seed": 2 ** 64}, r"seed must be a whole number \(a 64-bit seed\)"),
    ({"learning_rate": True}, "learning_rate must be a number, got True"),
    # an infinite rate trained a model of NaNs and saved it
    ({"learning_rate": float("inf")}, "learning_rate must be a finite number, got inf"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number, got nan"),
    ({"max_grad_norm": float("-inf")}, "max_grad_norm must be a finite number, got -inf"),
])
def test_seed_and_numbers_are_checked(options: dict, message: str) -> None:
    """A string seed used to reach torch's `manual_seed` ("an integer is required")."""
    with pytest.raises(TaskError, match=message):
        TrainConfig(**options)


def test_an_infinite_max_grad_norm_turns_clipping_off() -> None:
    assert TrainConfig(max_grad_norm=float("inf")).max_grad_norm == float("inf")


def test_numpy_numbers_are_taken_as_python_numbers(tiny_backbone: Path, tmp_path: Path) -> None:
    """Values from `np.arange` / `np.logspace` (a grid search) used to be refused ("epochs must
    be a whole number, got np.int64(2)") or, as a seed, fail inside torch."""
    np = pytest.importorskip("numpy")
    config = TrainConfig(epochs=np.int64(2), learning_rate=np.float32(0.05),
                         seed=np.int64(3), dropout=np.float64(0.2))
    assert (type(config.epochs), type(config.learning_rate), type(config.seed)) == (int, float,
                                                                                     int)
    assert config.epochs == 2 and config.seed == 3 and abs(config.learning_rate - 0.05) < 1e-8
    fn = funcformer.train("classify", make_reviews(12), backbone=tiny_backbone, method="head",
                          epochs=np.int64(2), seed=np.int64(3), progress=False)
    fn.save(tmp_path / "fn")  # the manifest's JSON holds the config: Python numbers only
    saved = json.loads((tmp_path / "fn" / "funcformer.json").read_text("utf-8"))
    assert saved["config"]["seed"] == 3 and saved["config"]["epochs"] == 2


def test_head_and_loss_settings_are_refused_by_other_tasks(tiny_backbone: Path) -> None:
    with pytest.raises(TaskError, match=r"head applies to classify functions.*embed"):
        funcformer.train("embed", [("a", "b", 1.0)], backbone=tiny_backbone, head="mlp")
    with pytest.raises(TaskError, match="class_weight applies to classify"):
        funcformer.train("tag", [], backbone=tiny_backbone,
                         config=TrainConfig(class_weight="balanced"))
    with pytest.raises(TaskError, match="metric applies to classify"):  # was ignored
        funcformer.train("pair", [("a", "b", 1.0)], backbone=tiny_backbone, metric="macro_f1")


SETTINGS = {"method": "head", "optimizer": "sgd", "momentum": 0.8, "schedule": "cosine",
            "learning_rate": 0.1, "epochs": 4, "head": "mlp", "head_hidden": 16,
            "class_weight": {"positive": 2.0}, "label_smoothing": 0.1}
YAML = """\
method: head
optimizer: sgd
momentum: 0.8
schedule: cosine
learning_rate: 0.1
epochs: 4
head: mlp
head_hidden: 16
class_weight:
  positive: 2
label_smoothing: 0.1
"""


def test_config_files_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text(YAML, "utf-8")
    (tmp_path / "train.json").write_text(json.dumps(SETTINGS), "utf-8")
    from_yaml = TrainConfig.from_file(tmp_path / "train.yaml")
    assert from_yaml == TrainConfig.from_file(tmp_path / "train.json") == TrainConfig(**SETTINGS)
    assert from_yaml.class_weight == {"positive": 2.0}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.yaml", "epochs: 3\nlearnign_rate: 0.1\n", r"bad.yaml: unknown key 'learnign_rate'"),
    ("bad.json", '{"learning-rate": 0.1}', "Did you mean 'learning_rate'"),
    ("bad.yaml", "optimizer: adam\n", "bad.yaml: Unknown optimizer 'adam'"),
    ("bad.yaml", "- epochs\n", "expected a mapping"),
    ("bad.json", '{"epochs": 3,}', r"bad.json, line 1: not valid JSON"),
    ("bad.yaml", "epochs: [3\n", r"bad.yaml, line \d+: not valid YAML"),
    ("bad.toml", "epochs = 3\n", "must be .yaml, .yml or .json"),
    # text where a switch or a path is due: 'no' turned Nesterov on; 5 was a TypeError
    ("bad.yaml", "optimizer: sgd\nnesterov: 'no'\n", "nesterov must be true or false, got 'no'"),
    ("bad.yaml", "optimizer: sgd\nmomentum: 0\nnesterov: 'no'\n", "nesterov must be true or false"),
    ("bad.yaml", "resume: 'no'\n", "resume must be true or false"),
    ("bad.yaml", "checkpoint_dir: 5\n", "bad.yaml: checkpoint_dir must be a directory path"),
    ("bad.json", '{"log_dir": ["runs"]}', "bad.json: log_dir must be a directory path"),
    # a key given twice kept the last value, silently
    ("bad.yaml", "epochs: 1\nseed: 3\nepochs: 2\n",
     r"bad.yaml, line 3: not valid YAML \(the key 'epochs' is given twice, first on line 1; "
     r"give it once\)"),
    ("bad.yaml", "lora: {r: 4, r: 8}\n", "the key 'r' is given twice"),
    ("bad.json", '{"epochs": 1, "epochs": 2}', "bad.json: the key 'epochs' is given twice"),
])
def test_bad_config_files_are_data_errors_naming_file_and_key(tmp_path: Path, name: str,
                                                              text: str, message: str) -> None:
    (tmp_path / name).write_text(text, "utf-8")
    with pytest.raises(DataError, match=message):
        read_config_file(tmp_path / name)


def test_a_blank_switch_is_off(tmp_path: Path) -> None:
    # YAML's `resume:` with nothing after it is null: off, as before the switches were checked
    (tmp_path / "train.yaml").write_text("resume:\nnesterov: null\n", "utf-8")
    config = TrainConfig.from_file(tmp_path / "train.yaml")
    assert (config.resume, config.nesterov) == (False, False)
    assert TrainConfig(resume=None).resume is False


def test_yaml_reads_exponents_as_numbers_and_builds_no_python_objects(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text("learning_rate: 5e-5\nhead_learning_rate: 1E-3\n"
                                         "label_template: '{} 1e3'\n", "utf-8")
    config = TrainConfig.from_file(tmp_path / "train.yaml")  # was "must be a number, got '5e-5'"
    assert (config.learning_rate, config.head_learning_rate) == (5e-5, 1e-3)
    assert config.label_template == "{} 1e3"  # quoted: still text
    (tmp_path / "merge.yaml").write_text("lora:\n  <<: {r: 4, alpha: 8}\n  r: 2\n", "utf-8")
    assert read_config_file(tmp_path / "merge.yaml")["lora"] == {"r": 2, "alpha": 8}  # no twice
    marker = tmp_path / "ran"
    (tmp_path / "evil.yaml").write_text(
        f"epochs: !!python/object/apply:os.system ['touch {marker}']\n", "utf-8")
    with pytest.raises(DataError, match=r"evil.yaml, line 1: not valid YAML"):
        read_config_file(tmp_path / "evil.yaml")
    assert not marker.exists()


def test_a_config_file_not_in_utf8_is_a_data_error_naming_its_line(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"epochs: 3\nhead: caf\xe9\n")  # was an internal error
    with pytest.raises(DataError, match=r"latin.yaml, line 2: not valid UTF-8 \(byte 0xe9"):
        read_config_file(tmp_path / "latin.yaml")
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"epochs": 3}')  # as Notepad saves it
    assert read_config_file(tmp_path / "bom.json") == {"epochs": 3}


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return (0 if info.value.code is None else info.value.code), out, err


def test_cli_config_file_with_flags_and_set_overriding_it(capsys, tmp_path: Path,
                                                          tiny_backbone: Path,
                                                          reviews_csv: Path) -> None:
    (tmp_path / "train.yaml").write_text(YAML + "seed: 7\n", "utf-8")
    code, _, err = _cli(capsys, "train", "classify", reviews_csv, "--out", tmp_path / "fn",
                        "--backbone", tiny_backbone, "--config", tmp_path / "train.yaml",
                        "--epochs", 2, "--set", "schedule=constant", "--class-weight",
                        "balanced")
    assert code == 0, err
    config = funcformer.load(tmp_path / "fn").manifest.config
    assert config["epochs"] == 2 and config["schedule"] == "constant"  # flags win
    assert config["class_weight"] == "balanced" and config["seed"] == 7  # file values kept
    assert (config["optimizer"], config["momentum"], config["head"]) == ("sgd", 0.8, "mlp")
    (tmp_path / "bad.json").write_text('{"epochs": 2, "optimiser": "sgd"}', "utf-8")
    code, _, err = _cli(capsys, "train", "classify", reviews_csv, "--out", tmp_path / "fn2",
                        "--backbone", tiny_backbone, "--config", tmp_path / "bad.json")
    assert code == 1 and "bad.json: unknown key 'optimiser'" in err
    assert not (tmp_path / "fn2").exists()
