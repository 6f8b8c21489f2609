"""The fused encoder layers (`_fused`): the same hidden states as transformers where they are
used, transformers' own path wherever they would not compute the same thing."""

from __future__ import annotations

import contextlib
import platform
import threading

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from funcformer import _fused

SIZES = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position_embeddings=40)


def _bert(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return BertModel(BertConfig(**{**SIZES, **overrides})).eval()


def _roberta(kind: tuple = (RobertaModel, RobertaConfig)) -> torch.nn.Module:
    torch.manual_seed(0)
    model, config = kind
    return model(config(**{**SIZES, "max_position_embeddings": 44}, pad_token_id=1)).eval()


def _xlm_roberta() -> torch.nn.Module:
    return _roberta((XLMRobertaModel, XLMRobertaConfig))


def _batch(types: bool = False) -> dict[str, torch.Tensor]:
    """Three rows of 9, 5 and 2 real tokens, right-padded (ids 0 / RoBERTa's 1 at pads)."""
    torch.manual_seed(1)
    ids = torch.randint(3, 60, (3, 9))
    mask = torch.zeros((3, 9), dtype=torch.long)
    for row, length in enumerate((9, 5, 2)):
        mask[row, :length] = 1
    ids = ids.masked_fill(mask == 0, 1)
    batch = {"input_ids": ids, "attention_mask": mask}
    if types:
        batch["token_type_ids"] = (torch.arange(9) >= 4).long().expand(3, 9) * mask
    return batch


@pytest.fixture(params=["onednn", "native"], autouse=True)
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: float32 layers on oneDNN's fused linear op, and on the native op."""
    monkeypatch.setattr(_fused, "ONEDNN", request.param == "onednn")
    return str(request.param)


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts fused layers run: calls of the native op, or of oneDNN's feed-forward input
    product (the one with an activation: one per layer)."""
    calls: list[int] = []
    native, linear = torch._transformer_encoder_layer_fwd, _fused._linear

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return native(*args)

    def counted_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       activation: str | None) -> torch.Tensor:
        if activation is not None:
            calls.append(1)
        return linear(x, weight, bias, activation)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", counted)
    monkeypatch.setattr(_fused, "_linear", counted_linear)
    return calls


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="oneDNN's fused linear op is checked on x86 builds")
def test_onednn_runs_float32_layers_where_it_agrees(kernels: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = _bert(), _batch()
    calls: list[int] = []
    native = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd",
                        lambda *args: calls.append(1) or native(*args))
    with torch.inference_mode():
        _fused.last_hidden_state(model, **batch)
    assert _fused._onednn()  # this x86 torch has the op, and it agrees with F.linear
    assert len(calls) == (0 if kernels == "onednn" else 2)
    # a build whose op disagrees (or is missing) keeps the native op
    monkeypatch.setattr(_fused, "_onednn_checked", None)
    monkeypatch.setattr(_fused, "_linear", lambda x, w, b, activation: x.new_zeros(()))
    assert not _fused._onednn()


@pytest.mark.parametrize("make, types", [(_bert, False), (_bert, True), (_roberta, False),
                                         (_xlm_roberta, False)])
def test_same_states_as_transformers(make, types, monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = make(), _batch(types)
    calls = _calls(monkeypatch)
    with torch.inference_mode():
        expected = model(**batch).last_hidden_state
        got = _fused.last_hidden_state(model, **batch)
    assert len(calls) == 2  # one per layer: the fused path ran
    real = batch["attention_mask"].bool()
    assert got.shape == expected.shape
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-4)
    assert torch.isfinite(got).all()  # pads hold no NaN that pooling would spread


def test_bfloat16_matches_transformers_in_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = _bert().to(torch.bfloat16), _batch()
    calls = _calls(monkeypatch)
    with torch.inference_mode():
        expected = model(**batch).last_hidden_state.float()
        got = _fused.last_hidden_state(model, **batch)
    assert calls and got.dtype == torch.bfloat16
    real = batch["attention_mask"].bool()
    # bfloat16 keeps 8 bits of mantissa; the two paths round in other places
    assert (got.float()[real] - expected[real]).abs().max() < 0.1


def test_no_padding_and_single_row() -> None:
    model = _bert()
    batch = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones((1, 4),
                                                                               dtype=torch.long)}
    with torch.inference_mode():
        torch.testing.assert_close(_fused.last_hidden_state(model, **batch),
                                   model(**batch).last_hidden_state, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["grad", "training", "hook", "pooler hook", "adapter",
                                  "activation", "decoder", "half", "inputs_embeds"])
def test_transformers_path_where_fused_would_differ(case: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = _bert(hidden_act="gelu_new") if case == "activation" else \
        _bert(is_decoder=True) if case == "decoder" else _bert()
    batch: dict[str, torch.Tensor] = _batch()
    seen: list[int] = []
    if case == "training":
        model.train()
    elif case == "hook":  # a hook on a layer would not run on the fused path
        model.encoder.layer[1].register_forward_hook(lambda *a: seen.append(1))
    elif case == "pooler hook":  # nor one on the pooler, which it does not compute
        model.pooler.register_forward_hook(lambda *a: seen.append(1))
    elif case == "adapter":  # a LoRA-style layer in place of a projection
        class Adapted(torch.nn.Linear):
            pass
        query = model.encoder.layer[0].attention.self.query
        adapted = Adapted(32, 32)
        adapted.load_state_dict(query.state_dict())
        model.encoder.layer[0].attention.self.query = adapted
    elif case == "half":
        model = model.half()
    elif case == "inputs_embeds":
        batch = {"inputs_embeds": model.embeddings.word_embeddings(batch["input_ids"]).detach(),
                 "attention_mask": batch["attention_mask"]}
    calls = _calls(monkeypatch)
    context = torch.enable_grad() if case == "grad" else torch.no_grad()
    with context:
        got = _fused.last_hidden_state(model, **batch)
        if case != "half":  # (fp16 matrix products on a CPU: the result is the check above)
            real = batch["attention_mask"].bool()  # (grad, training: `_packed`, zeros at pads)
            expected = model(**batch).last_hidden_state
            assert torch.equal(got[real], expected[real]) or case == "training"
    assert calls == []
    if case.endswith("hook"):
        assert seen == [1, 1]  # ran in both calls


def test_a_layer_replaced_after_use_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = _bert(), _batch()
    calls = _calls(monkeypatch)
    with torch.no_grad():
        _fused.last_hidden_state(model, **batch)
        assert len(calls) == 2
        model.encoder.layer[0].attention.self.key = torch.nn.Identity()  # not a Linear
        got = _fused.last_hidden_state(model, **batch)
        assert len(calls) == 2  # transformers' path from then on
        torch.testing.assert_close(got, model(**batch).last_hidden_state)


def _agrees_with_transformers(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """The fused states of the real tokens are transformers' (a no_grad call, so weights that
    are not inference tensors keep their version counters)."""
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        torch.testing.assert_close(_fused.last_hidden_state(model, **batch)[real],
                                   model(**batch).last_hidden_state[real], atol=2e-5, rtol=1e-4)


def test_weights_changed_in_place_are_used() -> None:
    """The packed QKV weights are rebuilt when a query/key/value weight changes: in place with
    a version bump (a state dict loaded), by a fused optimizer step (after a backward), or
    in any way after `forget`."""
    model, batch = _bert(), _batch()

    def agrees() -> None:
        _agrees_with_transformers(model, batch)

    agrees()
    state = {k: v + 0.05 for k, v in model.state_dict().items() if "value" in k}
    model.load_state_dict(state, strict=False)
    agrees()
    # the other products' weights, reordered for oneDNN, are rebuilt on such a change too
    for name in ("intermediate.dense.weight", "output.dense.weight"):
        model.load_state_dict({k: v * 1.1 for k, v in model.state_dict().items()
                               if k.endswith(name)}, strict=False)
        agrees()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    model.train()
    model(**batch).last_hidden_state.sum().backward()
    optimizer.step()  # fused: no version bump, but the gradient is new
    model.eval()
    agrees()
    with torch.no_grad():  # a change no counter sees: `forget` drops the packed weights
        model.encoder.layer[0].attention.self.query.weight.data.mul_(1.5)
    _fused.forget(model)
    agrees()


def test_the_shared_backbone_gives_the_same_features_either_way(
        tiny_backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    from funcformer import _backbone

    backbone = _backbone.load(tiny_backbone)
    texts = ["the food was good", "bad", "the room was very clean and the staff was kind"]
    fused, _ = backbone.embed(texts)
    monkeypatch.setattr(_fused, "_plan_for", lambda encoder: None)
    plain, _ = backbone.embed(texts)
    assert abs(fused - plain).max() < 1e-5


# Found in review (see the report): each fails on the current `_fused`.


def test_an_encoder_run_fused_can_still_be_freed() -> None:
    import gc
    import weakref

    model = _bert()
    alive = weakref.ref(model)
    with torch.no_grad():
        _fused.last_hidden_state(model, **_batch())
    del model
    gc.collect()
    assert alive() is None


def test_a_fused_optimizer_step_then_zero_grad_is_seen() -> None:
    model, batch = _bert(), _batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        _fused.last_hidden_state(model, **batch)  # packed with no gradient in the stamp
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    model.train()
    model(**batch).last_hidden_state.sum().backward()
    optimizer.step()
    optimizer.zero_grad()  # set_to_none=True: the gradient part of the stamp is as before
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(_fused.last_hidden_state(model, **batch)[real],
                                   model(**batch).last_hidden_state[real],
                                   atol=2e-5, rtol=1e-4)


def test_a_row_without_tokens_stays_finite() -> None:
    from funcformer._backbone import Pooling, pool

    model, batch = _bert(), _batch()
    batch["attention_mask"][2] = 0
    with torch.no_grad():
        got = _fused.last_hidden_state(model, **batch)
    assert torch.isfinite(pool(got, batch["attention_mask"], Pooling("mean"))).all()


def test_autocast_gives_what_transformers_gives() -> None:
    model, batch = _bert(), _batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = _fused.last_hidden_state(model, **batch)
        expected = model(**batch).last_hidden_state
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got, expected)


def test_an_activation_module_replaced_is_noticed() -> None:
    model, batch = _bert(), _batch()
    with torch.no_grad():
        _fused.last_hidden_state(model, **batch)
        model.encoder.layer[1].intermediate.intermediate_act_fn = torch.nn.Tanh()
        torch.testing.assert_close(_fused.last_hidden_state(model, **batch),
                                   model(**batch).last_hidden_state)


def test_weights_made_in_inference_mode() -> None:
    batch = _batch()
    with torch.inference_mode():
        model = _bert()
        torch.testing.assert_close(_fused.last_hidden_state(model, **batch),
                                   model(**batch).last_hidden_state, atol=2e-5, rtol=1e-4)


def test_training_linears_give_the_same_gradients(kernels: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Training steps' float32 CPU linears on oneDNN (forward and both backward products):
    the loss and every gradient as PyTorch's own; under bfloat16 or autocast, untouched."""
    model = _bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    batch = _batch(True)
    # a loss every weight and bias moves (the mean square of LayerNorm outputs barely does)
    direction = torch.randn(3, 9, SIZES["hidden_size"], generator=torch.Generator().manual_seed(2))

    def gradients(context: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with context:  # type: ignore[attr-defined]
            loss = (model(**batch).last_hidden_state * direction).sum()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}

    calls: list[str | None] = []
    linear = _fused._linear

    def counted(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                activation: str | None) -> torch.Tensor:
        calls.append(activation)
        return linear(x, weight, bias, activation)

    _fused._onednn()  # its one-off check calls the op too
    monkeypatch.setattr(_fused, "_linear", counted)
    plain_loss, plain = gradients(contextlib.nullcontext())
    assert not calls
    loss, grads = gradients(_fused.training_linears(model))
    # 6 linears a layer, 2 layers, and the pooler: 13 forward products; backward, both
    # products of each but the pooler's (the loss does not use its output)
    assert len(calls) == (0 if kernels == "native" else 13 + 2 * 12)
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain.keys()
    for name, grad in grads.items():  # within 1e-4 of each gradient's own scale
        # (the key bias's is 0 up to rounding: softmax ignores what it adds to every score)
        scale = max(float(plain[name].abs().max()), 1e-5)
        assert float((grad - plain[name]).abs().max()) <= 1e-4 * scale, name
    # an output changed in place (PEFT's adapters add to the base layer's) keeps its gradient
    x = torch.randn(2, 3, 8, requires_grad=True)
    weight = torch.randn(5, 8, requires_grad=True)
    with _fused.training_linears(model):
        out = torch.nn.functional.linear(x, weight)
    out += 1.0
    out.square().sum().backward()
    assert torch.allclose(x.grad, (2 * (x.detach() @ weight.detach().T + 1)) @ weight.detach(),
                          atol=1e-4)
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16), _fused.training_linears(model):
        (model(**batch).last_hidden_state.float() * direction).sum().backward()
    assert not calls  # autocast's casts apply, as without the context
    assert isinstance(_fused.training_linears(_bert().to(torch.bfloat16)),
                      contextlib.nullcontext)


