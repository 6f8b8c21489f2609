"""The torch module a function runs: encoder -> pooling -> head. One graph, easy to export.

Heads: `LinearHead` (the default), `MLPHead`, or a module made by the user's factory, named by
import path; `HeadChoice` says which and rebuilds it from the artifact's record.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._backbone import Pooling, pool
from ._errors import FuncformerError, TaskError
from ._fused import last_hidden_state


class LinearHead(torch.nn.Module):
    """Dropout then one linear layer: pooled features (B, H) -> logits (B, C)."""

    def __init__(self, hidden: int, outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(hidden, outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))


class MLPHead(torch.nn.Module):
    """Dropout, linear to `width` units, GELU, dropout, linear: features (B, H) -> (B, C)."""

    def __init__(self, hidden: int, outputs: int, width: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Dropout(dropout), torch.nn.Linear(hidden, width), torch.nn.GELU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(width, outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


@dataclass(frozen=True)
class HeadChoice:
    """Which head a classifier builds: "linear", "mlp" (`options["width"]` hidden units) or a
    factory's import path "package.module:function" (called with `options` as keywords).

    >>> HeadChoice("mlp", {"width": 8}).build(4, 2).layers[1].out_features
    8
    """

    kind: str = "linear"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> HeadChoice:
        """The head a TrainConfig asks for."""
        if config.head == "linear":
            return cls()
        if config.head == "mlp":
            return cls("mlp", {"width": int(config.head_hidden)})
        return cls(config.head, dict(config.head_options or {}))

    @classmethod
    def from_record(cls, record: Any) -> HeadChoice:
        """The head an artifact's HeadSpec records (see `record`)."""
        kind = getattr(record, "factory", None) or record.type
        return cls(kind, dict(getattr(record, "options", None) or {}))

    def record(self, hidden: int, outputs: int) -> dict[str, Any]:
        """The manifest's HeadSpec fields: enough to build the head again, never its code."""
        if self.kind == "linear":
            return {"type": "linear", "hidden": hidden, "outputs": outputs}
        if self.kind == "mlp":
            return {"type": "mlp", "hidden": hidden, "outputs": outputs, "options": self.options}
        return {"type": "factory", "hidden": hidden, "outputs": outputs, "factory": self.kind,
                "options": self.options}

    def build(self, hidden: int, outputs: int, dropout: float = 0.1, *,
              error: type[FuncformerError] = TaskError, where: str = "") -> torch.nn.Module:
        """A fresh head; a factory that cannot be imported, or that does not return a module
        mapping (B, hidden) to (B, outputs), raises `error` (prefixed by `where`)."""
        if self.kind == "linear":
            return LinearHead(hidden, outputs, dropout)
        if self.kind == "mlp":
            return MLPHead(hidden, outputs, int(self.options.get("width", 256)), dropout)
        make = _factory(self.kind, error, where)
        head = make(hidden=hidden, outputs=outputs, **self.options)
        if not isinstance(head, torch.nn.Module):
            raise error(f"{where}the head factory '{self.kind}' returned "
                        f"{type(head).__name__}, not a torch.nn.Module.")
        _check_shape(head, hidden, outputs, f"{where}the head factory '{self.kind}'", error)
        return head


def _factory(path: str, error: type[FuncformerError],
             where: str) -> Callable[..., torch.nn.Module]:
    """The callable named by "package.module:function" (attributes may be dotted)."""
    module_name, colon, attribute = path.partition(":")
    if not colon:
        raise error(f"{where}unknown head type '{path}': this funcformer builds 'linear', 'mlp' "
                    "and factory heads ('package.module:function'). Fix: pip install -U "
                    "funcformer.")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise error(f"{where}the head factory '{path}' cannot be imported here "
                    f"({type(err).__name__}: {err}). Fix: install the package that provides "
                    f"module '{module_name}', or put the directory holding it on PYTHONPATH; "
                    "the artifact records the factory's import path, never its code.") from None
    if not callable(target):
        raise error(f"{where}the head factory '{path}' is not callable.")
    return target


def _check_shape(head: torch.nn.Module, hidden: int, outputs: int, what: str,
                 error: type[FuncformerError]) -> None:
    """A user's head must map (B, hidden) to (B, outputs); say so now, not mid-training."""
    training = head.training
    try:
        with torch.no_grad():
            shape = tuple(head.eval()(torch.zeros(2, hidden)).shape)
    except Exception as err:  # any failure of user code is reported the same way
        raise error(f"{what}: its module fails on features of shape (2, {hidden}) "
                    f"({type(err).__name__}: {err}).") from None
    finally:
        head.train(training)
    if shape != (2, outputs):
        raise error(f"{what}: its module maps features (2, {hidden}) to {shape}; a head must "
                    f"give (batch, {outputs}) logits.")


class FunctionModel(torch.nn.Module):
    """Encoder + pooling + head; `forward(input_ids, attention_mask)` -> logits (B, C)."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = last_hidden_state(self.encoder, input_ids=input_ids,
                                   attention_mask=attention_mask)  # (B, T, H)
        return pool(states, attention_mask, self.pooling)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))
