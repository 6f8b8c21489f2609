"""Continual updates of a `classify` function: new examples and new labels, no retraining.

`update(fn, data)` grows the head by one row per new label and trains it on the new data plus
the function's exemplar memory (a few stored examples per label, opt-in at training time with
`memory=K`), on features of the function's own encoder (the shared backbone, or its adapter or
fine-tuned copy, which stay as they are). Rows of labels without new examples stay frozen, so
what the function knew about them can only change where a new label now wins; after training,
one offset on the new labels' logits is fit on held-out data (bias correction). Class weights
make the mixture count like everything the function has seen (`_prior_weights`), so thousands
of new examples do not drown the handful remembered per old label.

Multi-label functions update the same way (rows of labels without new examples frozen, the
memory replayed), with the task's loss (binary cross-entropy) and, instead of the bias offset,
every label's threshold tuned again on held-out data: an old label's sigmoid never learned
that texts of the new labels are not its own, and a higher threshold is how it says no. On AG
News texts of one or two topics (bench/continual_multilabel.py, 3 seeds) the updated function
reached 0.790 micro-F1 against 0.762 for one trained on all the rows at once; training the old
rows on the new rows as negatives instead did worse (0.763-0.780), and with the old thresholds
kept the old labels stay exactly as in v1 (0.666), flagging the new topics.
Remembered examples count as negatives for the new labels.

The artifact keeps its lineage: `manifest.versions` lists each version's digest, parent,
data size, labels and metrics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ._artifact import Manifest
from ._data import MULTI_SEPARATOR, Examples, read_examples, split_labels
from ._errors import ArtifactError, DataError, TaskError, is_whole

MEMORY_FILE = "memory.jsonl"
LABEL_TEXT_OPTIONS = ("label_template", "label_names")
KEPT_OPTIONS = ("head", "head_hidden", "head_options", "max_length")
"""Training options that shape the encoder or head, which an update keeps as they are."""
OWN_LOSS_OPTIONS = ("loss", "label_smoothing", "focal_gamma", "class_weight", "metric")
"""Loss and early-stopping options an update does not take: its head trains on its own loss
(single-label: cross-entropy weighted by how often each label has been seen, stopping on
accuracy; multi-label: binary cross-entropy, thresholds tuned again)."""

log = logging.getLogger("funcformer")


def herding(features: torch.Tensor, k: int) -> list[int]:
    """Rows whose running mean stays closest to the mean of all rows (iCaRL's exemplar choice,
    Rebuffi et al. 2017): k representative examples, not k near-duplicates.

    >>> herding(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]), 2)
    [2, 3]
    """
    z = torch.nn.functional.normalize(features.float(), dim=-1)
    target = z.mean(dim=0)
    chosen: list[int] = []
    total = torch.zeros_like(target)
    for step in range(1, min(k, len(z)) + 1):
        gaps = ((target - (total + z) / step) ** 2).sum(dim=1)
        if chosen:
            gaps[chosen] = float("inf")
        best = int(gaps.argmin())
        chosen.append(best)
        total += z[best]
    return chosen


class _Features:
    """The function's pooled features, each distinct text computed once per update."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.known = fn, {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.known]
        if missing:
            self.known.update(zip(missing, self.fn.features(missing), strict=True))
        if not texts:
            return torch.zeros((0, self.fn.backbone.hidden_size))
        return torch.stack([self.known[t] for t in texts])


def check_memory(memory: Any, fix: str) -> None:
    """`memory` (exemplars per label) is None or a whole number of at least 1, else a TaskError
    ending with `fix`: 0 would be taken as "not given", '5' is no number."""
    if memory is not None and (not is_whole(memory) or memory < 1):
        raise TaskError(f"memory must be a whole number of at least 1 example per label, got "
                        f"{memory!r}. Fix: {fix}.")