def test_training_linears_edge_cases(kernels: str) -> None:
    """Empty products, a frozen weight's input changed after use, checkpointing, a second
    derivative: as PyTorch's own linear does them, or a loud error."""
    model = _bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    linear = torch.nn.functional.linear
    weight = torch.randn(5, 8, requires_grad=True)
    with _fused.training_linears(model):
        empty = linear(torch.randn(0, 8, requires_grad=True), weight, torch.zeros(5))
        x = torch.randn(4, 8, requires_grad=True)
        inputs = x * 1.0
        frozen = linear(inputs, weight.detach())  # nothing kept of the input: W is frozen
        y = linear(x, weight)
    inputs.add_(1.0)  # so changing it afterwards is allowed, as it is for PyTorch's linear
    empty.sum().backward()
    assert weight.grad is not None and not weight.grad.any()
    frozen.sum().backward()  # the native linear saves no input for a frozen weight either
    if kernels == "onednn":
        with pytest.raises(RuntimeError):  # once differentiable: no silent zero
            torch.autograd.grad(torch.autograd.grad(y.square().sum(), weight,
                                                    create_graph=True)[0].sum(), x)
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers 5.x
    (enable or model.gradient_checkpointing_enable)()
    assert isinstance(_fused.training_linears(model), contextlib.nullcontext)


