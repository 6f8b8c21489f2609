"""Learning from unlabelled texts: self-training and active learning (`classify`).

Self-training (`train(..., unlabeled=DATA)`): train on the labelled data, label the unlabelled
texts the function is confident about (pseudo-labels), train again on both, for a set number
of rounds. Each round is one ordinary `fit` (the chosen method, the one training loop); the
pseudo-labels are chosen afresh each round by the newest function, so an early mistake can be
taken back. Per-label caps keep the pseudo-labels in the labelled data's label proportions:
confident predictions pile up on the easiest label, and training on that pile tilts the next
round further towards it (confirmation bias).

Active learning (`suggest(fn, DATA, n)`): the texts whose labels would help `fn` most. While
the labelled texts (`labelled=`) are few, the centres of the densest neighbourhoods they do not
reach, each text weighed by the function's uncertainty (ProbCover with information density);
later, or once every text is near a labelled one, the most uncertain texts form a pool
(`candidates`, near-duplicates dropped), k-means on the function's own features splits the
pool into `n` groups, and each group gives its most uncertain text: uncertain, and not n
variations of one text.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ._config import Options
from ._data import Examples, read_texts
from ._errors import DataError, TaskError, is_real, is_whole

CONFIDENCE = 0.8
"""Self-training's default threshold, as a share of the way from chance (1/C) to certainty.
With 8 labelled texts per label, 2,000 unlabelled ones and `head` (3 seeds; test / held-out
train rows), against a fixed 0.9: Emotion +3.0 / +2.2 points (at 0.833), TREC +3.3 / +1.3
(0.833), AG News +1.0 / +0.8 (0.85); SST-5 and Banking77 got no pseudo-label either way; two
labels keep 0.9 (docs/unlabeled.md)."""
DUPLICATE_SIMILARITY = 0.95
"""Two texts whose features have at least this cosine similarity count as near-duplicates."""
CANDIDATES_PER_PICK = 5
"""`suggest` diversifies among the 5 x n most uncertain texts by default (Zhdanov 2019,
"Diverse mini-batch active learning", prefilters the same way). In bench/active.py (3 seeds)
5 x n and 10 x n did alike on SST-2; on Emotion 5 x n was 0.5-3 points better up to 64 labels."""
MEASURES = ("margin", "entropy", "badge")
COVER_SHARE = 1 / 200
"""`cover`'s neighbourhoods hold 0.5% of the texts (labelled and not) on average: 10 of the 2,000
in bench/active.py, a fixed similarity whatever the pool's size. Chosen on held-out rows of five
datasets (10 seeds) against 15, 20 and 30 of 2,000. With 8,000 texts, 40 neighbours (the same
share) kept SST-2 and Emotion above random at every point; 10 (a smaller share) gave Emotion
+4 to +6 points from 32 labels on but SST-2 nothing up to 64 and Emotion -1.2 at 16. Chosen
before `suggest` weighted coverage by uncertainty; the weights were measured with this share."""
COVER_MOST = 50
"""...but at most 50 neighbours a text on average (pools above 10,000), which bounds the
neighbour graph's memory (about 800 bytes a text)."""
SIMILARITY_BLOCK = 16_000_000
"""`neighbour_similarity` compares all rows with all up to 4,000 rows (64 MB), a sample above."""
EXPLORE_UNTIL = 64
"""explore="auto": every pick is a coverage pick while there are at most 64 labelled texts per
label, then the uncertain share grows, to all picks at 128 per label (and earlier when every
text is covered). Chosen with TypiClust's typical picks (bench/active.py, held-out train rows,
10 seeds): switching to uncertainty at 8, 16 or 32 per label cost SST-2 1-3 points where it
switched (docs/unlabeled.md)."""


