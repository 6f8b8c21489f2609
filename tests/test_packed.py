"""Training without padding (`_packed`): transformers' states and gradients on the real tokens,
the same dropout masks under a seed, and transformers' own path wherever it would differ."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from funcformer import _fused, _packed

SIZES = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position_embeddings=44)


def _model(kind: str = "bert", **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "roberta":
        return RobertaModel(RobertaConfig(**SIZES, pad_token_id=1, **overrides))
    return BertModel(BertConfig(**SIZES, **overrides))


def _batch(lengths: tuple[int, ...] = (9, 5, 2)) -> dict[str, torch.Tensor]:
    """Right-padded rows of these lengths (pad id 1, RoBERTa's)."""
    torch.manual_seed(1)
    ids = torch.randint(3, 60, (len(lengths), 9))
    mask = torch.zeros(ids.shape, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return {"input_ids": ids.masked_fill(mask == 0, 1), "attention_mask": mask}


@pytest.fixture
def packed_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = _packed.last_hidden_state

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_packed, "last_hidden_state", counted)
    return calls


def _run(model: torch.nn.Module, batch: dict[str, torch.Tensor], packed: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The real tokens' states and every gradient of a loss on them, from a seeded call."""
    monkeypatch.setattr(_packed, "ENABLED", packed)
    model.zero_grad(set_to_none=True)
    real = batch["attention_mask"].bool()
    torch.manual_seed(7)
    states = _fused.last_hidden_state(model, **batch)[real]
    (states * torch.linspace(-1, 1, states.shape[-1])).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return states.detach(), grads


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_same_states_and_gradients_as_transformers(kind: str, mode: str, packed_calls: list[int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In training mode with dropout (the same masks: the same seed gives the same states) and
    in eval mode; the gradients agree to rounding. A key bias has no gradient in exact
    arithmetic (softmax ignores a shift shared by all keys): both give rounding noise there."""
    model = getattr(_model(kind, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3),
                    mode)()
    batch = _batch()
    states, grads = _run(model, batch, True, monkeypatch)
    assert packed_calls == [1]
    expected, expected_grads = _run(model, batch, False, monkeypatch)
    assert packed_calls == [1]  # (transformers' path the second time)
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        if not name.endswith("key.bias"):
            torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-4,
                                       msg=name)
    if mode == "train":  # dropout was on: another seed gives other states
        torch.manual_seed(8)
        monkeypatch.setattr(_packed, "ENABLED", True)
        again = _fused.last_hidden_state(model, **batch)[batch["attention_mask"].bool()]
        assert not torch.allclose(again, expected)


def test_padded_positions_are_zeros(packed_calls: list[int]) -> None:
    model, batch = _model().train(), _batch()
    states = _fused.last_hidden_state(model, **batch)
    assert packed_calls == [1] and states.shape == (3, 9, 32)
    assert not states[batch["attention_mask"] == 0].any()


@pytest.mark.parametrize("case", ["no padding", "a row without tokens", "eager attention",
                                  "disabled", "adapter", "hook", "autocast", "inference",
                                  "other dropout", "gradient checkpointing",
                                  "inference, fused layers off"])
def test_transformers_path_where_packing_would_differ(case: str, packed_calls: list[int],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(attn_implementation="eager") if case == "eager attention" else _model()
    model.train()
    batch = _batch((9, 9, 9) if case == "no padding" else (9, 5, 0) if case == "a row without "
                   "tokens" else (9, 5, 2))
    if case == "disabled":
        monkeypatch.setattr(_packed, "ENABLED", False)
    elif case == "adapter":  # a LoRA-style layer in place of a projection
        class Adapted(torch.nn.Linear):
            pass
        model.encoder.layer[0].attention.self.query = Adapted(32, 32)
    elif case == "hook":
        model.encoder.layer[1].register_forward_hook(lambda *a: None)
    elif case.startswith("inference"):  # the fused inference path instead
        model.eval()
        if case.endswith("off"):  # FUNCFORMER_FUSED=0: transformers' layers, not packed ones
            monkeypatch.setattr(_fused, "ENABLED", False)
    elif case == "other dropout":
        model.encoder.layer[0].output.dropout = torch.nn.AlphaDropout(0.1)
    elif case == "gradient checkpointing":
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5.x
        (enable or model.gradient_checkpointing_enable)()
    context = torch.autocast("cpu", dtype=torch.bfloat16) if case == "autocast" else \
        torch.no_grad() if case.startswith("inference") else torch.enable_grad()
    with context:
        _fused.last_hidden_state(model, **batch)
    assert packed_calls == []


ROWS = [("good fun film", "pos"), ("bad", "neg"), ("a truly great and lovely story", "pos"),
        ("dull and long and slow", "neg")] * 3


def _trained(packed: bool, method: str, backbone: object, monkeypatch: pytest.MonkeyPatch,
             **options: object) -> dict[str, torch.Tensor]:
    """The weights a seeded run of `method` on a tiny backbone trains (for `lora` the adapter's),
    and its head's."""
    import funcformer
    from funcformer import _lora

    monkeypatch.setattr(_packed, "ENABLED", packed)
    fn = funcformer.train("classify", ROWS, backbone=str(backbone), method=method, epochs=3,
                          seed=0, progress=False, eval_fraction=0, **options)
    encoder = _lora.adapter_state(fn.encoder) if method == "lora" else fn.encoder.state_dict()
    return {**encoder, **{f"head.{k}": v for k, v in fn.head.state_dict().items()}}


def _same_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == expected.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_training_a_function_gives_the_same_weights(monkeypatch: pytest.MonkeyPatch,
                                                   tiny_backbone: object) -> None:
    """`full` on a tiny backbone, packed and not: the same seeded run, the same weights to
    rounding (dropout included)."""
    _same_weights(_trained(True, "full", tiny_backbone, monkeypatch),
                  _trained(False, "full", tiny_backbone, monkeypatch))


def _lora(model: torch.nn.Module, dropout: float, feed_forward: bool = True) -> torch.nn.Module:
    """`model` with PEFT's LoRA layers (`lora`'s own view), B not zero so that every adapter
    weight has a gradient."""
    from funcformer import _lora

    view = _lora.view(model, _lora.LoRA(r=4, dropout=dropout, feed_forward=feed_forward))
    torch.manual_seed(3)
    for name, param in view.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return view


def _same_gradients(grads: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Equal to rounding, measured against each tensor's largest entry (LoRA's gradients span
    several orders of magnitude), and none all zeros."""
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        scale = float(expected[name].abs().max())
        assert scale > 0, name
        torch.testing.assert_close(grad, expected[name], atol=1e-5 + 1e-6 * scale, rtol=1e-4,
                                   msg=name)


@pytest.mark.parametrize("feed_forward", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lora_same_states_and_gradients_as_peft(feed_forward: bool, mode: str,
                                                packed_calls: list[int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With PEFT's masks (`PEFT_MASKS`), LoRA's layers on the real tokens are PEFT's
    computation: the same seed gives the same states and adapter gradients (LoRA's dropout,
    attention's and the hidden dropout all on)."""
    monkeypatch.setattr(_packed, "PEFT_MASKS", True)
    model = getattr(_lora(_model(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3),
                          dropout=0.3, feed_forward=feed_forward), mode)()
    adapted = [m for m in model.modules() if _packed.is_lora(m)]
    assert len(adapted) == (12 if feed_forward else 8)
    batch = _batch()
    states, grads = _run(model, batch, True, monkeypatch)
    assert packed_calls == [1]
    expected, expected_grads = _run(model, batch, False, monkeypatch)
    assert packed_calls == [1]
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
    assert grads.keys() == expected_grads.keys()
    assert all("lora_" in name for name in grads) and len(grads) == 2 * len(adapted)
    _same_gradients(grads, expected_grads)


@pytest.mark.parametrize("dropout", ["lora", "hidden"])
def test_lora_masks_over_the_real_tokens(dropout: str, packed_calls: list[int],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """By default an encoder with LoRA layers draws its own masks (`keep_mask`), LoRA's and
    the hidden states': other numbers than PEFT's, the same under a seed; with both dropouts
    off the states are PEFT's again."""
    hidden, lora = (0.5, 0.0) if dropout == "hidden" else (0.0, 0.5)
    model = _lora(_model(hidden_dropout_prob=hidden, attention_probs_dropout_prob=0.0),
                  dropout=lora).train()
    batch = _batch()
    fast, _ = _run(model, batch, True, monkeypatch)
    again, _ = _run(model, batch, True, monkeypatch)
    monkeypatch.setattr(_packed, "PEFT_MASKS", True)
    peft, _ = _run(model, batch, True, monkeypatch)
    expected, _ = _run(model, batch, False, monkeypatch)
    assert packed_calls == [1, 1, 1]
    torch.testing.assert_close(fast, again, atol=0, rtol=0)
    torch.testing.assert_close(peft, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(fast, peft, atol=1e-3)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    monkeypatch.setattr(_packed, "PEFT_MASKS", False)
    plain, _ = _run(model, batch, True, monkeypatch)
    expected, _ = _run(model, batch, False, monkeypatch)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_keep_mask_is_dropout(p: float) -> None:
    """Each entry 0 or 1 / keep, dropped with probability p, independently of its neighbours
    (the four entries of one draw included), the mean kept at 1."""
    torch.manual_seed(0)
    mask = _packed.keep_mask((500, 801), p)
    assert mask.shape == (500, 801) and mask.dtype == torch.float32
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / (1 - p), rel=1e-4)]
    dropped = (mask == 0).float()
    assert abs(float(dropped.mean()) - p) < 0.005
    assert abs(float(mask.mean()) - 1) < 0.01
    flat = dropped.flatten()
    for lag in (1, 2, 3, 4):  # neighbours in one draw and across draws
        assert abs(float(torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1])) < 0.01
    torch.manual_seed(0)
    assert torch.equal(_packed.keep_mask((500, 801), p), mask)


@pytest.mark.parametrize("case", ["merged", "disabled", "dora"])
def test_lora_transformers_path_where_packing_would_differ(case: str, packed_calls: list[int]
                                                           ) -> None:
    """PEFT's forward where `_packed` would not compute it: a merged adapter, adapters
    disabled, a LoRA variant (DoRA)."""
    from peft import LoraConfig, inject_adapter_in_model

    model = _model().train()
    config = LoraConfig(r=4, target_modules=["query", "value"], use_dora=case == "dora")
    inject_adapter_in_model(config, model, adapter_name="default")
    adapted = [m for m in model.modules() if _packed.is_lora(m)]
    assert adapted
    for module in adapted:
        if case == "merged":
            module.merge()
        elif case == "disabled":
            module.enable_adapters(False)
    _fused.last_hidden_state(model, **_batch())
    assert packed_calls == []


def test_training_a_lora_function_gives_the_same_adapter(packed_calls: list[int],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        tiny_backbone: object) -> None:
    """`lora` on a tiny backbone runs packed, and with PEFT's masks gives PEFT's adapter to
    rounding (dropout included)."""
    monkeypatch.setattr(_packed, "PEFT_MASKS", True)
    options = {"lora": {"r": 4, "dropout": 0.2, "feed_forward": True}}
    packed = _trained(True, "lora", tiny_backbone, monkeypatch, **options)
    assert packed_calls
    packed_calls.clear()
    _same_weights(packed, _trained(False, "lora", tiny_backbone, monkeypatch, **options))
    assert not packed_calls


@pytest.mark.parametrize("lengths", [(9, 5, 2), (9, 9, 9)])
@pytest.mark.parametrize("feed_forward", [False, True])
def test_lora_inference_on_the_fused_layers(lengths: tuple[int, ...], feed_forward: bool,
                                           packed_calls: list[int],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A LoRA encoder's inference (no gradients, eval mode) takes the fused oneDNN layers,
    which add the adapters' terms: PEFT's states. Without oneDNN (the native op has no place
    for them) the packed layers compute it, with `FUNCFORMER_FUSED=0` transformers' layers."""
    if not _fused._onednn():
        pytest.skip("the fused layers compute adapters on oneDNN only")
    model = _lora(_model(), dropout=0.1, feed_forward=feed_forward).eval()
    batch = _batch(lengths)
    real = batch["attention_mask"].bool()
    fused: list[int] = []
    original = _fused._Plan._onednn_layers
    monkeypatch.setattr(_fused._Plan, "_onednn_layers",
                        lambda *a, **k: fused.append(1) or original(*a, **k))
    with torch.no_grad():
        states = _fused.last_hidden_state(model, **batch)[real]
        assert fused == [1] and packed_calls == []
        monkeypatch.setattr(_fused, "ONEDNN", False)
        packed = _fused.last_hidden_state(model, **batch)[real]
        assert fused == [1] and packed_calls == [1]
        monkeypatch.setattr(_fused, "ENABLED", False)
        expected = _fused.last_hidden_state(model, **batch)[real]
    assert fused == [1] and packed_calls == [1]
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=1e-4)


def test_lora_inference_shares_the_backbones_fused_weights() -> None:
    """Two adapters on one backbone use its packed and reordered weights: one copy; a merged
    adapter (private weights) and a changed base weight make their own."""
    if not _fused._onednn():
        pytest.skip("the fused layers compute adapters on oneDNN only")
    from funcformer._lora import merged

    backbone = _model().eval()
    views = [_lora(backbone, dropout=0.1).eval() for _ in range(2)]
    batch = _batch()
    with torch.no_grad():
        for model in (backbone, *views):
            _fused.last_hidden_state(model, **batch)
    plans = [_fused._plan_for(m) for m in (backbone, *views)]
    assert not plans[0].adapted and plans[1].adapted and plans[2].adapted
    weights = [plan._onednn_weights()[0] for plan in plans]  # the first layer's
    assert all(a is b for view in weights[1:] for a, b in zip(view, weights[0], strict=True))
    private = merged(_lora(backbone, dropout=0.1).eval())
    assert not _fused._plan_for(private).adapted
    assert _fused._plan_for(private)._onednn_weights()[0][0] is not weights[0][0]
    query = views[0].encoder.layer[0].attention.self.query
    query.base_layer.weight = torch.nn.Parameter(query.base_layer.weight.detach().clone(),
                                                 requires_grad=False)
    assert _fused._plan_for(views[0])._onednn_weights()[0][0] is not weights[0][0]
    assert _fused._plan_for(views[1])._onednn_weights()[0][0] is weights[0][0]



def test_lora_training_without_padding_is_packed(packed_calls: list[int],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch without padding takes the packed layers when LoRA's are in it (their masks),
    transformers' otherwise (as fast there, and the same numbers)."""
    batch = _batch((9, 9, 9))
    _fused.last_hidden_state(_model().train(), **batch)
    assert packed_calls == []
    monkeypatch.setattr(_packed, "PEFT_MASKS", True)
    model = _lora(_model(hidden_dropout_prob=0.3), dropout=0.3).train()
    states, grads = _run(model, batch, True, monkeypatch)
    assert packed_calls == [1]
    expected, expected_grads = _run(model, batch, False, monkeypatch)
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
    _same_gradients(grads, expected_grads)


def _two_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with two active adapters, "one" with LoRA's bias and "two" with rsLoRA's
    scaling, on the query and every dense projection; B not zero."""
    from peft import LoraConfig, inject_adapter_in_model

    for name, extra in (("one", {"lora_bias": True}), ("two", {"use_rslora": True})):
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["query", "dense"],
                            **extra)
        inject_adapter_in_model(config, model, adapter_name=name)
    torch.manual_seed(3)
    adapted = [m for m in model.modules() if _packed.is_lora(m)]
    for module in adapted:
        module.set_adapter(["one", "two"])
        for name, param in module.named_parameters():
            if "lora_B" in name:  # its weight, and LoRA's bias
                torch.nn.init.normal_(param, std=0.5)
            elif name.endswith("bias"):  # the base layer's (BERT starts them at zero)
                torch.nn.init.normal_(param, std=0.1)
    assert adapted and all(len(m.active_adapters) == 2 for m in adapted)
    return model


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # the second adapter
def test_lora_two_adapters_bias_and_rslora_as_peft(packed_calls: list[int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two active adapters, LoRA's bias and rsLoRA's scaling: still PEFT's computation."""
    monkeypatch.setattr(_packed, "PEFT_MASKS", True)
    model = _two_adapters(_model(hidden_dropout_prob=0.2).train())
    batch = _batch()
    states, grads = _run(model, batch, True, monkeypatch)
    assert packed_calls == [1]
    expected, expected_grads = _run(model, batch, False, monkeypatch)
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
    assert any("lora_B.one.bias" in name for name in grads)
    _same_gradients({n: g for n, g in grads.items() if "lora_" in n},
                    {n: g for n, g in expected_grads.items() if "lora_" in n})


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_lora_inference_two_adapters_bias_and_rslora_on_the_fused_layers(
        packed_calls: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused oneDNN layers add both adapters' terms, LoRA's bias and rsLoRA's scaling in
    inference too (the query's third of the QKV product, each dense projection): PEFT's
    states."""
    if not _fused._onednn():
        pytest.skip("the fused layers compute adapters on oneDNN only")
    model = _two_adapters(_model()).eval()
    batch = _batch()
    real = batch["attention_mask"].bool()
    fused: list[int] = []
    original = _fused._Plan._onednn_layers
    monkeypatch.setattr(_fused._Plan, "_onednn_layers",
                        lambda *a, **k: fused.append(1) or original(*a, **k))
    with torch.no_grad():
        states = _fused.last_hidden_state(model, **batch)[real]
        expected = model(**batch).last_hidden_state[real]
    assert fused == [1] and packed_calls == []
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)


def test_dora_is_not_plain_lora_on_older_peft() -> None:
    """PEFT before 0.15 marks DoRA in `use_dora` only (no `lora_variant`): still not plain."""
    from peft import LoraConfig, inject_adapter_in_model

    model = _model()
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["query"], use_dora=True), model,
                            adapter_name="default")
    adapted = [m for m in model.modules() if _packed.is_lora(m)]
    assert adapted and not any(_packed.plain_lora(m) for m in adapted)
    for module in adapted:
        del module.lora_variant
        module.use_dora = {"default": True}
    assert not any(_packed.plain_lora(m) for m in adapted)
    for module in adapted:
        module.use_dora = {}
    assert all(_packed.plain_lora(m) for m in adapted)


def test_keep_mask_extreme_probabilities() -> None:
    """p near 0 or 1 rounds to one 2^-16 step from it, never to no dropout or a zero keep."""
    torch.manual_seed(0)
    assert (_packed.keep_mask((64, 64), 1e-7) == 0).sum() < 5
    high = _packed.keep_mask((64, 64), 1 - 1e-7)
    assert torch.isfinite(high).all() and (high == 0).sum() > 4000


def test_lora_inference_never_takes_the_native_op(packed_calls: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN turned off between the check and the call: PEFT's states from another path, not
    the native op without the adapters."""
    model = _lora(_model(), dropout=0.1).eval()
    batch = _batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = model(**batch).last_hidden_state[real]
        plan = _fused._plan_for(model)
        monkeypatch.setattr(_fused._Plan, "computes_adapters", lambda self: True)
        monkeypatch.setattr(_fused, "ONEDNN", False)
        states = _fused.last_hidden_state(model, **batch)[real]
    assert plan is not None and plan.adapted and packed_calls == [1]
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)


def test_forget_on_a_lora_copy_drops_the_shared_weights() -> None:
    """A base weight written through `.data` (no version counter moves): `forget` on the LoRA
    copy also drops the backbone's fused weights it shares, so the next call sees the write."""
    if not _fused._onednn():
        pytest.skip("the fused layers compute adapters on oneDNN only")
    backbone = _model().eval()
    view = _lora(backbone, dropout=0.1).eval()
    batch = _batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        _fused.last_hidden_state(view, **batch)
        view.encoder.layer[0].attention.self.query.base_layer.weight.data.mul_(2)
        _fused.forget(view)
        states = _fused.last_hidden_state(view, **batch)[real]
        expected = view(**batch).last_hidden_state[real]
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=1e-4)