def select_memory(fn: Any, examples: Examples, per_label: int,
                  features: Any = None) -> Examples:
    """`per_label` exemplars of each label, chosen by herding on the function's features."""
    assert examples.labels is not None
    if per_label < 1:
        raise TaskError(f"memory must be at least 1 example per label, got {per_label}.")
    features = (features or fn.features)(examples.texts)
    label_sets = _label_sets(fn.task, examples)
    rows: list[int] = []
    for label in fn.labels:  # a multi-label row chosen for one label is not chosen again
        taken = set(rows)
        members = [i for i, labels in enumerate(label_sets) if label in labels and i not in taken]
        if members:
            rows += [members[j] for j in herding(features[members], per_label)]
    return Examples(texts=[examples.texts[i] for i in rows],
                    labels=[examples.labels[i] for i in rows], source="memory",
                    places=[examples.places[i] for i in rows])


def _label_sets(task: Any, examples: Examples) -> list[set[str]]:
    """Each row's labels: one for a single-label task, 'a|b' split for a multi-label one."""
    assert examples.labels is not None
    if task.multi_label:
        return [set(split_labels(label)) for label in examples.labels]
    return [{label} for label in examples.labels]


def write_memory(directory: Path, memory: Examples) -> None:
    assert memory.labels is not None
    with open(directory / MEMORY_FILE, "w", encoding="utf-8") as handle:
        for text, label in zip(memory.texts, memory.labels, strict=True):
            handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")


def read_memory(directory: Path, manifest: Manifest) -> Examples | None:
    if not manifest.memory:
        return None
    path = directory / MEMORY_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory}: the exemplar memory ({MEMORY_FILE}) is missing. Save "
                            "the function again.")
    return read_examples(path)