@dataclass(kw_only=True)
class SelfTraining(Options):
    """How `train(..., unlabeled=DATA)` uses the unlabelled texts.

    >>> SelfTraining(rounds=2, threshold=0.95).per_class is None
    True
    """

    option_name = "self_training"

    rounds: int = 3
    """Rounds of pseudo-labelling and retraining after the labelled-only training."""
    threshold: float | None = None
    """A text is pseudo-labelled only when the function gives its top label at least this
    probability. None (the default): `CONFIDENCE` of the way from chance to certainty,
    1/C + 0.8 (1 - 1/C) for C labels: 0.9 for two labels, 0.83 for six, 0.80 for many
    (`cutoff`). A fixed 0.9 asks far more of a six-label function than of a two-label one."""
    per_class: int | None = None
    """Round r keeps at most r x per_class pseudo-labels of each label (the most confident):
    a curriculum that grows by per_class a round. None: no cap beyond `threshold`."""
    balance: bool = True
    """Keep the pseudo-labels in the labelled data's label proportions: the label with the
    fewest confident texts (relative to its share) sets how many every label gets."""
    keep: str = "best"
    """"best": keep the round with the best eval metric (eval data given or held out; round 0
    is the labelled-only function; ties go to the earlier round); "last": the last round.
    Without eval data there is nothing to compare: the last round is kept."""

    def __post_init__(self) -> None:
        for name in ("rounds", "per_class"):
            value = getattr(self, name)
            if value is not None and (not is_whole(value) or value < 1):
                raise TaskError(f"self_training {name} must be a whole number >= 1, got "
                                f"{value!r}.")
            if value is not None:
                setattr(self, name, int(value))  # NumPy's too; the manifest needs Python's
        if self.threshold is not None and (not is_real(self.threshold)
                                           or not 0 < self.threshold < 1):
            raise TaskError(f"self_training threshold must be a probability in (0, 1), got "
                            f"{self.threshold!r}.")
        if self.threshold is not None:
            self.threshold = float(self.threshold)
        if not isinstance(self.balance, bool):  # "false" was truthy: balance stayed on
            raise TaskError(f"self_training balance must be true or false, got "
                            f"{self.balance!r:.60}.")
        if self.keep not in ("best", "last"):
            raise TaskError(f"self_training keep must be 'best' or 'last', got {self.keep!r}.")

    def cutoff(self, labels: int) -> float:
        """The probability a pseudo-label needs with `labels` labels.

        >>> [round(SelfTraining().cutoff(c), 3) for c in (2, 4, 6, 77)]
        [0.9, 0.85, 0.833, 0.803]
        >>> SelfTraining(threshold=0.7).cutoff(6)
        0.7
        """
        if self.threshold is not None:
            return float(self.threshold)
        chance = 1 / max(labels, 1)
        return chance + CONFIDENCE * (1 - chance)


def _in_round(config: Any, number: int) -> Any:
    """`config` for round `number`: its checkpoints and TensorBoard logs in their own
    `round-N` folders, as each round trains on other data (one checkpoint folder: resume
    refused round 0 the last round's checkpoint; one log run: the rounds' steps overlapped,
    and a resumed round hid the later rounds' ones)."""
    import os

    return dataclasses.replace(config, **{
        name: os.path.join(getattr(config, name), f"round-{number}")
        for name in ("checkpoint_dir", "log_dir") if getattr(config, name)})


def self_train(task: Any, backbone: Any, labelled: Examples, eval_data: Examples | None,
               unlabeled: Examples, settings: SelfTraining, config: Any, progress: bool,
               cache: Any) -> tuple[Any, dict[str, Any]]:
    """Rounds of `fit`: labelled only, then labelled + pseudo-labels. Returns the kept round's
    `Trained` and the report for `manifest.training["self_training"]`."""
    from ._function import say
    from ._methods import fit, holdout
    from ._update import _join

    source = "given"
    if eval_data is None:  # held out of the labelled rows only: pseudo-labels never score
        labelled, eval_data = holdout(labelled, config.eval_share, config.seed)
        source = f"held out {len(eval_data)}" if eval_data is not None else "none"
    pool = _pool(unlabeled, labelled, eval_data)
    if len(pool) < len(unlabeled):  # it was only in the manifest: 200 texts, 'unlabeled: 140'
        say(f"self-training: {len(pool)} of the {len(unlabeled)} unlabelled texts are used; "
            f"{len(unlabeled) - len(pool)} repeat one another or a text of the training or "
            "eval data (an eval text pseudo-labelled would leak into its own score).",
            progress)
    shares = _shares(task, labelled)
    trained = fit(task, backbone, labelled, eval_data, _in_round(config, 0), progress, cache,
                  source=source)
    rounds = [_round_record(0, [], task, trained)]
    kept = (trained, 0)
    chosen = (trained.chosen or {}).get("learning_rate")
    if chosen is not None and config.learning_rate is None:
        # every round at the rate round 0 chose from the labelled rows (`contrastive` picks
        # it by examples a label): the pseudo-labels' count would change it between rounds
        config = dataclasses.replace(config, learning_rate=chosen)
    for number in range(1, settings.rounds + 1):
        probs = _probabilities(trained, backbone, pool, config, cache)
        picks = pseudo_labels(probs, settings, number, shares)
        if not picks:
            why = _why_none(probs, settings, task.labels)
            say(f"self-training round {number}: no pseudo-labels ({why}); stopping.", progress)
            break
        say(f"self-training round {number}: {len(picks)} pseudo-labels", progress)
        pseudo = _labelled_rows(pool, picks, task.labels)
        trained = fit(task, backbone, _join(labelled, pseudo), eval_data,
                      _in_round(config, number), progress, cache, source=source)
        rounds.append(_round_record(number, pseudo.labels, task, trained, probs, picks))
        if _better(trained, kept[0], settings.keep):
            kept = (trained, number)
    return kept[0], _report(settings, rounds, kept[1], len(pool), config.metric,
                            len(task.labels))


