"""Embedding tables trained row by row (`_rows`): sparse gradients, AdamW's arithmetic on the
rows they touch, clipping that counts them, and checkpoints that resume."""

from __future__ import annotations

import math

import pytest
import torch

from funcformer import _rows
from funcformer._rows import RowAdamW, SparseTables, clip_gradients


def _steps(weight: torch.nn.Parameter, optimizer: torch.optim.Optimizer, sparse: bool,
           steps: range, schedule: bool = True) -> None:
    """Seeded steps on a loss over a few rows of `weight`, more rows as they go; the learning
    rate moves each step (as a schedule's does)."""
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        ids = torch.randint(0, 5 + step, (6,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.embedding(ids, weight, sparse=sparse).pow(3).sum().backward()
        if schedule:
            optimizer.param_groups[0]["lr"] = 0.02 / (1 + step)
        optimizer.step()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fused", [False, True])
def test_row_steps_are_adamw_steps(dtype: torch.dtype, fused: bool) -> None:
    """Rows touched once keep moving on their moments, the others only decay: dense AdamW's
    numbers (exactly in float64; to rounding against the fused kernel in float32)."""
    torch.manual_seed(0)
    dense = torch.nn.Parameter(torch.randn(50, 4, dtype=dtype))
    rows = torch.nn.Parameter(dense.detach().clone())
    _steps(dense, torch.optim.AdamW([dense], lr=0.02, weight_decay=0.1, fused=fused), False,
           range(30))
    optimizer = RowAdamW([rows], lr=0.02, weight_decay=0.1, fused=fused)
    _steps(rows, optimizer, True, range(30))
    if dtype == torch.float64:
        assert torch.equal(rows, dense)
    torch.testing.assert_close(rows, dense, atol=1e-6, rtol=1e-5)
    touched = optimizer.state[rows]["rows"]
    assert touched.tolist() == sorted(set(touched.tolist())) and 5 < len(touched) < 50


def test_dense_gradients_take_adamw_own_step() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 3))
    b = torch.nn.Parameter(a.detach().clone())
    _steps(a, torch.optim.AdamW([a], lr=0.02), False, range(5))
    optimizer = RowAdamW([b], lr=0.02)
    _steps(b, optimizer, False, range(5))
    assert torch.equal(a, b) and "rows" not in optimizer.state[b]


def test_a_checkpointed_state_resumes_to_the_same_weights() -> None:
    """The state dict round trip turns the rows into floats (the parameter's dtype): the steps
    after it still give an uninterrupted run's weights."""
    torch.manual_seed(0)
    start = torch.randn(40, 4)
    whole = torch.nn.Parameter(start.clone())
    _steps(whole, RowAdamW([whole], lr=0.02, weight_decay=0.1), True, range(12))
    first = torch.nn.Parameter(start.clone())
    optimizer = RowAdamW([first], lr=0.02, weight_decay=0.1)
    _steps(first, optimizer, True, range(6))
    saved = optimizer.state_dict()
    resumed = torch.nn.Parameter(first.detach().clone())
    again = RowAdamW([resumed], lr=0.02, weight_decay=0.1)
    again.load_state_dict(saved)
    assert again.state[resumed]["rows"].dtype == torch.float32
    _steps(resumed, again, True, range(6, 12))
    assert torch.equal(resumed, whole)


def test_dense_adamw_state_goes_on_row_by_row() -> None:
    """A checkpoint of dense AdamW (a GPU run, an older release) resumed with sparse
    gradients: the rows whose moments moved keep moving, as they would under AdamW."""
    torch.manual_seed(0)
    start = torch.randn(40, 4)
    whole = torch.nn.Parameter(start.clone())
    dense_run = torch.optim.AdamW([whole], lr=0.02, weight_decay=0.1)
    _steps(whole, dense_run, False, range(12))
    first = torch.nn.Parameter(start.clone())
    dense = torch.optim.AdamW([first], lr=0.02, weight_decay=0.1)
    _steps(first, dense, False, range(6))
    resumed = torch.nn.Parameter(first.detach().clone())
    rows = RowAdamW([resumed], lr=0.02, weight_decay=0.1)
    rows.load_state_dict(dense.state_dict())
    _steps(resumed, rows, True, range(6, 12))
    torch.testing.assert_close(resumed, whole, atol=1e-6, rtol=1e-5)
    _steps(resumed, rows, False, range(12, 13))  # a dense step: the rows are found again
    assert "rows" not in rows.state[resumed]
    _steps(resumed, rows, True, range(13, 14))
    assert len(rows.state[resumed]["rows"]) > 0