def update(fn: Any, data: Any, *, eval_data: Any = None, memory: int | None = None,
           text_column: str = "text", label_column: str = "label", progress: bool = True,
           **options: Any) -> Any:
    """A new function: `fn` plus the examples (and labels) in `data`; `fn` is unchanged."""
    from ._function import Classifier, encoder_state, make_config, now, say, state_digest
    from ._methods import holdout
    from ._methods.head import _train_head
    from ._methods.labels import with_label_texts
    from ._tasks import task_class

    if not isinstance(fn, Classifier) or fn.runner is not None:
        raise TaskError(f"update applies to classify functions run by torch; this is a "
                        f"{fn.task_name} function ({fn.runtime}).")
    multi = fn.task.multi_label
    columns = {"text_column": text_column, "label_column": label_column, "empty_labels": multi}
    new = read_examples(data, **columns)
    given_eval = read_examples(eval_data, **columns) if eval_data is not None else None
    assert new.labels is not None
    if not multi:  # training would have taken such data as multi-label; this function is not
        several = next((i for i, y in enumerate(new.labels)
                        if MULTI_SEPARATOR in y and y not in fn.labels), None)
        if several is not None:
            raise DataError(f"{new.where(several)}, field '{label_column}': several labels "
                            f"({new.labels[several]!r}) for a single-label function. Fix: one "
                            "label per row, or train a multi-label function "
                            "(multi_label=True).")
    _check_kept(options)
    old_labels = fn.labels
    taught = sorted(set().union(*_label_sets(fn.task, new)))
    added = sorted(set(taught) - set(old_labels))
    _check_lookalikes(fn.task, new, added, old_labels, label_column)
    task = task_class("classify", multi)(old_labels + added)
    if multi:  # old labels keep their tuned thresholds; new ones start at 0.5
        task.thresholds = list(fn.task.thresholds) + [0.5] * len(added)
    if given_eval is not None:
        task.targets(given_eval)  # unknown labels fail here, naming the row
    check_memory(memory, "leave it out to keep the function's own setting")
    remembered = fn.memory
    if remembered is None and added:
        log.warning("update: the function keeps no examples of its old labels (no exemplar "
                    "memory), so none are replayed: they may be forgotten, and new labels "
                    "predicted where old ones belong (docs/methods.md, continual updates). "
                    "Fix: train it with memory=K (--set memory=20; memory=20 kept the "
                    "old-label drop to 2 points on Emotion), or update with data that also "
                    "holds old-label examples.")
    per_label = memory or (fn.manifest.memory or {}).get("per_label")
    replay = _join(new, remembered) if remembered is not None else new
    # Label texts for new labels are opt-in here (label_texts=True; the function's template
    # and names apply): on the Emotion continual benchmark (memory 20) they moved the
    # old-label drop from 1.97 to 3.44 points (docs/benchmarks.md).
    inherited = {k: fn.manifest.config[k] for k in LABEL_TEXT_OPTIONS if k in fn.manifest.config}
    if isinstance(inherited.get("label_names"), dict) and isinstance(options.get("label_names"),
                                                                      dict):
        options = {**options, "label_names": {**inherited["label_names"],
                                              **options["label_names"]}}
    config = make_config(None, "head", {"label_texts": False, **inherited, **options,
                                        "weight_decay": 0.0})
    train_part, held = (replay, given_eval) if given_eval is not None else \
        holdout(replay, config.eval_share, config.seed)
    if added and not multi:  # after the holdout: eval rows and memory stay the user's texts
        train_part, note = with_label_texts(train_part, config, task.labels, only=added)
        say(f"update: {note}", progress)

    started = time.perf_counter()
    head = _grown_head(fn, task, taught)
    featurize = _Features(fn)
    features = featurize(train_part.texts)
    targets = task.targets(train_part)
    seen = None if multi else _seen_counts(fn.manifest, new)
    weights = None if multi else _prior_weights(targets, task.labels, seen)
    eval_features = featurize(held.texts) if held is not None else None

    def evaluate(model: torch.nn.Module) -> tuple[float, float]:
        assert held is not None and eval_features is not None
        with torch.inference_mode():
            return task.judge(model(eval_features), held, "accuracy")

    trained, history = _train_head(_Growing(head, task, weights), features, targets, config,
                                   evaluate if held is not None else None, progress)
    offset = 0.0
    if multi and held is not None and eval_features is not None:
        with torch.inference_mode():  # every label's threshold, on the held-out rows
            task.tune_thresholds(trained.eval()(eval_features), held)
    elif added and held is not None and eval_features is not None:
        # Given eval data follows the real label mix; a held-out part of the replay mixture
        # is weighed like the mixture.
        assert weights is not None
        mix = torch.ones_like(weights) if given_eval is not None else weights
        offset = _calibrate(trained, eval_features, task.targets(held),
                            [task.index[label] for label in added], mix)
    seconds = time.perf_counter() - started

    manifest = fn.manifest.model_copy(deep=True)
    manifest.labels = task.labels
    manifest.options = {**manifest.options, **task.options}
    manifest.head = manifest.head.model_copy(update={"outputs": len(task.labels)})
    manifest.digest = state_digest([task.labels, task.options] if multi else task.labels,
                                   fn.backbone.digest, trained.state_dict(),
                                   encoder_state(fn.encoder) or {})
    manifest.created_at = now()
    updated = Classifier(task=task, backbone=fn.backbone, head=trained, manifest=manifest,
                         encoder=fn.encoder)
    if per_label:
        updated.memory = select_memory(updated, replay, int(per_label), featurize)
        manifest.memory = {"per_label": int(per_label), "examples": len(updated.memory)}
    report = _report(fn, updated, given_eval if given_eval is not None else held, old_labels,
                     featurize)
    gap = _report_gap(report, multi, len(replay), remembered is not None, offset,
                      given_eval is not None)
    if gap:
        say(f"update: {gap}", progress)
    if seen is not None:
        manifest.training = {**manifest.training, "label_counts": seen}
    manifest.training = {**manifest.training, "update": {
        "examples": len(new), "replayed": len(remembered) if remembered is not None else 0,
        "new_labels": added, "seconds": round(seconds, 2), "report": report,
        "new_label_offset": offset,
        "history": history.to_dict()}}
    manifest.metrics = {k: v for k, v in report.items() if k.endswith("_after")}
    manifest.versions = [*_versions(fn.manifest), {
        "version": len(_versions(fn.manifest)) + 1, "digest": manifest.digest,
        "parent": fn.manifest.digest, "examples": len(new), "new_labels": added,
        "labels": len(task.labels), "metrics": manifest.metrics, "created_at": manifest.created_at}]
    return updated


