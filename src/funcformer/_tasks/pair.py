"""The `pair` task: score a (query, item) pair with a cross-encoder (reranking, matching).

The encoder reads both texts at once (`[CLS] a [SEP] b [SEP]`), its pooled output goes through
one linear layer to one logit, and the sigmoid of that is the score in [0, 1]. Gold values are
graded scores (any range, scaled to [0, 1] by the training data's min and max) or binary labels;
one loss serves both: binary cross-entropy against the scaled target. `full` tunes a private
copy of the encoder with the head, `lora` a LoRA adapter on the shared backbone with it (the
artifact holds adapter/ and the head), `head` only the linear layer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import _backbone, _explain, _lora
from .._artifact import (
    DAMAGED_FIX,
    MANIFEST,
    BackboneRef,
    HeadSpec,
    Manifest,
)
from .._backbone import (
    Backbone,
    Pooling,
    default_budget,
    gather,
    off_cpu,
    pool,
    rows_per_batch,
    token_batches,
)
from .._config import TrainConfig
from .._data import _text, read_texts
from .._errors import ArtifactError, DataError, TaskError, is_real, is_whole
from .._function import (
    Function,
    PathLike,
    encoder_state,
    export_graph,
    load_adapter,
    load_backbone,
    load_head,
    make_config,
    method_option,
    need_torch,
    now,
    save_with_head,
    say,
    state_digest,
)
from .._fused import last_hidden_state
from .._methods import choose_tuning, task_method, trainable_encoder
from .._model import HeadChoice, LinearHead
from .._train import History, Plan, content_digest, length_grouped_batches, run, shuffled_batches
from .._version import __version__
from ._pairs import (
    Columns,
    Encoded,
    Pairs,
    Scale,
    early_stopping_metric,
    encode,
    holdout,
    metrics,
    pad,
    read_pairs,
)

METHODS = ("full", "lora", "head")
FULL_LEARNING_RATE = 1e-4
"""`full`'s default peak learning rate for pairs (the library's 5e-5 suits classify). STS-B dev
Spearman after one epoch on 2,000 train pairs: 73.5 at 5e-5, 78.2 at 1e-4, 76.8 at 2e-4."""
POOLING = "backbone"
"""How pair states are pooled: "backbone" (its own pooling; mean + normalize for
all-MiniLM-L6-v2) or "cls" (the [CLS] state). Measured on STS-B dev after one epoch of `full`
on 2,000 train pairs at 5e-5: backbone 73.5 Spearman, cls 72.1; the backbone's pooling is kept."""