def pseudo_labels(probs: torch.Tensor, settings: SelfTraining, round_number: int,
                  shares: torch.Tensor) -> list[tuple[int, int]]:
    """(row, label index) of the texts to pseudo-label this round, most confident first within
    each label. `probs` (U, C) are the function's probabilities; `shares` (C,) the labelled
    data's label proportions.

    >>> probs = torch.tensor([[0.99, 0.01], [0.95, 0.05], [0.2, 0.8], [0.03, 0.97]])
    >>> pseudo_labels(probs, SelfTraining(threshold=0.9), 1, torch.tensor([0.5, 0.5]))
    [(0, 0), (3, 1)]
    """
    confidence, predicted = probs.max(dim=1)
    cutoff = settings.cutoff(probs.shape[1])
    by_label = []
    for c in range(probs.shape[1]):
        rows = ((predicted == c) & (confidence >= cutoff)).nonzero().flatten()
        by_label.append(rows[confidence[rows].argsort(descending=True)].tolist())
    counts = torch.tensor([float(len(rows)) for rows in by_label])
    if settings.balance:
        present = shares > 0
        scale = float((counts[present] / shares[present]).min())
        counts = torch.floor(shares * scale + 1e-6)
    if settings.per_class is not None:
        counts = counts.clamp(max=settings.per_class * round_number)
    return [(row, c) for c, rows in enumerate(by_label) for row in rows[: int(counts[c])]]


def _why_none(probs: torch.Tensor, settings: SelfTraining, labels: list[str]) -> str:
    confidence, predicted = probs.max(dim=1)
    cutoff = settings.cutoff(probs.shape[1])
    confident = predicted[confidence >= cutoff]
    missing = [label for c, label in enumerate(labels) if not (confident == c).any()]
    shown = (f"{settings.threshold}" if settings.threshold is not None else
             f"{cutoff:.3f} (the default for {len(labels)} labels)")
    if len(missing) == len(labels) or not settings.balance:
        return f"no text reached the threshold {shown}"
    return (f"no text of label {', '.join(map(repr, missing))} reached the threshold "
            f"{shown}, and balance keeps the labels' proportions; lower the "
            "threshold or set balance=False")


def _pool(unlabeled: Examples, *known: Examples | None) -> Examples:
    """The distinct unlabelled texts that are not already labelled (train or eval data)."""
    seen = {text for examples in known if examples is not None for text in examples.texts}
    rows = []
    for i, text in enumerate(unlabeled.texts):
        if text not in seen:
            seen.add(text)
            rows.append(i)
    if not rows:
        raise DataError(f"{unlabeled.source}: every unlabelled text is already in the labelled "
                        "data. Fix: pass texts that have no label yet.")
    return Examples(texts=[unlabeled.texts[i] for i in rows], labels=None,
                    source=unlabeled.source, places=[unlabeled.places[i] for i in rows])


def _shares(task: Any, labelled: Examples) -> torch.Tensor:
    counts = torch.bincount(task.targets(labelled), minlength=len(task.labels)).float()
    return counts / counts.sum()


def _probabilities(trained: Any, backbone: Any, pool: Examples, config: Any,
                   cache: Any) -> torch.Tensor:
    """Softmax of the trained head on the pool's features (N, C), from the trained encoder."""
    from ._methods.head import _features

    features, _ = _features(backbone, pool, config, cache, trained.encoder)
    with torch.inference_mode():
        return torch.softmax(trained.head.eval()(features.to(_device(trained.head))).float().cpu(),
                             dim=-1)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters(), torch.empty(0)).device


def _labelled_rows(pool: Examples, picks: list[tuple[int, int]], labels: list[str]) -> Examples:
    return Examples(texts=[pool.texts[i] for i, _ in picks], labels=[labels[c] for _, c in picks],
                    source=pool.source, places=[pool.places[i] for i, _ in picks])