def _check_kept(options: dict[str, Any]) -> None:
    """An update trains the new head rows on the function's own features: a method or a
    head or token limit of its own would be ignored, so it is refused."""
    if options.get("method") not in (None, "head"):
        raise TaskError(f"update trains the head on the function's features, keeping its "
                        f"encoder (method {options['method']!r} cannot apply). Fix: drop "
                        "method, or train a new function with it on all the data.")
    given = next((name for name in KEPT_OPTIONS if options.get(name) is not None), None)
    if given is not None:
        raise TaskError(f"{given}: update keeps the function's encoder and head as they are. "
                        "Fix: drop it, or train a new function with it on all the data.")
    given = next((name for name in OWN_LOSS_OPTIONS if options.get(name) is not None), None)
    if given is not None:  # --set loss=focal trained with cross-entropy, silently
        raise TaskError(f"{given}: update trains the grown head with its own loss (weighted "
                        "by how often each label has been seen) and its own stopping rule; it "
                        "takes no loss or metric of its own. Fix: drop it, or train a new "
                        "function with it on all the data.")


def _check_lookalikes(task: Any, new: Examples, added: list[str], known: list[str],
                      column: str) -> None:
    """A new label that differs from a known one only in case or spacing ('Positive' beside
    'positive') would become a label of its own, splitting that label's examples in two."""
    def key(label: str) -> str:
        return " ".join(label.split()).casefold()

    keys = {key(label): label for label in known}
    for label in added:
        if key(label) in keys:
            row = next(i for i, labels in enumerate(_label_sets(task, new)) if label in labels)
            raise DataError(f"{new.where(row)}, field '{column}': label {label!r} differs from "
                            f"the function's label {keys[key(label)]!r} only in case or "
                            f"spacing, and would become a new label. Fix: write it as "
                            f"{keys[key(label)]!r}.")


def _versions(manifest: Manifest) -> list[dict[str, Any]]:
    """The lineage so far; a function never updated is version 1."""
    if manifest.versions:
        return list(manifest.versions)
    return [{"version": 1, "digest": manifest.digest, "parent": None,
             "examples": manifest.training.get("examples"), "new_labels": manifest.labels,
             "labels": len(manifest.labels), "metrics": manifest.metrics,
             "created_at": manifest.created_at}]


def _join(first: Examples, second: Examples) -> Examples:
    assert first.labels is not None and second.labels is not None
    return Examples(texts=first.texts + second.texts, labels=first.labels + second.labels,
                    source=first.source, places=first.places + second.places)


class _Growing:
    """What `_train_head` asks of a task, for an update: start from the grown head; for a
    single-label task weigh classes by `weights` (`_prior_weights`), for a multi-label one
    use its own loss."""

    init = None

    def __init__(self, head: torch.nn.Module, task: Any, weights: torch.Tensor | None) -> None:
        self._head, self.task, self.weights = head, task, weights

    def head(self, hidden: int, dropout: float) -> torch.nn.Module:
        return self._head

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return self.task.loss(logits, targets)
        return torch.nn.functional.cross_entropy(logits, targets, weight=self.weights)


