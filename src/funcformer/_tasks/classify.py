"""The `classify` task: single-label (softmax) or multi-label (sigmoids with tuned thresholds)
classification with a head (linear, MLP or the user's own) on pooled features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._data import MULTI_SEPARATOR, Examples, split_labels
from .._errors import DataError, TaskError
from .._losses import Loss, class_weights
from .._metrics import classification_metrics, multilabel_metrics
from .._model import HeadChoice, LinearHead
from .._results import Labels, Prediction


def known_labels(labels: list[str]) -> str:
    """The end of an unknown-label error, true at training time too (eval data checked before
    there is a function: it said "This function knows")."""
    shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
    return (f"The labels (from the training data): {shown}. Fix: correct the label, or train "
            "(or update) with examples of it.")


class Classify:
    """Single-label classification: what the head looks like, the loss, decoding, metrics.

    >>> task = Classify(["negative", "positive"])
    >>> task.decode(torch.tensor([[0.0, 2.0]]))[0].label
    'positive'
    """

    name = "classify"
    multi_label = False

    def __init__(self, labels: Sequence[str], init: torch.Tensor | None = None) -> None:
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.init = init
        """Starting head weights (C, H), e.g. from zero-shot label embeddings; None: random."""
        self.head_choice = HeadChoice()
        """Which head to build: linear unless the training config (or artifact) says."""
        self.criterion = Loss(multi_label=self.multi_label)
        """The training loss (`configure` sets it from the training config)."""

    def configure(self, config: Any, examples: Examples) -> None:
        """Take the head and loss settings of a TrainConfig; "balanced" class weights are
        computed from `examples` (the training data)."""
        self.head_choice = HeadChoice.from_config(config)
        weight = class_weights(config.class_weight, self.labels, self.targets(examples),
                               self.multi_label)
        self.criterion = Loss(kind=config.loss, smoothing=config.label_smoothing,
                              gamma=config.focal_gamma, weight=weight,
                              multi_label=self.multi_label)

    @property
    def options(self) -> dict[str, Any]:
        """What the artifact records to rebuild this task (beyond its labels)."""
        return {}

    def head(self, hidden: int, dropout: float = 0.1) -> torch.nn.Module:
        head = self.head_choice.build(hidden, len(self.labels), dropout)
        if self.init is not None:
            if not isinstance(head, LinearHead):
                raise TaskError(f"init= starts a linear head from label embeddings; this "
                                f"function's head is '{self.head_choice.kind}'. Fix: drop init= "
                                "or use head='linear'.")
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
                                f"{known_labels(self.labels)}")
        return torch.tensor([self.index[label] for label in examples.labels], dtype=torch.long)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy by default; see `configure` (label smoothing, focal, class weights)."""
        return self.criterion(logits, targets)

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

    def judge(self, logits: torch.Tensor, examples: Examples, metric: str) -> tuple[float, float]:
        """Early stopping's view of eval logits: (metric, minus the eval loss). The loss breaks
        ties of the metric, so of two epochs with the same accuracy the one that is surer of
        the right labels is kept."""
        assert examples.labels is not None
        score = self.score(examples.labels, self.predicted_labels(logits), metric)
        loss = self.loss(logits.float(), self.targets(examples).to(logits.device))
        return score, -float(loss)


class MultiLabel(Classify):
    """Multi-label classification: one sigmoid per label, each with its own threshold.

    Gold labels are 'a|b' strings (lists are joined on reading; '' is no label). Thresholds
    start at 0.5 and are tuned per label on eval data after training (`tune_thresholds`).

    >>> task = MultiLabel(["billing", "refund"])
    >>> task.decode(torch.tensor([[2.0, -2.0]]))[0].labels
    ['billing']
    """

    multi_label = True

    def __init__(self, labels: Sequence[str], init: torch.Tensor | None = None,
                 thresholds: Sequence[float] | None = None) -> None:
        super().__init__(labels, init)
        self.thresholds = list(thresholds) if thresholds is not None else [0.5] * len(labels)

    @property
    def options(self) -> dict[str, Any]:
        """What the artifact records to rebuild this task."""
        return {"multi_label": True, "task": {"thresholds": self.thresholds}}

    def head(self, hidden: int, dropout: float = 0.1) -> torch.nn.Module:
        head = super().head(hidden, dropout)
        if self.init is not None:  # cosine logits are all large: centre them at the midpoint
            with torch.no_grad():
                head.linear.bias.fill_(-float(self.init.norm(dim=1).mean()) * 0.3)
        return head

    def targets(self, examples: Examples) -> torch.Tensor:
        """Multi-hot targets (N, C) as floats."""
        assert examples.labels is not None
        out = torch.zeros((len(examples), len(self.labels)))
        for i, label in enumerate(examples.labels):
            for name in split_labels(label):
                if name not in self.index:
                    raise DataError(f"{examples.where(i)}, field 'label': unknown label "
                                    f"'{name}'. {known_labels(self.labels)}")
                out[i, self.index[name]] = 1.0
        return out

    def decode(self, logits: torch.Tensor) -> list[Labels]:  # type: ignore[override]
        probs = torch.sigmoid(logits.float()).tolist()
        return [Labels(labels=[n for n, p, t in zip(self.labels, row, self.thresholds,
                                                    strict=True) if p >= t],
                       scores=dict(zip(self.labels, row, strict=True))) for row in probs]

    def result_from_dict(self, data: dict[str, Any]) -> Labels:  # type: ignore[override]
        return Labels(**data)

    def predicted_labels(self, logits: torch.Tensor) -> list[str]:
        return [MULTI_SEPARATOR.join(result.labels) for result in self.decode(logits)]

    def metrics(self, gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
        return multilabel_metrics([split_labels(g) for g in gold],
                                  [split_labels(p) for p in predicted], self.labels)

    def score(self, gold: Sequence[str], predicted: Sequence[str], metric: str) -> float:
        """micro-F1 for early stopping (macro-F1 when asked for)."""
        key = "macro_f1" if metric == "macro_f1" else "micro_f1"
        return float(self.metrics(gold, predicted)[key])

    def tune_thresholds(self, logits: torch.Tensor, examples: Examples) -> None:
        """Per label, the threshold with the best F1 on these examples (ties: nearest 0.5).

        A label with no positive example keeps 0.5: there is nothing to tune it on.
        """
        probs = torch.sigmoid(logits.float())
        gold = self.targets(examples).bool()
        grid = torch.linspace(0.05, 0.95, 19)
        for c in range(len(self.labels)):
            if not gold[:, c].any():
                continue
            best = (-1.0, 0.0, 0.5)
            for t in grid.tolist():
                guess = probs[:, c] >= t
                tp = float((guess & gold[:, c]).sum())
                f1 = 2 * tp / max(float(guess.sum() + gold[:, c].sum()), 1.0)
                best = max(best, (round(f1, 6), -abs(t - 0.5), t))
            self.thresholds[c] = round(best[2], 4)
