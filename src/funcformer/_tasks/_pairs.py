"""Pairs for the `pair` task: reading and checking them, turning gold scores or labels into
targets in [0, 1], metrics, the held-out split, and tokenizing a pair as one sequence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._backbone import Backbone, call_tokenizer
from .._data import Records, number_field, read_records
from .._errors import DataError
from .._methods import MIN_HELD_OUT


@dataclass(frozen=True)
class Columns:
    """Field names in pair data."""

    text_a: str = "text_a"
    text_b: str = "text_b"
    score: str = "score"
    label: str = "label"


@dataclass
class Pairs:
    """Validated pairs and their gold values: scores (graded) or label strings (binary)."""

    records: Records
    a: list[str]
    b: list[str]
    scores: list[float] | None
    labels: list[str] | None


def read_pairs(data: Any, columns: Columns, gold: bool = True) -> Pairs:
    """Pairs from a file, list of dicts or `(a, b, score)` tuples; with `gold`, each row needs
    the score or the label field (which one the first row has decides for all)."""
    if isinstance(data, Pairs):
        return data
    records = read_records(data, texts=[columns.text_a, columns.text_b],  # to predict: 2
                           optional=[columns.score, columns.label] if gold else [], what="pairs",
                           fields=["text_a", "text_b"])
    pairs = Pairs(records, records.column(columns.text_a), records.column(columns.text_b),
                  None, None)
    if not gold:
        return pairs
    first = {k: v for k, v in records.rows[0].items() if v is not None}
    if columns.score in first:
        pairs.scores = [_score(r, records.where(i), columns.score)
                        for i, r in enumerate(records.rows)]
    elif columns.label in first:
        pairs.labels = [_label(r, records.where(i), columns.label)
                        for i, r in enumerate(records.rows)]
    else:
        raise DataError(f"{records.where(0)}: neither field '{columns.score}' nor "
                        f"'{columns.label}' has a value (absent or null). Fix: add a numeric "
                        "score (graded) or a label (binary) to every pair, or name the field "
                        "with score_column= / label_column=.")
    return pairs


def _score(row: Mapping[str, Any], where: str, field: str) -> float:
    if field not in row:
        raise DataError(f"{where}: field '{field}' is missing. Fix: give every pair a score.")
    return number_field(row[field], where, field, "give every pair a numeric score.")


def _label(row: Mapping[str, Any], where: str, field: str) -> str:
    value = row.get(field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    raise DataError(f"{where}, field '{field}': expected a label (a string or 0/1), got "
                    f"{value!r}. Fix: give every pair a label.")


@dataclass(frozen=True)
class Scale:
    """How gold values become targets in [0, 1]: graded scores scaled by (low, high), or
    binary labels (negative, positive)."""

    low: float = 0.0
    high: float = 1.0
    labels: tuple[str, str] | None = None

    @property
    def graded(self) -> bool:
        return self.labels is None

    @classmethod
    def fit(cls, pairs: Pairs, positive: str | None = None) -> Scale:
        """Graded from scores; binary from two labels, the positive one being `positive` or
        else the later in sorted order ('1' of 0/1, 'yes' of no/yes)."""
        if pairs.scores is not None:
            low, high = min(pairs.scores), max(pairs.scores)
            if low == high:
                raise DataError(f"{pairs.records.source}: every pair has the score {low:g}. Fix: "
                                "add pairs with other scores; there is nothing to learn.")
            return cls(low=low, high=high)
        assert pairs.labels is not None
        names = sorted(set(pairs.labels))
        if len(names) != 2:
            raise DataError(f"{pairs.records.source}: binary pair labels need exactly two "
                            f"values, found {len(names)}: {', '.join(names[:10])}. Fix: use two "
                            "labels (e.g. 0/1), or a numeric score column for graded pairs.")
        if positive is not None and str(positive) not in names:
            raise DataError(f"{pairs.records.source}: positive={positive!r} is not one of the "
                            f"labels ({', '.join(names)}). Fix: name one of them.")
        positive = str(positive) if positive is not None else names[1]
        return cls(labels=(next(n for n in names if n != positive), positive))

    def targets(self, pairs: Pairs) -> torch.Tensor:
        """Targets (N,) in [0, 1]; eval scores outside the training range are clipped."""
        gold, want = (pairs.scores, "scores") if self.graded else (pairs.labels, "labels")
        if gold is None:
            kind = "graded" if self.graded else "binary"
            raise DataError(f"{pairs.records.source}: this function scores {kind} pairs, so the "
                            f"data needs {want}. Fix: add that column or name it.")
        if self.graded:
            span = self.high - self.low
            return torch.tensor([(s - self.low) / span for s in gold]).clamp(0, 1)
        assert self.labels is not None
        for i, name in enumerate(gold):
            if name not in self.labels:
                raise DataError(f"{pairs.records.where(i)}: unknown label '{name}'. This "
                                f"function knows: {', '.join(self.labels)}.")
        return torch.tensor([float(name == self.labels[1]) for name in gold])

    def to_options(self) -> dict[str, Any]:
        if self.graded:
            return {"kind": "graded", "score_range": [self.low, self.high]}
        assert self.labels is not None
        return {"kind": "binary", "positive": self.labels[1]}


def metrics(probs: torch.Tensor, targets: torch.Tensor, graded: bool) -> dict[str, Any]:
    """Graded: Spearman and Pearson correlation; binary: accuracy at 0.5 and ROC-AUC (None
    when the data holds one class)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import roc_auc_score

    p, t = probs.double().numpy(), targets.double().numpy()
    if graded:
        constant = len(set(p.tolist())) < 2 or len(set(t.tolist())) < 2
        spearman = 0.0 if constant else float(spearmanr(p, t).statistic)
        pearson = 0.0 if constant else float(pearsonr(p, t).statistic)
        return {"spearman": spearman, "pearson": pearson, "examples": len(t)}
    auc = float(roc_auc_score(t, p)) if len(set(t.tolist())) == 2 else None
    return {"accuracy": float(((p >= 0.5) == (t >= 0.5)).mean()), "roc_auc": auc,
            "examples": len(t)}