@dataclass(frozen=True)
class PairScore:
    """How well a pair matches, in [0, 1] (graded scores map back with `fn.rescale`).

    >>> PairScore(score=0.83).to_dict()
    {'score': 0.83}
    """

    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ranked:
    """One item of `fn.rank(query, items)`: the item, its score, its position in `items`.

    >>> Ranked(item="a red car", score=0.9, index=2).index
    2
    """

    item: str
    score: float
    index: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CrossEncoder(torch.nn.Module):
    """Encoder over the joined pair -> pooling -> linear head: logits (B,)."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def features(self, **batch: torch.Tensor) -> torch.Tensor:
        states = last_hidden_state(self.encoder, **batch)  # (B, T, H)
        return pool(states, batch["attention_mask"], self.pooling)  # (B, H)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(**batch)).squeeze(-1)  # (B,)


def apply(backbone: Backbone, model: CrossEncoder, encoded: Encoded, width: int,
          then: Callable[[torch.Tensor], torch.Tensor], batch_tokens: int | None = None
          ) -> torch.Tensor:
    """`then(pooled features)` for every pair, (N, width) on CPU in input order; pairs are
    sorted by length and packed by a token budget so padding stays small (by default 1,024
    tokens and 64 pairs a batch on a CPU, 16,384 tokens on a GPU, as `Backbone.embed`)."""
    budget = default_budget(backbone.device, 1024) if batch_tokens is None else batch_tokens
    batches = token_batches(encoded.ids, budget, rows_per_batch(backbone.device, budget))
    out = torch.zeros((len(encoded.ids), width))
    with backbone._lock, torch.inference_mode():  # the shared encoder runs one batch at a time
        results = ((index, then(model.features(**pad(backbone, encoded, index))))
                   for index in batches)
        for index, values in gather(results, defer=off_cpu(backbone.device)):
            out[index] = torch.from_numpy(values)
    return out


def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


class PairFunction(Function):
    """Scores (a, b) pairs in [0, 1]; ranks items for a query.

    >>> fn = funcformer.train("pair", "stsb.tsv")                  # doctest: +SKIP
    >>> fn(("A man plays a flute.", "A man plays music.")).score    # doctest: +SKIP
    0.71
    >>> fn.rank("cheap flights", ["hotel deals", "low-cost airlines"])[0].index  # doctest: +SKIP
    1
    """

    def __init__(self, *, backbone: Backbone, model: CrossEncoder | None, manifest: Manifest,
                 runner: Any = None) -> None:
        super().__init__(manifest=manifest)
        self.backbone = backbone
        self.model = model.to(backbone.device).eval() if model is not None else None
        self.runner = runner
        """An ONNX Runtime session scoring token ids (`model` is then None); None runs torch."""
        options = manifest.options
        low, high = options.get("score_range", [0.0, 1.0])
        labels = (manifest.labels[0], manifest.labels[1]) if options["kind"] == "binary" else None
        self.scale = Scale(low=low, high=high, labels=labels)
        self.columns = Columns(**options.get("columns", {}))

    def is_single(self, inputs: Any) -> bool:
        """One pair is a 2-tuple of strings; anything else is a list of pairs."""
        return (isinstance(inputs, tuple) and len(inputs) == 2
                and all(isinstance(x, str) for x in inputs))

    def read_inputs(self, data: Any, *, text_column: str = "text") -> list[tuple[str, str]]:
        """Pairs from a file with text_a/text_b columns, a list of tuples or dicts, or strings
        holding the two texts separated by a tab (command-line arguments, lines on stdin and
        of a .txt file)."""
        if isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() == ".txt":
            lines = read_texts(data)  # a file of lines, as for the other tasks
            for i, text in enumerate(lines.texts):
                if "\t" not in text:  # it said field 'text_b' is missing
                    raise DataError(f"{lines.where(i)}: expected two texts separated by a "
                                    "tab. Fix: put a tab between the pair's texts, or use a "
                                    ".csv/.tsv/.jsonl file with text_a and text_b columns.")
                for field, half in zip(("text_a", "text_b"), text.split("\t", 1), strict=True):
                    _text({field: half}, field, lines.where(i))  # named by line, not index
            data = list(lines.texts)
        if isinstance(data, list):
            lone = next((i for i, x in enumerate(data) if isinstance(x, str) and "\t" not in x),
                        None)
            if lone is not None:  # it said field 'text_b' is missing, fix: text_b_column=
                raise DataError(f"<list>, index {lone}: one text, where a pair function takes "
                                "two: a (text_a, text_b) pair, or the two texts separated by a "
                                "tab. Fix: give the second text (CLI: $'query\\titem').")
            data = [tuple(x.split("\t", 1)) if isinstance(x, str) else x for x in data]
        pairs = read_pairs(data, self.columns, gold=False)
        return list(zip(pairs.a, pairs.b, strict=True))

    def predict(self, inputs: Sequence[Any]) -> list[PairScore]:
        """One PairScore per pair, in input order."""
        pairs = read_pairs(list(inputs), self.columns, gold=False)
        return [PairScore(score=s) for s in self.scores(pairs).tolist()]

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return "torch" if self.runner is None else "onnx"

    def scores(self, pairs: Pairs) -> torch.Tensor:
        """Scores (N,) in [0, 1]."""
        encoded = encode(self.backbone, pairs.a, pairs.b, self.manifest.config.get("max_length"))
        if self.runner is None:
            logits = apply(self.backbone, self.model, encoded, 1, self.model.head)[:, 0]
        else:  # the same token-budget batches, scored by the graph
            logits = torch.zeros(len(encoded.ids))
            for index in token_batches(encoded.ids, 1024):
                batch = pad(self.backbone, encoded, index)
                logits[index] = self.runner(batch["input_ids"], batch["attention_mask"],
                                            batch.get("token_type_ids")).reshape(-1)
        return torch.sigmoid(logits)

    def export_onnx(self, path: PathLike, *, int8: bool = False) -> Path:
        """Export the cross-encoder (encoder, pooling and head, reading token types) as one
        ONNX graph into the artifact at `path`; load it with `funcformer.load(path,
        runtime="onnx")`, which gives the same scores and rankings."""
        need_torch(self.runner, "export_onnx")
        types = "token_type_ids" in getattr(self.backbone.tokenizer, "model_input_names", [])
        return export_graph(self.digest, self.backbone, self.model, path, int8, types)

    def rank(self, query: str, items: Sequence[str], top_k: int | None = None) -> list[Ranked]:
        """`items` by score for `query`, best first (ties keep input order); `top_k` keeps
        that many."""
        if top_k is not None and (not is_whole(top_k) or top_k < 1):  # -1 dropped the last
            raise TaskError(f"top_k must be a whole number of at least 1 (or None: all), got "
                            f"{top_k!r}.")
        if not isinstance(items, (str, Iterable)):  # None was a TypeError
            raise DataError(f"rank takes items to score for the query (a list of texts), got "
                            f"{type(items).__name__}.")
        items = [items] if isinstance(items, str) else list(items)
        if not items:
            return []
        scores = self.scores(read_pairs([(query, item) for item in items], self.columns,
                                        gold=False)).tolist()
        order = sorted(range(len(items)), key=lambda i: -scores[i])
        return [Ranked(item=items[i], score=scores[i], index=i) for i in order[:top_k]]

    def explain(self, text: tuple[str, str], *, target: str | None = None, method: str = "auto",
                steps: int = 32) -> _explain.Explanation:
        """Word attributions (both texts) for a pair's score: see `funcformer.explain`."""
        return _explain.explain(self, text, target=target, method=method, steps=steps)

    def rescale(self, score: float) -> float:
        """A [0, 1] score on the training data's scale (e.g. 0-5 for STS-B)."""
        if not is_real(score) or not 0 <= score <= 1:  # NaN or 7 mapped to nonsense
            raise TaskError(f"rescale takes a score (a number from 0 to 1), got {score!r}.")
        return self.scale.low + score * (self.scale.high - self.scale.low)

    def result_from_dict(self, data: dict[str, Any]) -> PairScore:
        return PairScore(**data)

    def evaluate(self, data: Any, *, text_column: str = "text", label_column: str | None = None,
                 text_a_column: str | None = None, text_b_column: str | None = None,
                 score_column: str | None = None) -> dict[str, Any]:
        """Graded: {spearman, pearson, examples}; binary: {accuracy, roc_auc, examples}.
        Fields are named as in training unless given here."""
        given = {"text_a": text_a_column, "text_b": text_b_column, "score": score_column,
                 "label": label_column}
        columns = replace(self.columns, **{k: v for k, v in given.items() if v})
        pairs = read_pairs(data, columns)
        return metrics(self.scores(pairs), self.scale.targets(pairs), self.scale.graded)

    def save(self, path: PathLike) -> Path:
        """Write funcformer.json + head.safetensors (+ encoder/ for `full`, adapter/ for
        `lora`) atomically."""
        need_torch(self.runner, "save")
        return save_with_head(path, self.model.head, self.manifest, self.model.encoder,
                              self.backbone)