def test_inference_falls_back_when_onednn_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = _bert(), _batch()
    monkeypatch.setattr(_fused, "ONEDNN", True)
    monkeypatch.setattr(_fused, "_onednn_checked", True)

    def refuses(*args: object) -> torch.Tensor:
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(_fused, "_linear", refuses)
    with torch.inference_mode():
        got = _fused.last_hidden_state(model, **batch)
        expected = model(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-4)
    assert _fused._onednn_checked is False


def test_a_repack_by_another_thread_never_sticks(kernels: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread changes a query weight and repacks while this call readies its
    reordered weights: this call may use what it saw, the next ones the new weights (the
    cache was once labelled with the new packing but built from the old, stale for good)."""
    if kernels == "native":
        pytest.skip("the reordered weights are the oneDNN path's")
    model, batch = _bert(), _batch()

    def agrees() -> None:
        _agrees_with_transformers(model, batch)

    agrees()
    plan = _fused._plans[model]
    query = model.encoder.layer[0].attention.self.query

    def change_and_repack() -> None:  # what a thread training this encoder does
        with torch.no_grad():
            query.weight.add_(torch.randn_like(query.weight))
        plan._qkv()

    workers: list[threading.Thread] = []
    reorders = _fused._reorders

    def racing() -> bool:
        if not workers:
            workers.append(threading.Thread(target=change_and_repack))
            workers[0].start()
            workers[0].join(timeout=0.5)  # it waits for the plan's lock, if held
        return reorders()

    monkeypatch.setattr(_fused, "_reorders", racing)
    with torch.no_grad():
        _fused.last_hidden_state(model, **batch)
    workers[0].join()
    agrees()
    agrees()
