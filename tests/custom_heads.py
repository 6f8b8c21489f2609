"""User-defined heads for tests/test_config_options.py, importable as `custom_heads:...`
(pytest puts tests/ on sys.path) the way a user's own package would be."""

from __future__ import annotations

import torch


class GatedHead(torch.nn.Module):
    """features (B, H) -> a gate (B, H) times the features -> logits (B, C)."""

    def __init__(self, hidden: int, outputs: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.gate = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(torch.sigmoid(self.gate(features)) * features * self.scale)


def gated(*, hidden: int, outputs: int, scale: float = 1.0) -> torch.nn.Module:
    """The factory funcformer calls: head="custom_heads:gated", head_options={"scale": ...}."""
    return GatedHead(hidden, outputs, scale)


def not_a_module(*, hidden: int, outputs: int) -> object:
    return object()


def wrong_width(*, hidden: int, outputs: int) -> torch.nn.Module:
    return torch.nn.Linear(hidden, outputs + 1)