def train(data: Any, *, eval_data: Any = None, backbone: Any = None, method: Any = None,
          config: TrainConfig | None = None, progress: bool = True, cache: Any = None,
          device: str = "cpu", text_column: str = "text", label_column: str = "label",
          init: Any = None, **options: Any) -> PairFunction:
    """Train a cross-encoder on scored or labelled pairs.

    A score field makes the pairs graded (even 0/1 scores: early stopping on Spearman); a label
    field makes them binary (early stopping on ROC-AUC). Options: `text_a_column`,
    `text_b_column`, `score_column` name the fields; `positive` names the positive label (else
    the later in sorted order). `cache` is not used: pair features depend on both texts.
    Without `eval_data`, `eval_fraction` of the pairs is held out at random for early stopping.

    >>> fn = funcformer.train("pair", [("a cat", "a kitten", 4.2), ("a cat", "a car", 0.4)],
    ...                       epochs=1)                                     # doctest: +SKIP
    """
    method, options = method_option(method, options)
    asked = task_method("pair", method, config, METHODS, options)
    if init is not None:
        raise TaskError("pair has no informed start (init=); train it from the backbone.")
    columns = Columns(options.pop("text_a_column", None) or "text_a",
                      options.pop("text_b_column", None) or "text_b",
                      options.pop("score_column", None) or "score", label_column or "label")
    positive = options.pop("positive", None)
    pairs = read_pairs(data, columns)
    chosen, reason = choose_tuning(asked, "full", len(pairs.a), device)
    if config is None and chosen == "full" and options.get("learning_rate") is None:
        options["learning_rate"] = FULL_LEARNING_RATE
    config = make_config(replace(config, method=chosen) if config else None, chosen, options)
    scale = Scale.fit(pairs, positive)
    targets = scale.targets(pairs)
    if eval_data is not None:
        held, source = read_pairs(eval_data, columns), "given"
        scale.targets(held)  # fail early on bad eval data, before any training
    else:
        pairs, targets, held = holdout(pairs, targets, config.eval_share, config.seed)
        source = f"held out {len(held.a)}" if held is not None else "none"
    shared = _backbone.load(backbone, device=device)
    if reason is not None:
        say(f"method auto -> {chosen}: {reason}", progress)
    started = time.perf_counter()
    fitted = fit(shared, pairs, targets, held, scale, config, progress)
    report = {"examples": len(pairs.a), "truncated": fitted.truncated,
              "seconds": round(time.perf_counter() - started, 2), "eval_source": source,
              "history": fitted.history.to_dict()}
    if reason is not None:
        report["method_reason"] = f"auto: {reason}"
    options = {**scale.to_options(), "pooling": asdict(fitted.model.pooling),
               "columns": asdict(columns)}
    manifest = _manifest(shared, fitted.model, scale, options, config, report)
    if fitted.metrics is not None:
        prefix = "" if eval_data is not None else "held_out_"
        manifest.metrics = {prefix + k: v for k, v in fitted.metrics.items()}
    return PairFunction(backbone=shared, model=fitted.model, manifest=manifest)

