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


def test_training_a_function_gives_the_same_weights(monkeypatch: pytest.MonkeyPatch,
                                                   tiny_backbone: object) -> None:
    """`full` on a tiny backbone, packed and not: the same seeded run, the same weights to
    rounding (dropout included)."""
    import funcformer

    rows = [("good fun film", "pos"), ("bad", "neg"), ("a truly great and lovely story", "pos"),
            ("dull and long and slow", "neg")] * 3
    weights = []
    for packed in (True, False):
        monkeypatch.setattr(_packed, "ENABLED", packed)
        fn = funcformer.train("classify", rows, backbone=str(tiny_backbone), method="full",
                              epochs=3, seed=0, progress=False, eval_fraction=0)
        weights.append({**fn.encoder.state_dict(),
                        **{f"head.{k}": v for k, v in fn.head.state_dict().items()}})
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], atol=1e-5, rtol=1e-4, msg=name)
