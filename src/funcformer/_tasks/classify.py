"""The `classify` task: single-label classification with a softmax over a linear head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._data import Examples
from .._errors import DataError
from .._metrics import classification_metrics
from .._model import LinearHead
from .._results import Prediction


class Classify:
    """Single-label classification: what the head looks like, the loss, decoding, metrics.

    >>> task = Classify(["negative", "positive"])
    >>> task.decode(torch.tensor([[0.0, 2.0]]))[0].label
    'positive'
    """

    name = "classify"

    def __init__(self, labels: Sequence[str], init: torch.Tensor | None = None) -> None:
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.init = init
        """Starting head weights (C, H), e.g. from zero-shot label embeddings; None: random."""

    def head(self, hidden: int, dropout: float = 0.1) -> torch.nn.Module:
        head = LinearHead(hidden, len(self.labels), dropout)
        if self.init is not None:
            with torch.no_grad():
                head.linear.weight.copy_(self.init)
                head.linear.bias.zero_()
        return head

    def targets(self, examples: Examples) -> torch.Tensor:
        """Label indices (N,); an unknown label is a DataError naming its row."""
        assert examples.labels is not None
        for i, label in enumerate(examples.labels):
            if label not in self.index:
                raise DataError(f"{examples.where(i)}, field 'label': unknown label '{label}'. "
                                f"This function knows: {', '.join(self.labels)}.")
        return torch.tensor([self.index[label] for label in examples.labels], dtype=torch.long)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, targets)

    def decode(self, logits: torch.Tensor) -> list[Prediction]:
        """Logits (N, C) -> one Prediction per row."""
        probs = torch.softmax(logits.float(), dim=-1).tolist()
        out = []
        for row in probs:
            best = max(range(len(row)), key=row.__getitem__)
            out.append(Prediction(label=self.labels[best], score=row[best],
                                  scores=dict(zip(self.labels, row, strict=True))))
        return out

    def result_from_dict(self, data: dict[str, Any]) -> Prediction:
        """Rebuild a result from `Prediction.to_dict()` (the cache stores results as JSON)."""
        return Prediction(**data)

    def predicted_labels(self, logits: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in logits.argmax(dim=-1).tolist()]

    def metrics(self, gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
        return classification_metrics(gold, predicted, self.labels)

    def score(self, gold: Sequence[str], predicted: Sequence[str], metric: str) -> float:
        """One number for early stopping: accuracy or macro-F1."""
        return float(self.metrics(gold, predicted)[metric])