def _evaluated(history: History) -> int:
    """How many epochs of this run were evaluated (epoch 0 is a baseline, not counted)."""
    return sum(1 for e in history.epochs if "eval" in e and e["epoch"] > 0)


@dataclass
class Fitted:
    model: CrossEncoder
    history: History
    truncated: int
    metrics: dict[str, Any] | None
    """Eval metrics of the epoch kept; None without eval data."""


def fit(shared: Backbone, pairs: Pairs, targets: torch.Tensor, held: Pairs | None, scale: Scale,
        config: TrainConfig, progress: bool) -> Fitted:
    """`full`: fine-tune a private copy of the encoder with the head; `lora`: an adapter on a
    view of the shared encoder with the head. `head`: frozen encoder; pooled pair features are
    computed once and only the linear layer trains."""
    torch.manual_seed(config.seed)
    pooling = shared.pooling if POOLING == "backbone" else Pooling(mode="cls")
    head = LinearHead(shared.hidden_size, 1, config.dropout)
    encoder = shared.model
    if config.method != "head":
        encoder = trainable_encoder(shared.model, config)
    model = CrossEncoder(encoder, head, pooling).to(shared.device)
    encoded = encode(shared, pairs.a, pairs.b, config.max_length)
    seen: list[dict[str, Any]] = []  # eval metrics of each epoch, in order
    judge = None
    if held is not None:
        gold, held_encoded = scale.targets(held), encode(shared, held.a, held.b, config.max_length)

        def judge(logits: torch.Tensor) -> float:
            seen.append(metrics(torch.sigmoid(logits), gold, scale.graded))
            return early_stopping_metric(seen[-1])

    make = _head_plan if config.method == "head" else _full_plan
    plan = make(shared, model, encoded, targets, held_encoded if held else None, judge, config)
    kind = "spearman" if scale.graded else "ROC-AUC"
    plan.metric_name = kind  # the eval data by its parsed values, not its file's raw rows
    plan.eval_key = None if held is None else content_digest((held.a, held.b, held.scores,
                                                              held.labels))
    history = run(plan, config, progress=progress, description=f"pair {config.method}")
    if plan.evaluate is not None and len(seen) != _evaluated(history):
        plan.evaluate(plan.model)  # resumed: earlier epochs were evaluated by the killed run
        best = seen[-1]  # the kept (best) weights, evaluated now
    else:
        best = seen[history.best_epoch - 1] if seen else None
    return Fitted(model.to(shared.device).eval(), history, encoded.truncated, best)


