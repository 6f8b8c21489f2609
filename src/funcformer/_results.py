"""Result types: small frozen dataclasses, the same shape whatever the input size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One classification result: the top label, its probability, and every label's.

    >>> p = Prediction(label="positive", score=0.9, scores={"negative": 0.1, "positive": 0.9})
    >>> p.label, p.score
    ('positive', 0.9)
    """

    label: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Labels:
    """One multi-label result: every label whose probability reached its threshold.

    >>> Labels(labels=["billing"], scores={"billing": 0.8, "refund": 0.3}).labels
    ['billing']
    """

    labels: list[str]
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