def _round_record(number: int, pseudo: list[str] | None, task: Any, trained: Any,
                  probs: torch.Tensor | None = None,
                  picks: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    counts = Counter(pseudo or [])
    record: dict[str, Any] = {"round": number, "pseudo_labels": sum(counts.values()),
                              "per_label": {label: counts.get(label, 0) for label in task.labels},
                              "eval_metric": trained.history.best_metric}
    if probs is not None and picks:
        record["lowest_confidence"] = round(min(float(probs[i, c]) for i, c in picks), 4)
    return record


def _better(trained: Any, best: Any, keep: str) -> bool:
    """Whether this round replaces the kept one: always for "last", and for "best" when
    there is no eval metric to compare (then "best" cannot choose: the last round is kept)."""
    now, before = trained.history.best_metric, best.history.best_metric
    if keep == "last" or now is None or before is None:
        return True
    return now > before


def _report(settings: SelfTraining, rounds: list[dict[str, Any]], kept: int, pool: int,
            metric: str, labels: int) -> dict[str, Any]:
    report: dict[str, Any] = {"settings": settings.to_dict(),
                              "threshold": round(settings.cutoff(labels), 6),
                              "unlabeled": pool,
                              "metric": metric, "rounds": rounds, "kept_round": kept}
    first, chosen = rounds[0]["eval_metric"], rounds[kept]["eval_metric"]
    if first is not None and chosen is not None:
        report["labelled_only"] = first
        report["gain"] = round(chosen - first, 6)
    return report


@dataclass(frozen=True)
class Suggestion:
    """A text worth labelling: how uncertain the function is about it (score, 0..1, higher is
    more useful), what it predicts now, and where the text is in the input.

    >>> Suggestion(text="meh", score=0.97, predicted="positive", index=4,
    ...            place="pool.txt, line 5").to_dict()["place"]
    'pool.txt, line 5'
    """

    text: str
    score: float
    predicted: str
    index: int
    """Position of the text among the input's rows (0-based)."""
    place: str
    """Where the text is: 'pool.csv, line 7' (files count the header line), '<list>, index 6'."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suggest(fn: Any, unlabeled: Any, n: int = 20, *, measure: str = "margin",
            candidates: int | None = None, labelled: Any = None, explore: Any = "auto",
            text_column: str = "text", cache: Any = None,
            seed: int = 0) -> list[Suggestion]:
    """The `n` texts of `unlabeled` whose labels would help `fn` (a classify function) most.

    With the texts already `labelled` (e.g. the training data; any form `predict` reads),
    while there are few of them (`explore="auto"`: up to 64 per label, then fewer, none from
    128 per label on; or a share from 0 to 1), picks cover the data the labelled texts do not
    reach (ProbCover, Yehuda et al. 2022): each pick is the text whose neighbourhood holds the
    most texts not yet near a labelled text or an earlier pick (`cover`), each text counted by
    the function's uncertainty about it. A function trained on a few dozen texts is too unsure
    everywhere for its uncertainty alone to point anywhere useful; summed over a region, it
    tells the regions apart. Labelled texts are never suggested.

    The other picks are uncertain (`measure`: "margin", 1 - (p1 - p2), or "entropy" of the
    probabilities; for a multi-label function, closeness of a label's probability to its
    threshold), and diverse: k-means on the function's features splits the `candidates` most
    uncertain texts (default 5 x the picks) into groups, and each group gives its most
    uncertain text. Without `labelled`, "auto" makes every pick this way, and so do the
    picks left once every text is covered. Exact and near
    duplicates are never both picked. Most uncertain first. Label them and pass them to
    `fn.update` (or train again).

    >>> picks = funcformer.suggest(fn, "texts.txt", labelled="train.csv")  # doctest: +SKIP
    >>> picks[0].text, picks[0].score, picks[0].place              # doctest: +SKIP
    ('not bad, not great', 0.98, 'unlabelled.txt, line 112')
    """
    from ._cache import open_cache

    _check_suggest(fn, n, measure, candidates, explore)
    if not is_whole(seed):  # torch's manual_seed failed with a RuntimeError
        raise DataError(f"seed must be a whole number, got {seed!r:.60}.")
    cache = open_cache(cache)
    examples = read_pool(unlabeled, text_column)
    # an empty list: nothing labelled yet (a cold start), so every text is uncovered
    empty = isinstance(labelled, (list, tuple)) and not labelled
    known = [] if labelled is None or empty else read_pool(labelled, text_column,
                                                            "labelled").texts
    both = fn.features(examples.texts + known, cache)  # (N + L, H)
    features = both[: len(examples)]
    with torch.inference_mode():
        logits = fn.apply_head(features)
    scores = uncertainty(fn.task, logits, "margin" if measure == "badge" else measure)
    z_both = directions(both)
    z = z_both[: len(examples)]
    share = _explore_share(explore, len(known) if labelled is not None else None,
                           len(fn.task.labels))
    skip = set(known)
    chosen = cover(z, z_both[len(examples):], round(share * n), seed,
                   [t in skip for t in examples.texts], weights=scores) if share else []
    n_left = n - len(chosen)
    size = len(examples) if measure == "badge" and candidates is None else \
        max(n_left, candidates or CANDIDATES_PER_PICK * n_left)
    pool = distinct_pool(z, scores, size, examples.texts, taken=chosen, skip=skip)
    if len(pool) < n_left:
        found = len(pool) + len(chosen)
        if not found:
            raise DataError(f"{examples.source}: none of the {len(examples)} texts can be "
                            "suggested: each is a labelled text or a near-duplicate of one. "
                            "Fix: pass texts that have no label yet.")
        if found == len(examples):  # no duplicates: there are simply too few texts
            raise DataError(f"{examples.source}: asked for n={n} suggestions, but there are "
                            f"only {found} texts. Fix: pass n <= {found} or more texts.")
        raise DataError(f"{examples.source}: asked for n={n} suggestions, but only {found} "
                        f"of the {len(examples)} texts differ from each other (the rest are "
                        f"duplicates or near-duplicates) and from the labelled texts. Fix: "
                        f"pass n <= {found} or more texts.")
    if not n_left:
        picks = []
    elif measure == "badge":
        picks = badge(gradient_embedding(fn.task, features[pool], logits[pool]), n_left, seed)
    else:
        picks = diverse(z[pool], scores[pool], n_left, seed)
    predicted = fn.task.predicted_labels(logits)
    rows = sorted(chosen + [pool[i] for i in picks], key=lambda i: -float(scores[i]))
    return [Suggestion(text=examples.texts[i], score=round(float(scores[i]), 6),
                       predicted=predicted[i], index=i, place=examples.where(i)) for i in rows]


def read_pool(data: Any, text_column: str = "text", what: str = "unlabeled") -> Examples:
    """Texts in any form `predict` reads, and a list of (text, label) pairs (the form `train`
    takes) too: the labels are ignored, as a file's label column is. Such a list, e.g. the
    training data passed as `labelled=`, was refused with 'expected ... a (text, label)
    pair, got tuple'. `what` names the argument an empty list was given as."""
    if isinstance(data, (list, tuple)):
        if not data:  # '<list>: no examples found' did not say which of the lists
            raise DataError(f"{what}: an empty list, so no texts. Fix: pass the texts.")
        data = [x[0] if isinstance(x, (tuple, list)) and len(x) == 2 else x for x in data]
    return read_texts(data, text_column=text_column)


def _check_suggest(fn: Any, n: Any, measure: str, candidates: int | None,
                   explore: Any = 0.0) -> None:
    from ._function import Classifier

    if not isinstance(fn, Classifier):
        task = getattr(getattr(fn, "manifest", None), "task", type(fn).__name__)
        raise TaskError(f"suggest picks texts to label for a classify function; this "
                        f"function's task is {task}. Fix: train a classify function on the "
                        "labels you have first (funcformer train classify ...).")
    if fn.runner is not None:
        raise TaskError("suggest needs the function's features, which an ONNX runtime does not "
                        "give. Fix: load it with runtime='torch' (--runtime torch).")
    for name, value in (("n", n), ("candidates", candidates)):
        if value is not None and (not is_whole(value) or value < 1):
            raise DataError(f"{name} must be a whole number >= 1, got {value!r}.")
    if measure not in MEASURES:
        raise TaskError(f"Unknown uncertainty measure '{measure}'. Choose one of: "
                        f"{', '.join(MEASURES)}.")
    if explore != "auto" and (not is_real(explore) or not 0 <= explore <= 1):
        raise DataError(f"explore must be a share from 0 to 1 or 'auto', got {explore!r}.")


def uncertainty(task: Any, logits: torch.Tensor, measure: str = "margin") -> torch.Tensor:
    """How unsure the function is about each row (N,), from 0 (sure) to 1.

    >>> from funcformer._tasks.classify import Classify
    >>> scores = uncertainty(Classify(["a", "b"]), torch.tensor([[0.0, 0.0], [0.0, 9.0]]))
    >>> [round(x, 3) for x in scores.tolist()]
    [1.0, 0.0]
    """
    if task.multi_label:  # each label's distance to its threshold, scaled to [0, 1]
        probs = torch.sigmoid(logits.float())
        t = torch.tensor(task.thresholds)
        closeness = 1 - (probs - t).abs() / torch.maximum(t, 1 - t)
        return closeness.max(dim=1).values if measure == "margin" else closeness.mean(dim=1)
    probs = torch.softmax(logits.float(), dim=-1)
    if measure == "entropy":
        entropy = -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)
        return entropy / torch.log(torch.tensor(float(probs.shape[1])))
    top = probs.topk(2, dim=1).values
    return 1 - (top[:, 0] - top[:, 1])