Judge = Callable[[torch.Tensor], float] | None


def _full_plan(shared: Backbone, model: CrossEncoder, encoded: Encoded, targets: torch.Tensor,
               held: Encoded | None, judge: Judge, config: TrainConfig) -> Plan:
    lengths = [len(ids) for ids in encoded.ids]
    size = int(config.batch_size or 16)

    def batches(epoch: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        return [(pad(shared, encoded, idx), targets[idx].to(shared.device))
                for idx in length_grouped_batches(lengths, size, config.seed + epoch)]

    def evaluate(m: torch.nn.Module) -> float:
        return judge(apply(shared, m, held, 1, m.head)[:, 0])

    return Plan(model=model, batches=batches, forward=lambda m, batch: m(**batch), loss=loss,
                evaluate=evaluate if judge else None, head=model.head)


def _head_plan(shared: Backbone, model: CrossEncoder, encoded: Encoded, targets: torch.Tensor,
               held: Encoded | None, judge: Judge, config: TrainConfig) -> Plan:
    hidden = shared.hidden_size
    features = apply(shared, model, encoded, hidden, lambda f: f)  # (N, H), once
    held_features = apply(shared, model, held, hidden, lambda f: f) if held else None
    size = int(config.batch_size or 32)

    def batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(features[idx], targets[idx])
                for idx in shuffled_batches(len(targets), size, config.seed + epoch)]

    def evaluate(m: torch.nn.Module) -> float:
        with torch.inference_mode():
            return judge(m(held_features).squeeze(-1))

    return Plan(model=model.head.cpu(), batches=batches, forward=lambda m, x: m(x).squeeze(-1),
                loss=loss, evaluate=evaluate if judge else None)


def _manifest(shared: Backbone, model: CrossEncoder, scale: Scale, options: dict[str, Any],
              config: TrainConfig, report: dict[str, Any]) -> Manifest:
    encoder = model.encoder if config.method != "head" else None
    adapter = encoder is not None and _lora.is_view(encoder)
    included = encoder is not None and not adapter
    ref = BackboneRef(name=shared.name, digest=shared.digest, included=included,
                      base_digest=shared.digest if included else None)
    return Manifest(
        task="pair", labels=list(scale.labels or []), method=config.method, backbone=ref,
        head=HeadSpec(hidden=shared.hidden_size, outputs=1), options=options,
        adapter=_lora.describe(encoder) if adapter else None,
        digest=state_digest(options, shared.digest, model.head.state_dict(),
                            encoder_state(encoder) or {}),
        config=config.to_dict(), training=report, library_version=__version__,
        created_at=now())


def from_graph(directory: Path, manifest: Manifest, runner: Any,
               tokenizer: Backbone) -> PairFunction:
    """A pair function scoring with its ONNX export (`load(..., runtime="onnx")`)."""
    if "kind" not in manifest.options:
        raise ArtifactError(f"{directory}: the manifest lacks the pair options. The artifact "
                            "is damaged; save it again.")
    return PairFunction(backbone=tokenizer, model=None, manifest=manifest, runner=runner)


def load(directory: Path, manifest: Manifest, *, backbone: Any = None, device: str = "cpu",
         dtype: str | None = None, merge_adapter: bool = False) -> PairFunction:
    """Rebuild a saved pair function; a `head` or `lora` artifact finds its backbone by name or
    `backbone=` (and attaches its adapter to it)."""
    if manifest.head is None or "kind" not in manifest.options:
        raise ArtifactError(f"{directory}: the manifest lacks the pair head or its options. "
                            "The artifact is damaged; save it again.")
    shared = load_backbone(directory, manifest, backbone, device, dtype)
    head = load_head(directory, manifest, HeadChoice(), frozenset(), shared.hidden_size)
    try:
        pooling = Pooling(**manifest.options.get("pooling", {}))
    except TypeError as err:  # options edited by hand
        raise ArtifactError(f"{directory / MANIFEST}: field 'options.pooling' cannot be used "
                            f"({str(err)[:160]}). {DAMAGED_FIX}") from None
    encoder = load_adapter(directory, manifest, shared, merge_adapter)
    head = head.to(dtype=next(shared.model.parameters()).dtype)
    model = CrossEncoder(encoder if encoder is not None else shared.model, head, pooling)
    return PairFunction(backbone=shared, model=model, manifest=manifest)

