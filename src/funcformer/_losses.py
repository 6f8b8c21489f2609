"""Classifier losses: cross-entropy or focal, with label smoothing and class weights.

Single-label logits (B, C) with label indices (B,); multi-label logits (B, C) with multi-hot
targets (B, C). `Loss` holds the settings and the weights computed from the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ._errors import TaskError


@dataclass(frozen=True)
class Loss:
    """How a classifier's logits are scored against its targets.

    >>> round(Loss()(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item(), 4)  # log 2
    0.6931
    """

    kind: str = "cross_entropy"
    """"cross_entropy" or "focal"."""
    smoothing: float = 0.0
    gamma: float = 2.0
    """Focal loss's focusing strength (ignored by cross-entropy)."""
    weight: torch.Tensor | None = None
    """Per-class weights (C,); multi-label: BCE's positive weight per label."""
    multi_label: bool = False

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(logits.device) if self.weight is not None else None
        if self.multi_label:
            return sigmoid_loss(logits, targets, weight, self.smoothing,
                                self.gamma if self.kind == "focal" else None)
        if self.kind == "focal":
            return focal_loss(logits, targets, weight, self.smoothing, self.gamma)
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.smoothing)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
               smoothing: float = 0.0, gamma: float = 2.0) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017): per example -sum_c q_c (1 - p_c)^gamma log p_c,
    q the (smoothed) target distribution; averaged with weight[target] as cross_entropy does,
    so gamma=0 is cross-entropy.

    >>> round(focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item(), 4)  # 0.25 log 2
    0.1733
    """
    log_p = F.log_softmax(logits.float(), dim=-1)  # (B, C)
    classes = logits.shape[-1]
    q = F.one_hot(targets, classes).float() * (1 - smoothing) + smoothing / classes
    per_example = -(q * (1 - log_p.exp()).pow(gamma) * log_p).sum(dim=-1)  # (B,)
    if weight is None:
        return per_example.mean()
    w = weight[targets]
    return (w * per_example).sum() / w.sum()


def sigmoid_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None,
                 smoothing: float = 0.0, gamma: float | None = None) -> torch.Tensor:
    """Multi-label: binary cross-entropy per label (positives weighted by `pos_weight`),
    targets smoothed towards 0.5; with `gamma`, each term scaled by (1 - p_t)^gamma (focal)."""
    soft = targets * (1 - smoothing) + smoothing / 2
    terms = F.binary_cross_entropy_with_logits(logits, soft, pos_weight=pos_weight,
                                               reduction="none")  # (B, C)
    if gamma is not None:
        p = torch.sigmoid(logits)
        p_true = p * soft + (1 - p) * (1 - soft)
        terms = terms * (1 - p_true).pow(gamma)
    return terms.mean()


def class_weights(asked: Any, labels: Sequence[str], targets: torch.Tensor,
                  multi_label: bool = False) -> torch.Tensor | None:
    """Weights (C,) for `asked`: None, "balanced" or {label: weight} (others weigh 1).

    Balanced, single-label: n / (C * count) per label (sklearn's "balanced"); multi-label:
    negatives / positives per label (BCE's pos_weight), 1 for a label with no positive.

    >>> [round(w, 3) for w in class_weights("balanced", ["a", "b"], torch.tensor([0, 0, 0, 1]))
    ...  .tolist()]
    [0.667, 2.0]
    """
    if asked is None:
        return None
    if isinstance(asked, dict):
        unknown = sorted(set(asked) - set(labels))
        if unknown:
            raise TaskError(f"class_weight names label '{unknown[0]}', which the training data "
                            f"does not have. Labels: {', '.join(labels)}.")
        return torch.tensor([float(asked.get(label, 1.0)) for label in labels])
    if multi_label:
        positives = targets.float().sum(dim=0)  # (C,)
        negatives = len(targets) - positives
        return torch.where(positives > 0, negatives / positives.clamp(min=1),
                           torch.ones_like(positives))
    counts = torch.bincount(targets, minlength=len(labels)).float()
    return len(targets) / (len(labels) * counts.clamp(min=1))
