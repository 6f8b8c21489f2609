"""`contrastive`: few-shot training in the spirit of SetFit, linear in the data.

SetFit tunes the encoder on generated text pairs, whose number grows with the square of the
data (setfit #628, #249: out-of-memory, 19-hour pair generation). Here each batch is its own
set of pairs: SetFit's objective (cosine similarity 1 for two texts of one label, 0 for two of
different labels) is applied to every pair in the batch, balanced between the two kinds, so one
epoch costs one pass over the examples. Batches are built so that each example meets at least
one of its own label, and, with up to 8 labels (half a batch), each label's text ("This
sentence is joy.", `labels`). Then a head is fit on the tuned encoder's features (as `head`
does), and the function keeps both: the artifact includes the tuned encoder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from .._backbone import Backbone
from .._cache import Cache
from .._config import TrainConfig
from .._data import Examples
from .._model import FunctionModel
from .._train import Plan, run
from . import Trained, trainable_encoder
from .head import probe
from .labels import label_text_rows

TEXT_BUDGET = 640
LONG_BUDGET = 6000


def fit(task: Any, backbone: Backbone, train: Examples, eval_data: Examples | None,
        config: TrainConfig, progress: bool, source: str, cache: Cache | None) -> Trained:
    if getattr(task, "multi_label", False):
        from .._errors import TaskError

        raise TaskError("contrastive needs one label per text; for multi-label data use "
                        "method 'head', 'lora' or 'full'.")
    torch.manual_seed(config.seed)
    encoder = trainable_encoder(backbone.model, config)
    model = FunctionModel(encoder, torch.nn.Identity(), backbone.pooling)
    encoded = backbone.tokenize(train.texts, config.max_length)
    labels = task.targets(train)
    batch_size = int(config.batch_size or 16)
    anchors = label_text_rows(train)
    if len({int(labels[i]) for i in anchors}) > LABEL_TEXTS_MAX_SHARE * batch_size:
        anchors = []

    def batches(epoch: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        out = []
        for index in label_batches(labels.tolist(), batch_size, config.seed + epoch, anchors):
            out.append((backbone.pad([encoded.input_ids[i] for i in index]),
                        labels[index].to(backbone.device)))
        return out

    config = dataclasses.replace(
        config, epochs=config.epochs or epochs_for(len(train)),
        learning_rate=config.learning_rate or learning_rate_for(len(task.labels), len(train)))
    plan = Plan(model=model, batches=batches, forward=lambda m, inputs: m.features(**inputs),
                loss=loss_for(config.contrastive_loss, len(task.labels)), evaluate=None,
                metric_name="loss")
    history = run(plan, config, progress=progress, description="contrastive")
    encoder.eval()
    probe_config = dataclasses.replace(
        TrainConfig(method="head", seed=config.seed, max_length=config.max_length,
                    dropout=config.dropout, metric=config.metric).resolved())
    head, head_history, _ = probe(task, backbone, train, eval_data, probe_config, progress,
                                  refit=source.startswith("held out"), encoder=encoder)
    history.best_metric = head_history.best_metric
    chosen = {"epochs": config.epochs, "learning_rate": config.learning_rate}
    return Trained(encoder, head, history, encoded.truncated, source, chosen=chosen)


def epochs_for(examples: int) -> int:
    """Default epochs: about 640 texts seen in all for the smallest sets (40 epochs of 16
    examples, what SST-2 with 8 per class needed), but at least 15 passes while that stays
    under about 6,000 texts (400 examples), and never fewer than 5 nor more than 40. With 64
    per class, 15 epochs against 5-6 gave SST-2 +1.5, CR +2.3 and Emotion +3.0 points (seed 0;
    Emotion 0.661 -> 0.691 against SetFit's 0.672), at 0.1-0.3x SetFit's training time.

    >>> epochs_for(16), epochs_for(48), epochs_for(128), epochs_for(396), epochs_for(1000)
    (40, 15, 15, 15, 6)
    """
    n = max(examples, 1)
    return max(5, min(15, math.ceil(LONG_BUDGET / n)), min(40, math.ceil(TEXT_BUDGET / n)))


def learning_rate_for(labels: int, examples: int) -> float:
    """Default learning rate: `RATE`, or `MULTI_CLASS_RATE` for 3 to `PAIRS_MAX_LABELS` labels
    with at least `MULTI_CLASS_MIN_PER_LABEL` examples a label on average (measured with the
    pair objective, which `auto` takes there; also given to `supcon` when it is asked for
    there).

    >>> learning_rate_for(2, 128), learning_rate_for(6, 396), learning_rate_for(6, 60)
    (5e-05, 0.0001, 5e-05)
    >>> learning_rate_for(77, 5000)
    5e-05
    """
    many = examples >= MULTI_CLASS_MIN_PER_LABEL * labels
    return MULTI_CLASS_RATE if 2 < labels <= PAIRS_MAX_LABELS and many else RATE


RATE = 5e-5
"""The encoder's learning rate with two labels (SST-2 with 8 per class, 3 seeds: 40 epochs at
5e-5 gave 0.674 dev accuracy, 20 at 2e-5 0.663, 40 at 1e-4 0.665; with 64 per class 1e-4 lost
0.6 points, 2026-11-30 GPU sweep) and above `PAIRS_MAX_LABELS` (supcon's range, where every
measurement ran at it)."""
MULTI_CLASS_RATE = 1e-4
"""With 3 to 8 labels, twice `RATE`: bench/fewshot.py's samples, 3 seeds, on the 2-core CPU,
Emotion (6 labels) 0.7302 -> 0.7457 and AG News (4) 0.8645 -> 0.8670 with 64 per class (+7.17
and +0.95 points over SetFit, docs/benchmarks.md, 2026-12-01); with 8 per class Emotion 0.5332
-> 0.5355, AG News 0.8448 -> 0.8422. A sweep on a lent GPU (same samples, 3 seeds, 64 per
class) rose with the rate on Emotion: 5e-5 0.737, 6.5e-5 0.744, 8e-5 0.750, 1e-4 0.750, 1.2e-4
0.757; AG News stayed within 0.862-0.869."""
MULTI_CLASS_MIN_PER_LABEL = 32
"""... and only from this many examples a label on average (label texts included): with 8 per
class the higher rate lost more often than it won (bench/fewshot.py's samples, 3 seeds, 2-core
CPU, 2026-12-01): AG News 0.8448 -> 0.8422 and Emotion 0.5332 -> 0.5355 on the benchmark; on
its 3 AG News labels 0.9163 -> 0.9103 and 4 Emotion labels 0.6216 -> 0.6075; and after
`update` added the 4th AG News label / the other 2 Emotion labels (memory 8), all-label
accuracy 0.7552 -> 0.7332 and 0.5518 -> 0.5388: a higher rate fits the encoder more tightly to
the few texts it saw. With 64 per class it won (above), after the update too: 0.7270 -> 0.7325
and 0.7010 -> 0.7102 (bench/fewshot_update.py, bench/results/fewshot-update-rates.txt)."""
LABEL_TEXTS_MAX_SHARE = 0.5
"""While the labels number at most this share of the batch size (8 with the default batches of
16), every batch holds each label's text (`label_batches`), so a batch grows by half at most: a
label's texts are pulled to its words at every step, not only in the one or two batches its
label texts fall in. Against label texts as plain rows (bench/fewshot.py samples,
`contrastive`, 3 seeds): with 8 per class CR +1.15, Emotion +3.29, AG News +0.16 points; with
64 CR -0.62, Emotion +1.52, AG News +0.47. Above it the extra texts would outgrow the batch."""
PAIRS_MAX_LABELS = 8
"""`contrastive_loss="auto"` takes `pairs` up to this many labels (a batch of 16 holds a pair of
each), `supcon` above: with 16 and 32 of Banking77's labels supcon led by 0.7 and 2.2
points, with 6 (TREC) pairs by 10; with 10 and 12 the two were level (docs/methods.md)."""
SCALE = 20.0
"""`supcon`: cosine similarities times this are the logits (temperature 0.05)."""


def loss_for(name: str, labels: int) -> Any:
    """The encoder loss for `contrastive_loss` `name` and this many labels.

    >>> loss_for("auto", 6).__name__, loss_for("auto", 77).__name__
    ('pair_similarity', 'supervised_contrastive')
    """
    if name == "auto":
        name = "pairs" if labels <= PAIRS_MAX_LABELS else "supcon"
    return pair_similarity if name == "pairs" else supervised_contrastive


def pair_similarity(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SetFit's pair objective on every pair of texts in the batch: the cosine similarity of
    two texts is pulled to 1 when they share a label and to 0 when they do not. The squared
    errors are averaged over the same-label pairs and over the other pairs separately, then the
    two means are averaged, so the many different-label pairs of a batch over six labels do not
    drown the few same-label ones (SetFit's oversampling balances its pairs the same way).

    >>> f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> bool(pair_similarity(f, torch.tensor([0, 0, 1, 1])) <
    ...      pair_similarity(f, torch.tensor([0, 1, 0, 1])))
    True
    """
    z = torch.nn.functional.normalize(features, dim=-1)
    same = labels[:, None] == labels[None, :]
    errors = (z @ z.T - same.float()) ** 2  # (B, B)
    off = ~torch.eye(len(labels), dtype=torch.bool, device=z.device)
    means = [errors[mask].mean() for mask in (same & off, ~same) if mask.any()]
    if not means:
        return features.sum() * 0.0  # a batch of one text: nothing to learn
    return torch.stack(means).mean()


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over anchors with a positive of -mean log p(positive | anchor), p a softmax over
    the other texts of the batch by scaled cosine similarity (Khosla et al. 2020).

    >>> f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> bool(supervised_contrastive(f, torch.tensor([0, 0, 1, 1])) <
    ...      supervised_contrastive(f, torch.tensor([0, 1, 0, 1])))
    True
    """
    z = torch.nn.functional.normalize(features, dim=-1)
    logits = SCALE * z @ z.T
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))  # never the anchor itself
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    has = positive.any(dim=1)
    if not has.any():
        return features.sum() * 0.0  # no pair of one label in this batch: nothing to learn
    mean_log = (log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1).clamp(min=1))
    return -mean_log[has].mean()


def label_batches(labels: list[int], batch_size: int, seed: int,
                  label_texts: Sequence[int] = ()) -> list[list[int]]:
    """Batches covering every example at least once, each example next to one of its own label.

    Per label, a seeded shuffle is cut into pairs (a label with an odd count adds its first
    example again to close its last pair); pairs are shuffled and packed `batch_size // 2` to
    a batch. The number of batches grows linearly with the data.

    `label_texts`: the rows that are label texts. They pair up like the others, and a batch
    without one for a label also gets that label's first one, so every batch holds each
    label's text: up to one more row per label than `batch_size // 2` pairs hold (see
    `LABEL_TEXTS_MAX_SHARE`).
    """
    generator = torch.Generator().manual_seed(seed)
    pairs: list[list[int]] = []
    for label in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == label]
        rows = [rows[j] for j in torch.randperm(len(rows), generator=generator).tolist()]
        if len(rows) == 1:
            pairs.append(rows)
            continue
        if len(rows) % 2:
            rows.append(rows[0])
        pairs += [rows[j:j + 2] for j in range(0, len(rows), 2)]
    order = torch.randperm(len(pairs), generator=generator).tolist()
    per_batch = max(1, batch_size // 2)
    shuffled = [pairs[i] for i in order]
    batches = [[i for pair in shuffled[k:k + per_batch] for i in pair]
               for k in range(0, len(shuffled), per_batch)]
    first: dict[int, int] = {}
    for row in label_texts:
        first.setdefault(labels[row], row)
    texts = set(label_texts)
    for batch in batches:
        present = {labels[i] for i in batch if i in texts}
        batch += [row for label, row in first.items() if label not in present]
    return batches