def _grown_head(fn: Any, task: Any, taught: list[str]) -> torch.nn.Module:
    """The old head with a zero row per new label; rows of labels not in `taught` are frozen
    (their gradient is masked), so only what the new data is about can move."""
    old = fn.head.linear
    head = task.__class__.head(task, old.in_features, fn.head.dropout.p)
    trainable = torch.zeros(len(task.labels), 1)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.zero_()
        head.linear.weight[: old.out_features] = old.weight
        head.linear.bias[: old.out_features] = old.bias
        for label in taught:
            trainable[task.index[label]] = 1.0
        if len(task.labels) > old.out_features:  # new rows start at the old bias level
            head.linear.bias[old.out_features:] = old.bias.mean()
    head.linear.weight.register_hook(lambda grad: grad * trainable)
    head.linear.bias.register_hook(lambda grad: grad * trainable[:, 0])
    return head


OFFSETS = torch.linspace(-6.0, 2.0, 33)


def _calibrate(head: torch.nn.Module, features: torch.Tensor, gold: torch.Tensor,
               new_rows: list[int], weights: torch.Tensor) -> float:
    """Shift the new labels' logits by the offset that classifies the eval data best, and
    return it (bias correction, as in BiC, Wu et al. 2019). A head trained on a few remembered
    examples per old label sees too few of their hard cases, and its new rows claim texts of
    old labels; one scalar fit on held-out data takes that back. Accuracy is weighed like the
    training mixture (`weights`), so a held-out part of it counts like all the data seen.
    """
    with torch.inference_mode():
        logits = head.linear(features)
    mask = torch.zeros(logits.shape[1], dtype=torch.bool)
    mask[new_rows] = True
    row_weight = weights[gold]
    best, best_score = 0.0, -1.0
    for offset in OFFSETS.tolist():
        predicted = (logits + offset * mask).argmax(dim=1)
        score = float((row_weight * (predicted == gold)).sum())
        if score > best_score + 1e-9 or (abs(score - best_score) <= 1e-9 and
                                         abs(offset) < abs(best)):
            best, best_score = offset, score
    with torch.no_grad():
        head.linear.bias[new_rows] += best
    return round(best, 3)


def _seen_counts(manifest: Manifest, new: Examples) -> dict[str, int] | None:
    """Examples per label over the function's whole history plus `new` (None when an older
    artifact did not record them)."""
    before = manifest.training.get("label_counts")
    if before is None:
        return None
    counts = Counter(before)
    counts.update(new.labels or [])
    return dict(counts)


def _prior_weights(targets: torch.Tensor, labels: list[str],
                   seen: dict[str, int] | None) -> torch.Tensor:
    """Class weights that make the update's mixture (new data + a few remembered examples per
    old label) count like all the data the function has seen: weight = seen / present. A
    remembered example of a label seen 5,000 times stands for 250 of them, so new labels win
    only where they should, not wherever the replay is thin. Without `seen`: balanced.
    """
    present = torch.bincount(targets, minlength=len(labels)).float()
    if seen is None:
        wanted = (present > 0).float()
    else:
        wanted = torch.tensor([float(seen.get(label, 0)) for label in labels])
        wanted = wanted / wanted.sum()
    weights = torch.where(present > 0, wanted / present.clamp(min=1), torch.zeros_like(present))
    return weights * (present > 0).sum() / weights.sum().clamp(min=1e-12)


NEW_LABELS_FLOOR = 0.1
"""Below this accuracy on the new labels' eval rows, with the bias correction pulling them down,
an update says that it has learnt labels it will hardly ever predict (Emotion, `contrastive`
on four labels, then love and surprise added, memory 8: with 8 examples a label 0-0.4% of their
eval rows right, seed 0's offset -1.5; with 64 a label still about 1%)."""