def early_stopping_metric(values: dict[str, Any]) -> float:
    """Spearman (graded) or ROC-AUC (binary; accuracy when eval data holds one class)."""
    if "spearman" in values:
        return values["spearman"]
    return values["roc_auc"] if values["roc_auc"] is not None else values["accuracy"]


@dataclass
class Encoded:
    """Tokenized pairs, unpadded: token ids, segment ids (None if the model has none)."""

    ids: list[list[int]]
    types: list[list[int]] | None
    truncated: int


def encode(backbone: Backbone, a: Sequence[str], b: Sequence[str],
           max_length: int | None) -> Encoded:
    """Tokenize pairs as one sequence each; the longer text is cut first past the limit."""
    limit = min(max_length or backbone.max_length, backbone.max_length)
    batch = call_tokenizer(backbone.tokenizer, list(a), list(b), truncation="longest_first",
                           max_length=limit)
    truncated = sum(1 for e in batch.encodings if e.overflowing) if batch.encodings \
        else sum(1 for ids in batch["input_ids"] if len(ids) >= limit)
    return Encoded(batch["input_ids"], batch.get("token_type_ids"), truncated)


def pad(backbone: Backbone, encoded: Encoded, index: Sequence[int]) -> dict[str, torch.Tensor]:
    """A padded batch (B, T) of the pairs at `index`, with token_type_ids when there are any."""
    batch = backbone.pad([encoded.ids[i] for i in index])
    if encoded.types is not None:
        types = torch.zeros_like(batch["input_ids"])
        for row, i in enumerate(index):
            types[row, : len(encoded.types[i])] = torch.tensor(encoded.types[i])
        batch["token_type_ids"] = types
    return batch


def holdout(pairs: Pairs, targets: torch.Tensor, fraction: float,
            seed: int) -> tuple[Pairs, torch.Tensor, Pairs | None]:
    """A seeded random split; nothing is held out when fewer than MIN_HELD_OUT pairs would be."""
    take = round(len(pairs.a) * fraction)
    if take < MIN_HELD_OUT:
        return pairs, targets, None
    order = torch.randperm(len(pairs.a), generator=torch.Generator().manual_seed(seed)).tolist()
    held, kept = sorted(order[:take]), sorted(order[take:])
    return _subset(pairs, kept), targets[kept], _subset(pairs, held)


def _subset(pairs: Pairs, rows: list[int]) -> Pairs:
    records = Records([pairs.records.rows[i] for i in rows], pairs.records.source,
                      [pairs.records.places[i] for i in rows])
    scores = [pairs.scores[i] for i in rows] if pairs.scores is not None else None
    labels = [pairs.labels[i] for i in rows] if pairs.labels is not None else None
    return Pairs(records, [pairs.a[i] for i in rows], [pairs.b[i] for i in rows], scores, labels)
