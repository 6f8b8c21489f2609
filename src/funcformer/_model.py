"""The torch module a function runs: encoder -> pooling -> head. One graph, easy to export."""

from __future__ import annotations

import torch

from ._backbone import Pooling, pool


class LinearHead(torch.nn.Module):
    """Dropout then one linear layer: pooled features (B, H) -> logits (B, C)."""

    def __init__(self, hidden: int, outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(hidden, outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))


class FunctionModel(torch.nn.Module):
    """Encoder + pooling + head; `forward(input_ids, attention_mask)` -> logits (B, C)."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return pool(states.last_hidden_state, attention_mask, self.pooling)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))