def _report_gap(report: dict[str, Any], multi: bool, rows: int, remembers: bool = False,
                offset: float = 0.0, given: bool = True) -> str | None:
    """What the before/after report cannot say, and how to make it say it: nothing at all when
    no eval rows were given or could be held out; no forgetting figure when the eval rows hold
    no old label (a held-out tenth of new data without an exemplar memory). And when the new
    labels are hardly ever predicted, with the bias correction (`offset`) lowering them, why and
    what to do (eval data `given`, or a held-out part weighed like everything seen)."""
    from ._methods import MIN_HELD_OUT

    fix = "pass eval_data= (CLI: --eval) with rows of the old and the new labels"
    if not report:
        return (f"no before/after report: no eval data was given, and a tenth of {rows} rows "
                f"(new data and memory) is under the {MIN_HELD_OUT} rows worth holding out; "
                f"{fix}.")
    if not multi and "old_labels_accuracy_before" not in report:
        # a tenth is held out of labels with 5 rows or more: a smaller memory gives none
        keep = ("a memory of 5 or more per label" if remembers
                else "keep an exemplar memory")
        return ("the eval rows hold no old label, so forgetting is not measured; "
                f"{fix}, or {keep} (memory=, CLI: --memory).")
    new = report.get("new_labels_accuracy_after")
    if not multi and new is not None and new < NEW_LABELS_FLOOR and offset < 0:
        weighs = ("weighs labels as the eval rows do" if given else
                  "weighs labels by the examples seen of each")
        balance = ("eval data with as many rows of each label" if given else
                   "pass eval_data= (CLI: --eval) with as many rows of each label")
        share = f"{math.floor(new * 1000) / 10:g}%"  # rounded down: never the floor's 10%
        return (f"the new labels are right on only {share} of their eval rows: their examples "
                "do not yet set them apart from the old labels, and the bias correction, which "
                f"maximises accuracy on the eval rows and {weighs}, lowered their logits by "
                f"{-offset:.2f}. Fix: give the new labels more examples, or {balance}.")
    return None


def _report(before: Any, after: Any, data: Examples | None, old_labels: list[str],
            featurize: _Features) -> dict[str, Any]:
    """How the update did on `data`: for a single-label function, accuracy on rows of old labels
    before and after, and on rows of new labels; for a multi-label one, micro-F1 over the old
    labels before and after and over the new labels (both functions share the encoder:
    features are computed once)."""
    if data is None or data.labels is None:
        return {}
    features = featurize(data.texts)
    was = before.task.predicted_labels(before.apply_head(features))
    now_ = after.task.predicted_labels(after.apply_head(features))
    if after.task.multi_label:
        return _report_multi(data, was, now_, set(old_labels))
    gold = data.labels

    def accuracy(predicted: list[str], rows: list[int]) -> float:
        return sum(predicted[i] == gold[i] for i in rows) / len(rows)

    old_rows = [i for i, y in enumerate(gold) if y in old_labels]
    new_rows = [i for i, y in enumerate(gold) if y not in old_labels]
    out: dict[str, Any] = {}
    if old_rows:
        out["old_labels_accuracy_before"] = accuracy(was, old_rows)
        out["old_labels_accuracy_after"] = accuracy(now_, old_rows)
    if new_rows:
        out["new_labels_accuracy_after"] = accuracy(now_, new_rows)
    out["accuracy_after"] = accuracy(now_, list(range(len(gold))))
    out["examples"] = len(gold)
    out["eval_rows"] = {"old_labels": len(old_rows), "new_labels": len(new_rows)}
    return out


def _report_multi(data: Examples, was: list[str], now_: list[str],
                  old: set[str]) -> dict[str, Any]:
    from ._metrics import multilabel_metrics

    assert data.labels is not None
    gold = [split_labels(label) for label in data.labels]
    before = [split_labels(label) for label in was]
    after = [split_labels(label) for label in now_]
    new = set().union(*gold, *after) - old

    def micro_f1(predicted: list[list[str]], labels: set[str]) -> float:
        return float(multilabel_metrics(gold, predicted, sorted(labels))["micro_f1"])

    out: dict[str, Any] = {"old_labels_micro_f1_before": micro_f1(before, old),
                           "old_labels_micro_f1_after": micro_f1(after, old)}
    if new:
        out["new_labels_micro_f1_after"] = micro_f1(after, new)
    out["micro_f1_after"] = micro_f1(after, old | new)
    out["examples"] = len(gold)
    return out
