"""The `embed` task: sentence embeddings, trainable from pairs.

    fn = funcformer.train("embed", "pairs.csv")     # text_a, text_b[, score]
    fn.encode(["a cat", "a dog"])                   # (2, H) float32, L2-normalised
    fn("a cat").vector                              # one Embedding

Without scores the encoder learns with in-batch negatives (each text_a against every text_b in
its batch, its own pair the positive; Multiple Negatives Ranking). With scores it learns cosine
regression: cos(a, b) is fit to the score scaled to [0, 1]. `full` tunes a private copy of the
encoder; `lora` an adapter on the shared backbone (the artifact holds only adapter/).
`tune_encoder` is shared with the `search` task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _backbone, _lora
from .._artifact import BackboneRef, Manifest, atomic_directory, write_manifest
from .._config import TrainConfig
from .._data import Records, number_field, read_records
from .._errors import DataError, TaskError
from .._function import (
    Function,
    PathLike,
    encoder_state,
    export_graph,
    load_adapter,
    load_backbone,
    make_config,
    method_option,
    need_torch,
    now,
    pooled,
    say,
    state_digest,
    write_adapter,
    write_encoder,
)
from .._methods import choose_tuning, task_method, trainable_encoder
from .._model import FunctionModel
from .._train import History, Plan, content_digest, run, shuffled_batches
from .._version import __version__

METHODS = ("full", "lora")
SCALE = 20.0
"""In-batch negatives: cosine similarities times this are the logits (temperature 0.05)."""
DEFAULT_LEARNING_RATE = 2e-5


@dataclass(frozen=True)
class Embedding:
    """One text's embedding (a list of floats; `array` gives it as float32 numpy)."""

    vector: list[float]

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"vector": self.vector}


class Embedder(Function):
    """An `embed` function: texts -> L2-normalised float32 vectors with the backbone's pooling.

    >>> fn = funcformer.train("embed", pairs)          # doctest: +SKIP
    >>> fn.encode(["A cat sat.", "A dog ran."]).shape  # doctest: +SKIP
    (2, 384)
    """

    def __init__(self, *, backbone: _backbone.Backbone, manifest: Manifest,
                 encoder: torch.nn.Module | None = None, runner: Any = None) -> None:
        super().__init__(manifest=manifest)
        if runner is not None:  # the graph embeds in the backbone's place; its features are
            # this function's, so they are cached under its digest
            backbone = replace(backbone, graph=runner, digest=manifest.digest)
        self.backbone = backbone
        self.encoder = encoder
        """A fine-tuned encoder not yet saved; None runs `backbone.model`."""
        self.runner = runner
        """An ONNX Runtime session computing pooled vectors from token ids; None runs torch."""

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return "torch" if self.runner is None else "onnx"

    @property
    def normalize(self) -> bool:
        return bool(self.manifest.options.get("normalize", True))

    def encode(self, texts: str | Sequence[str], *, cache: Any = None) -> np.ndarray:
        """One text -> (H,), a list -> (N, H), float32, in input order."""
        single = isinstance(texts, str)
        if not single and (not isinstance(texts, Iterable)  # None was a TypeError
                           or isinstance(texts, (bytes, bytearray))):  # bytes: split into ints
            raise DataError(f"Got {type(texts).__name__}: encode takes a text or a list of "
                            "them. Fix: e.g. fn.encode('a text') or fn.encode(['a', 'b']) "
                            "(decode bytes first).")
        checked = self.read_inputs([texts] if single else list(texts))
        vectors, _ = self.backbone.embed(checked, encoder=self.encoder,
                                         max_length=self.manifest.config.get("max_length"),
                                         cache=cache if self.encoder is None else None)
        if self.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12,
                                        None)
        return vectors[0] if single else vectors

    def export_onnx(self, path: PathLike, *, int8: bool = False) -> Path:
        """Export encoder and pooling as one ONNX graph into the artifact at `path`
        (`onnx/model.onnx`, or `model-int8.onnx` with int8 weights); load it with
        `funcformer.load(path, runtime="onnx")`. The vectors are normalised after the graph,
        as on torch."""
        need_torch(self.runner, "export_onnx")
        return export_graph(self.digest, self.backbone,
                            pooled(self.backbone, self.encoder, torch.nn.Identity()), path,
                            int8)

    def predict(self, inputs: Sequence[str]) -> list[Embedding]:
        return [Embedding(vector=row.tolist()) for row in self.encode(list(inputs))]

    def result_from_dict(self, data: dict[str, Any]) -> Embedding:
        return Embedding(**data)

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> Any:
        """Cosine similarity: two texts -> float; a text and a list -> (M,); lists -> (N, M)."""
        left, right = np.atleast_2d(self.encode(a)), np.atleast_2d(self.encode(b))
        left = left / np.linalg.norm(left, axis=1, keepdims=True)
        right = right / np.linalg.norm(right, axis=1, keepdims=True)
        scores = left @ right.T
        if isinstance(a, str) and isinstance(b, str):
            return float(scores[0, 0])
        if isinstance(a, str):
            return scores[0]
        return scores[:, 0] if isinstance(b, str) else scores

    def evaluate(self, data: Any, **columns: Any) -> dict[str, Any]:
        """Scored pairs: Spearman and Pearson (x100) of cosine vs score. Unscored pairs:
        retrieval of each text_b among all text_b by its text_a (accuracy@1, MRR@10)."""
        pairs = read_pairs(data, **columns)
        a, b = self.encode(pairs.a), self.encode(pairs.b)
        if pairs.scores is not None:
            return correlation(np.sum(a * b, axis=1), pairs.scores) | {"examples": len(pairs)}
        return retrieval_metrics(a @ b.T, _gold_columns(pairs.b)) | {"examples": len(pairs)}

    def save(self, path: PathLike) -> Path:
        need_torch(self.runner, "save")
        target = Path(path)
        with atomic_directory(target) as temp:
            manifest = self.manifest
            if manifest.backbone.included:
                manifest = write_encoder(temp, self.encoder, self.backbone, manifest)
            write_adapter(temp, self.encoder, manifest)
            write_manifest(temp, manifest)
        return target