def test_a_closure_steps_its_own_sparse_gradients() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 3))
    b = torch.nn.Parameter(a.detach().clone())
    ids = torch.tensor([1, 2, 2, 5])
    for weight, optimizer, sparse in ((a, torch.optim.AdamW([a], lr=0.1), False),
                                      (b, RowAdamW([b], lr=0.1), True)):
        def closure(weight: torch.Tensor = weight, optimizer: object = optimizer,
                    sparse: bool = sparse) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.embedding(ids, weight, sparse=sparse).pow(2).sum()
            loss.backward()
            return loss.detach()

        assert float(optimizer.step(closure)) > 0
    assert torch.equal(a, b)


def test_clipping_counts_sparse_gradients_as_dense_ones() -> None:
    torch.manual_seed(0)
    table, other = torch.randn(20, 3), torch.randn(5)
    ids = torch.tensor([1, 4, 4, 7])  # a repeated row: its gradients sum
    norms, grads = [], []
    for sparse in (True, False):
        weight = torch.nn.Parameter(table.clone())
        vector = torch.nn.Parameter(other.clone())
        loss = (torch.nn.functional.embedding(ids, weight, sparse=sparse).sum() * 40
                + (vector * 30).pow(2).sum())
        loss.backward()
        norms.append(clip_gradients([weight, vector], 1.0) if sparse else
                     torch.nn.utils.clip_grad_norm_([weight, vector], 1.0))
        grads.append((weight.grad.to_dense(), vector.grad))
    torch.testing.assert_close(norms[0], norms[1])
    assert norms[0] > 1.0  # so it did clip
    for mine, theirs in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("size", [30.0, 1e-3, float("nan")])  # clips, does not, NaN spreads
def test_clipping_dense_gradients_is_torchs_to_the_bit(size: float) -> None:
    torch.manual_seed(0)
    shapes = [(64, 16), (16,), (7, 3, 2)]
    values = [torch.randn(shape) * (30.0 if math.isnan(size) else size) for shape in shapes]
    if math.isnan(size):
        values[1][3] = size  # one NaN: torch's scale is NaN, so every gradient becomes NaN
    norms, grads = [], []
    for clip in (clip_gradients, torch.nn.utils.clip_grad_norm_):
        params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
        for p, v in zip(params, values, strict=True):
            p.grad = v.clone()
        params.append(torch.nn.Parameter(torch.zeros(2)))  # no gradient: left out
        norms.append(clip(params, 1.0))
        grads.append([p.grad for p in params[:-1]])
    torch.testing.assert_close(norms[0], norms[1], rtol=0, atol=0, equal_nan=True)
    for mine, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0, equal_nan=True)
    if size > 1:
        assert norms[0] > 1.0 and not torch.equal(grads[0][0], values[0])  # it did clip
    if math.isnan(size):
        assert all(g.isnan().all() for g in grads[0])


def test_sparse_only_for_row_adamw_and_tables_that_are_not_shared() -> None:
    model = torch.nn.ModuleDict({"words": torch.nn.Embedding(30, 4),
                                 "frozen": torch.nn.Embedding(30, 4),
                                 "tied": torch.nn.Embedding(30, 4),
                                 "head": torch.nn.Linear(4, 30, bias=False)})
    model["frozen"].weight.requires_grad_(False)
    model["head"].weight = model["tied"].weight  # a language model head tied to its inputs
    assert _rows.tables(model) == [model["words"]]
    with SparseTables(model, RowAdamW(model.parameters(), lr=0.1)):
        assert [m.sparse for m in (model["words"], model["frozen"], model["tied"])] == \
            [True, False, False]
    assert not model["words"].sparse
    with SparseTables(model, torch.optim.SGD(model.parameters(), lr=0.1)):
        assert not model["words"].sparse


def test_training_a_function_trains_its_tables_row_by_row(
        monkeypatch: pytest.MonkeyPatch, tiny_backbone: object) -> None:
    """`full` on a tiny backbone: the word table's gradients are sparse in the loop, and the
    weights are those of the dense run to rounding."""
    import funcformer

    rows = [("good fun film", "pos"), ("bad", "neg"), ("a truly great and lovely story", "pos"),
            ("dull and long and slow", "neg")] * 3
    seen: list[bool] = []
    step = RowAdamW._rows_step

    def spied(self: RowAdamW, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        seen.append(grad.is_sparse)
        step(self, group, p, grad)

    monkeypatch.setattr(RowAdamW, "_rows_step", spied)
    weights = []
    for sparse in (True, False):
        if not sparse:
            monkeypatch.setattr(_rows, "tables", lambda model: [])
        fn = funcformer.train("classify", rows, backbone=str(tiny_backbone), method="full",
                              epochs=3, seed=0, progress=False, eval_fraction=0)
        weights.append(fn.encoder.state_dict())
        if sparse:
            assert seen and all(seen)  # word, position and token-type tables
            seen.clear()
    assert seen == []
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], atol=1e-5, rtol=1e-4, msg=name)