def gradient_embedding(task: Any, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """BADGE's embedding (Ash et al. 2020) of each row (N, C*H): the gradient of the loss at
    the function's own guess with respect to the head's weights, (p - guess) x features. Its
    length grows with uncertainty, its direction says what the row would teach the head."""
    if task.multi_label:
        probs = torch.sigmoid(logits.float())
        guess = (probs >= torch.tensor(task.thresholds)).float()
    else:
        probs = torch.softmax(logits.float(), dim=-1)
        guess = torch.nn.functional.one_hot(probs.argmax(dim=1), probs.shape[1]).float()
    return ((probs - guess)[:, :, None] * features.float()[:, None, :]).flatten(1)


def badge(g: torch.Tensor, n: int, seed: int = 0) -> list[int]:
    """n rows of gradient embeddings `g` by k-means++ seeding, from the longest one: large and
    mutually different gradients, so uncertainty and diversity in one step, without a
    candidate pool.

    >>> g = torch.tensor([[3.0, 0.0], [2.9, 0.1], [0.0, 3.0]])
    >>> sorted(badge(g, 2))
    [0, 2]
    """
    first = int(g.norm(dim=1).argmax())
    return _kmeans_pp(g, n, torch.Generator().manual_seed(seed), first=first)


def directions(features: torch.Tensor) -> torch.Tensor:
    """Unit vectors (N, H) of the features minus their mean. Encoders' features share a large
    common direction (a random-init BERT's texts all have cosine similarity above 0.9); without
    it, cosine similarity tells near-duplicates (about 1) from merely related texts.
    Equal texts still get equal vectors."""
    features = features.float()
    centered = features - features.mean(dim=0) if len(features) > 1 else features
    return torch.nn.functional.normalize(centered, dim=-1)


def distinct_pool(z: torch.Tensor, scores: torch.Tensor, size: int,
                  texts: list[str] | None = None, taken: list[int] | None = None,
                  skip: set[str] | None = None) -> list[int]:
    """Up to `size` rows, most uncertain first, none a repeat of an earlier one's text nor a
    near-duplicate: unit vectors `z` (N, H) (see `directions`) with cosine similarity
    >= DUPLICATE_SIMILARITY. Rows `taken` already (not returned) count as earlier ones; texts
    in `skip` are left out.

    >>> z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]))
    >>> distinct_pool(z, torch.tensor([0.9, 0.8, 0.5]), 3)
    [0, 2]
    """
    kept: list[int] = list(taken or [])
    seen: set[str] = set(skip or ()) | ({texts[i] for i in kept} if texts is not None else set())
    target = size + len(kept)
    for i in scores.argsort(descending=True).tolist():
        if len(kept) >= target:
            break
        if texts is not None and texts[i] in seen:
            continue
        if not kept or float((z[kept] @ z[i]).max()) < DUPLICATE_SIMILARITY:
            kept.append(i)
            if texts is not None:
                seen.add(texts[i])
    return kept[len(taken or []):]


def diverse(z: torch.Tensor, scores: torch.Tensor, n: int, seed: int = 0,
            iterations: int = 20) -> list[int]:
    """n rows of unit vectors `z` (P, H): k-means on them (k = n, cosine, seeded k-means++
    start), then the most uncertain row of each cluster; empty clusters are filled by the most
    uncertain rows left.

    >>> z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0],
    ...                                                 [0.1, 0.9]]))
    >>> sorted(diverse(z, torch.tensor([0.9, 0.8, 0.5, 0.6]), 2))
    [0, 3]
    """
    assign = kmeans(z, n, seed, iterations)
    picks = []
    for k in range(n):
        members = (assign == k).nonzero().flatten()
        if len(members):
            picks.append(int(members[scores[members].argmax()]))
    rest = [i for i in scores.argsort(descending=True).tolist() if i not in set(picks)]
    return picks + rest[: n - len(picks)]


def kmeans(z: torch.Tensor, k: int, seed: int = 0, iterations: int = 20) -> torch.Tensor:
    """Cluster of each unit vector of `z` (P, H) among k: spherical k-means (cosine) from a
    seeded k-means++ start.

    >>> kmeans(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]]), 2).tolist()
    [0, 1, 0]
    """
    centers = z[_kmeans_pp(z, k, torch.Generator().manual_seed(seed))]
    for _ in range(iterations):
        assign = (z @ centers.T).argmax(dim=1)
        sums = torch.zeros_like(centers).index_add_(0, assign, z)
        filled = torch.bincount(assign, minlength=k) > 0  # an empty cluster keeps its center
        centers[filled] = torch.nn.functional.normalize(sums[filled], dim=1)
    return (z @ centers.T).argmax(dim=1)


def neighbour_similarity(z: torch.Tensor, degree: int, seed: int = 0) -> float:
    """The cosine similarity from which two unit vectors of `z` (N, H) count as neighbours:
    the one that gives each row `degree` neighbours on average (ProbCover's ball radius,
    Yehuda et al. 2022, set by a mean degree instead of by cluster purity). Exact up to about
    4,000 rows; above that it is measured on a seeded sample of rows (each against all rows).

    >>> z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0],
    ...                                                 [0.1, 1.0]]))
    >>> round(neighbour_similarity(z, 1), 3)  # each close pair are neighbours
    0.995
    """
    n = len(z)
    if n < 2:
        return 1.0
    rows = torch.arange(n) if n * n <= SIMILARITY_BLOCK else \
        torch.randperm(n, generator=torch.Generator().manual_seed(seed))[
            : max(64, SIMILARITY_BLOCK // n)]
    similarity = z[rows] @ z.T
    similarity[torch.arange(len(rows)), rows] = -2.0  # not its own neighbour
    k = max(1, min(degree, n - 1) * len(rows))
    return float(similarity.flatten().topk(k).values[-1])


def neighbourhoods(z: torch.Tensor, similarity: float,
                   expected: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The neighbour graph of unit vectors `z` (N, H) as (row, neighbour) index pairs: cosine
    similarity >= `similarity`, each row its own neighbour. Symmetric. Compares every row with
    every row (2,000 texts: well under a second; 20,000: seconds), in blocks of at most
    SIMILARITY_BLOCK similarities. The pairs go into one buffer sized for `expected` pairs
    (grown when short): small per-block results kept between the large temporary blocks would
    fragment the heap (with 50,000 texts, gigabytes of resident memory for 20 MB of pairs)."""
    chunk = max(64, SIMILARITY_BLOCK // max(len(z), 1))
    pairs = torch.empty(max(expected, len(z)), 2, dtype=torch.long)
    found = 0
    for start in range(0, len(z), chunk):
        block = z[start: start + chunk] @ z.T
        block[torch.arange(len(block)), torch.arange(start, start + len(block))] = 2.0
        hits = (block >= similarity).nonzero()
        del block
        hits[:, 0] += start
        if found + len(hits) > len(pairs):
            pairs = torch.cat([pairs[:found], torch.empty(max(len(pairs), len(hits)), 2,
                                                          dtype=torch.long)])
        pairs[found: found + len(hits)] = hits
        found += len(hits)
    return pairs[:found, 0].clone(), pairs[:found, 1].clone()


def cover(z: torch.Tensor, z_known: torch.Tensor, m: int, seed: int = 0,
          excluded: list[bool] | None = None, degree: int | None = None,
          weights: torch.Tensor | None = None) -> list[int]:
    """Up to m rows of `z` (N, H) whose neighbourhoods hold the most texts that no labelled
    text (`z_known`, (L, H)) or earlier pick is near (ProbCover, Yehuda et al. 2022): greedy
    maximum coverage of the neighbour graph of all rows, labelled and not, with `degree`
    neighbours a row on average (default `cover_degree`). Dense regions no labelled text
    reaches come first; fewer than m rows when every text is covered. With `weights` (N,),
    e.g. the function's uncertainty, a text counts for its weight instead of 1 (information
    density, Settles & Craven 2008: dense regions the function is unsure of first). `excluded`
    rows (already labelled texts) are never picked, nor a second copy of a picked text (its
    neighbourhood is covered). `seed` picks the rows that set the neighbour similarity in pools
    above 4,000.

    >>> z = torch.nn.functional.normalize(torch.tensor(
    ...     [[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0], [0.1, 1.0]]))
    >>> cover(z[:4], z[4:], 2, degree=1)  # the middle of the uncovered three, then nothing
    [0]
    """
    every = torch.cat([z, z_known])
    degree = cover_degree(len(every)) if degree is None else degree
    rows, columns = neighbourhoods(every, neighbour_similarity(every, degree, seed),
                                   expected=len(every) * (degree + 1) * 5 // 4)
    covered = torch.zeros(len(every), dtype=torch.bool)
    covered[columns[rows >= len(z)]] = True  # what the labelled texts reach
    allowed = torch.ones(len(every), dtype=torch.bool)
    allowed[len(z):] = False
    if excluded:
        allowed[: len(z)] &= ~torch.tensor(excluded, dtype=torch.bool)
    worth = torch.ones(len(every)) if weights is None else torch.cat(
        [weights.float().clamp(min=1e-6), torch.zeros(len(z_known))])  # labelled: covered
    picks: list[int] = []
    while len(picks) < m:
        gain = torch.zeros(len(every)).index_add_(0, rows, (~covered[columns]) * worth[columns])
        gain[~allowed] = -1.0
        best = int(gain.argmax())
        if gain[best] <= 0:
            break
        picks.append(best)
        allowed[best] = False
        covered[columns[rows == best]] = True
    return picks


def cover_degree(n: int) -> int:
    """Neighbours a text on average for `cover`, among `n` texts: COVER_SHARE of them, at least
    1 and at most COVER_MOST.

    >>> cover_degree(2000), cover_degree(8000), cover_degree(100), cover_degree(10**6)
    (10, 40, 1, 50)
    """
    return max(1, min(COVER_MOST, round(n * COVER_SHARE)))


def _explore_share(explore: Any, known: int | None, labels: int) -> float:
    """The share of coverage picks: `explore`, or for "auto" from the `known` labelled texts
    per label (see EXPLORE_UNTIL); none when they are not given (None): coverage picks that
    cannot see the labelled texts repeat their regions (TypiClust's typical picks on Emotion
    at 128 labels: 1.5 points below random)."""
    if explore != "auto":
        return float(explore)
    if known is None:
        return 0.0
    return min(1.0, max(0.0, 2.0 - known / (EXPLORE_UNTIL * labels)))


def _kmeans_pp(z: torch.Tensor, k: int, generator: torch.Generator | None,
               first: int | None = None) -> list[int]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next center is drawn with
    probability proportional to its squared distance to the nearest center; the first is
    `first`, or drawn at random."""
    if first is None:
        first = int(torch.randint(len(z), (1,), generator=generator))
    chosen = [first]
    nearest = ((z - z[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        weights = nearest.clamp(min=0)
        if float(weights.sum()) <= 0:  # every row sits on a center: take any unused one
            unused = [i for i in range(len(z)) if i not in chosen]
            chosen.append(unused[0])
        else:
            chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        nearest = torch.minimum(nearest, ((z - z[chosen[-1]]) ** 2).sum(dim=1))
    return chosen


SUGGESTION_COLUMNS = ("text", "label", "predicted", "score", "place")
"""What `write_suggestions` writes: `label` is left empty for a person to fill in."""


def suggestion_format(target: Any) -> str:
    """'csv', 'tsv' or 'jsonl' from a suggestions file's name, else a DataError (the CLI asks
    before any work, not after it)."""
    from pathlib import Path

    suffix = Path(target).suffix
    kind = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}.get(suffix.lower())
    if kind is None:
        raise DataError(f"{target}: unknown output file type '{suffix or '(none)'}'. "
                        "Fix: use .csv, .tsv or .jsonl.")
    return kind


def write_suggestions(path: Any, suggestions: list[Suggestion]) -> None:
    """Write suggestions to a .csv, .tsv or .jsonl file (atomically), ready to label: fill
    in the empty `label` column, then pass the file to `update` or `train`."""
    import csv
    import json
    from pathlib import Path

    from ._artifact import atomic_file

    target = Path(path)
    kind = suggestion_format(target)
    rows = [{"text": s.text, "label": "", "predicted": s.predicted, "score": s.score,
             "place": s.place} for s in suggestions]
    if kind == "tsv" and any("\t" in s.text or "\n" in s.text for s in suggestions):
        raise DataError(f"{target}: a suggested text holds a tab or a line break, which a TSV "
                        "file cannot hold. Fix: write .csv or .jsonl instead.")
    with atomic_file(target) as handle:
        if kind == "jsonl":
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        options: dict[str, Any] = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE,
                                    "quotechar": None} if kind == "tsv" else {})
        writer = csv.DictWriter(handle, fieldnames=SUGGESTION_COLUMNS, lineterminator="\n",
                                **options)
        writer.writeheader()
        writer.writerows(rows)