@dataclass
class Pairs:
    """Validated (text_a, text_b[, score]) rows; `scores` is None for unscored pairs."""

    a: list[str]
    b: list[str]
    scores: list[float] | None
    records: Records

    def __len__(self) -> int:
        return len(self.a)


def read_pairs(data: Any, *, text_a_column: str = "text_a", text_b_column: str = "text_b",
               score_column: str = "score", **_: Any) -> Pairs:
    """Pairs from a file, list of tuples/dicts or DataFrame; scores all present or all absent."""
    records = read_records(data, texts=[text_a_column, text_b_column], optional=[score_column],
                           what="pairs", fields=["text_a", "text_b"])
    raw = records.column(score_column)
    scores: list[float] | None = None
    if any(v not in (None, "") for v in raw):
        scores = []
        for i, value in enumerate(raw):
            if value in (None, ""):
                raise DataError(f"{records.where(i)}, field '{score_column}': missing while "
                                "other rows have a score. Fix: score every pair, or none.")
            scores.append(number_field(value, records.where(i), score_column,
                                       "write the similarity as a number, e.g. 3.5."))
    return Pairs(a=records.column(text_a_column), b=records.column(text_b_column),
                 scores=scores, records=records)


def correlation(predicted: np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation x100 (the STS convention)."""
    from scipy.stats import pearsonr, spearmanr

    if len(set(gold)) < 2:
        return {"spearman": 0.0, "pearson": 0.0}
    return {"spearman": float(spearmanr(predicted, gold).statistic * 100),
            "pearson": float(pearsonr(predicted, gold).statistic * 100)}


def retrieval_metrics(scores: np.ndarray, gold: Sequence[set[int]],
                      k: int = 10) -> dict[str, float]:
    """accuracy@1 and MRR@k for a (queries, documents) score matrix and each query's relevant
    document columns."""
    order = np.argsort(-scores, axis=1)[:, :k]
    top1 = mrr = 0.0
    for row, relevant in zip(order, gold, strict=True):
        ranks = [r for r, doc in enumerate(row) if int(doc) in relevant]
        top1 += bool(ranks) and ranks[0] == 0
        mrr += 1.0 / (ranks[0] + 1) if ranks else 0.0
    n = max(len(gold), 1)
    return {"accuracy_at_1": top1 / n, "mrr_at_10": mrr / n}


def _gold_columns(texts: Sequence[str]) -> list[set[int]]:
    """Each row's relevant columns: every column holding the same text (duplicates count)."""
    where: dict[str, set[int]] = {}
    for i, text in enumerate(texts):
        where.setdefault(text, set()).add(i)
    return [where[t] for t in texts]


def tune_encoder(backbone: _backbone.Backbone, a: Sequence[str], b: Sequence[str],
                 scores: Sequence[float] | None, config: TrainConfig,
                 evaluate: Callable[[torch.nn.Module], float] | None,
                 progress: bool = True, metric_name: str = "spearman",
                 eval_key: str | None = None) -> tuple[torch.nn.Module, History, int]:
    """Fine-tune the backbone's encoder on pairs with the shared loop: a private copy
(`full`), or a LoRA adapter on a view sharing the backbone's weights (`lora`).

    `scores` (already in [0, 1]) selects cosine regression; None selects in-batch negatives,
    where a batch's other text_b are the negatives (a duplicate of the positive is masked, so
    it is never a false negative). `evaluate(encoder)` scores the encoder for early stopping;
    `eval_key` (`content_digest` of its data) goes into checkpoints.
    Returns the encoder (eval mode), the history, and how many texts were truncated.
    """
    torch.manual_seed(config.seed)
    encoder = trainable_encoder(backbone.model, config)
    model = FunctionModel(encoder, torch.nn.Identity(), backbone.pooling)
    texts = list(dict.fromkeys([*a, *b]))
    encoded = backbone.tokenize(texts, config.max_length)
    ids = dict(zip(texts, encoded.input_ids, strict=True))
    batch_size = int(config.batch_size or 16)
    targets = (torch.tensor(list(scores), dtype=torch.float32) if scores is not None else None)

    def batches(epoch: int) -> list[tuple[dict[str, Any], torch.Tensor]]:
        out = []
        for index in shuffled_batches(len(a), batch_size, config.seed + epoch):
            if targets is None and len(index) < 2:
                continue  # one pair has no in-batch negative
            left = backbone.pad([ids[a[i]] for i in index])
            right = backbone.pad([ids[b[i]] for i in index])
            same = torch.tensor([[b[i] == b[j] and i != j for j in index] for i in index])
            target = (targets[index] if targets is not None
                      else torch.arange(len(index)))
            out.append(({"a": left, "b": right, "same": same.to(backbone.device)},
                        target.to(backbone.device)))
        return out

    def forward(m: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        left = torch.nn.functional.normalize(m.features(**batch["a"]), dim=-1)
        right = torch.nn.functional.normalize(m.features(**batch["b"]), dim=-1)
        if targets is not None:
            return (left * right).sum(dim=-1)  # (B,) cosine
        return (SCALE * left @ right.T).masked_fill(batch["same"], float("-inf"))  # (B, B)

    def loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if targets is not None:
            return torch.nn.functional.mse_loss(outputs, target)
        return torch.nn.functional.cross_entropy(outputs, target)

    plan = Plan(model=model, batches=batches, forward=forward, loss=loss,
                evaluate=(lambda m: evaluate(m.encoder)) if evaluate else None, baseline=True,
                metric_name=metric_name, eval_key=eval_key)
    if not plan.batches(0):
        raise DataError(f"In-batch negatives need at least two pairs per batch; there are "
                        f"{len(a)} pair(s) in batches of {batch_size}. Fix: give more pairs, or "
                        "a batch_size of 2 or more (embed: or score every pair, for cosine "
                        "regression).")
    history = run(plan, config, progress=progress, description="tune encoder")
    encoder.eval()
    return encoder, history, encoded.truncated


def scale_scores(scores: Sequence[float]) -> tuple[list[float], tuple[float, float]]:
    """Scores mapped to [0, 1] by the training data's range; returns the range too."""
    low, high = min(scores), max(scores)
    if high == low:
        raise DataError("Every pair has the same score, so there is nothing to learn. Fix: "
                        "give pairs with different scores, or no scores at all.")
    return [(s - low) / (high - low) for s in scores], (low, high)


def train(data: Any, *, eval_data: Any = None, backbone: Any = None, method: Any = None,
          config: TrainConfig | None = None, progress: bool = True, device: str = "cpu",
          init: Any = None, text_column: str = "text", label_column: str = "label",
          cache: Any = None, **options: Any) -> Embedder:
    """Fine-tune an embedding model on pairs (`full` or `lora`); see the module docstring."""
    method, options = method_option(method, options)
    asked = task_method("embed", method, config, METHODS, options)
    if init is not None:
        raise TaskError("embed has no informed start (init=); train it from pairs.")
    columns = {k: options.pop(k) for k in ("text_a_column", "text_b_column", "score_column")
               if k in options}
    normalize = options.pop("normalize", True)
    if not isinstance(normalize, bool):  # "maybe" was truthy: normalised without a word
        raise TaskError(f"normalize must be true or false, got {normalize!r:.60}.")
    pairs = read_pairs(data, **columns)
    held = read_pairs(eval_data, **columns) if eval_data is not None else None
    chosen, reason = choose_tuning(asked, "full", len(pairs), device)
    if chosen == "full" and (config is None or config.learning_rate is None):
        options.setdefault("learning_rate", DEFAULT_LEARNING_RATE)
    config = make_config(replace(config, method=chosen) if config else None, chosen, options)
    scores, score_range = (scale_scores(pairs.scores) if pairs.scores is not None
                           else (None, None))
    shared = _backbone.load(backbone, device=device)
    if reason is not None:
        say(f"method auto -> {chosen}: {reason}", progress)
    started = time.perf_counter()
    fn = from_backbone(shared, normalize=normalize)

    def evaluate(encoder: torch.nn.Module) -> float:
        fn.encoder = encoder
        metrics = fn.evaluate(held.records, **columns)
        return metrics.get("spearman", metrics.get("mrr_at_10", 0.0))

    encoder, history, truncated = tune_encoder(
        shared, pairs.a, pairs.b, scores, config, evaluate if held is not None else None,
        progress, metric_name="spearman" if held and held.scores is not None else "mrr@10",
        eval_key=None if held is None else content_digest((held.a, held.b, held.scores)))
    options_out = {"normalize": normalize, "score_range": score_range,
                   "loss": "cosine" if scores is not None else "in_batch_negatives"}
    report = {"examples": len(pairs), "truncated": truncated,
              "seconds": round(time.perf_counter() - started, 2),
              "eval_source": "given" if held is not None else "none",
              "history": history.to_dict()}
    if reason is not None:
        report["method_reason"] = f"auto: {reason}"
    manifest = tuned_manifest(shared, encoder, options_out, config, report)
    fn = Embedder(backbone=shared, manifest=manifest, encoder=encoder)
    if held is not None:
        fn.manifest.metrics = fn.evaluate(held.records, **columns)
    return fn


def tuned_manifest(shared: _backbone.Backbone, encoder: torch.nn.Module, options: dict[str, Any],
                   config: TrainConfig, training: dict[str, Any] | None = None) -> Manifest:
    """An `embed` manifest for a tuned encoder: `full` includes it (encoder/), `lora`
    references the backbone and records the adapter."""
    adapter = _lora.is_view(encoder)
    ref = BackboneRef(name=shared.name, digest=shared.digest, included=not adapter,
                      base_digest=None if adapter else shared.digest)
    return Manifest(
        task="embed", method=config.method, options=options, config=config.to_dict(),
        training=training or {}, backbone=ref, adapter=_lora.describe(encoder) if adapter else None,
        digest=state_digest(options, shared.digest, encoder_state(encoder) or {}),
        library_version=__version__, created_at=now())


def from_backbone(backbone: Any = None, *, normalize: bool = True,
                  device: str = "cpu") -> Embedder:
    """An untrained `embed` function on a backbone (a Backbone, a path or a name)."""
    shared = (backbone if isinstance(backbone, _backbone.Backbone)
              else _backbone.load(backbone, device=device))
    options = {"normalize": normalize}
    manifest = Manifest(task="embed", method="none", options=options,
                        backbone=BackboneRef(name=shared.name, digest=shared.digest),
                        digest=state_digest(options, shared.digest),
                        library_version=__version__, created_at=now())
    return Embedder(backbone=shared, manifest=manifest)


def from_graph(directory: Path, manifest: Manifest, runner: Any,
               tokenizer: _backbone.Backbone) -> Embedder:
    """An embedder running its ONNX export (`load(..., runtime="onnx")`)."""
    return Embedder(backbone=tokenizer, manifest=manifest, runner=runner)


def load(directory: Path, manifest: Manifest, *, backbone: Any = None, device: str = "cpu",
         dtype: str | None = None, merge_adapter: bool = False) -> Embedder:
    """Rebuild a saved embedder: its encoder included, or the backbone with its adapter."""
    shared = load_backbone(directory, manifest, backbone, device, dtype)
    return Embedder(backbone=shared, manifest=manifest,
                    encoder=load_adapter(directory, manifest, shared, merge_adapter))
