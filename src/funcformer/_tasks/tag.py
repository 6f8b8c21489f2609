"""The `tag` task: token classification (named entities) with character offsets.

Data is IOB2 tokens + tags (`{"tokens": [...], "tags": [...]}`, or `ner_tags`) or text +
character spans (`{"text": "...", "spans": [{"start": 0, "end": 5, "label": "PER"}]}`, a span
may also be `[start, end, label]`), detected per row (reading and alignment: `_spans`).

The model is the encoder and a linear layer per token (dropout first). `full` tunes a private
copy of the encoder with the layer, `lora` a LoRA adapter on the shared backbone with it (the
artifact holds adapter/ and the layer), `head` only the layer. Texts are cut into
windows of the token limit that overlap by a quarter of it (the fast tokenizer's overflow with
stride), so no part of a long text goes unseen, in training or prediction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _backbone, _explain, _lora
from .._artifact import (
    BackboneRef,
    HeadSpec,
    Manifest,
)
from .._config import TrainConfig
from .._data import read_texts
from .._errors import ArtifactError, DataError, TaskError
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
from .._train import Plan, content_digest, length_grouped_batches, run
from .._version import __version__
from ._spans import (
    ALIGNMENTS,
    IGNORE,
    Coder,
    Encoded,
    Found,
    Tagged,
    Window,
    chunks,
    entity_metrics,
    read_tagged,
    tag_list,
    word_spans,
)

METHODS = ("full", "lora", "head")
DEFAULTS = {"full": {"learning_rate": 1e-4}, "head": {"epochs": 10}}
"""Where tag's defaults differ from TrainConfig's. `full`: on CoNLL-2003 (2,000 sentences, 2
epochs, MiniLM-L6) 1e-4 reached 0.746 dev F1 against 0.679 at 5e-5. `head`: unlike classify's
cached pooled features, per-token states are computed again every epoch, so 30 epochs would
cost 30 encoder passes."""

__all__ = ["Entities", "Span", "Tagger", "chunks", "entity_metrics", "load", "read_tagged",
           "tag_list", "train"]


@dataclass(frozen=True)
class Span:
    """One entity: `text == original[start:end]`; score is its words' mean tag probability.

    >>> Span(text="Paris", label="LOC", start=22, end=27, score=0.97).label
    'LOC'
    """

    text: str
    label: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Entities:
    """The entities found in one text, in text order; iterate over it or take `len()`.

    >>> fn("Angela Merkel visited Paris.").spans[0].text   # doctest: +SKIP
    'Angela Merkel'
    """

    spans: list[Span]

    def __iter__(self) -> Iterator[Span]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index: int) -> Span:
        return self.spans[index]

    def to_dict(self) -> dict[str, Any]:
        return {"spans": [span.to_dict() for span in self.spans]}


# ------------------------------------------------------------------------- model


class TokenModel(torch.nn.Module):
    """Encoder, then dropout + a linear layer per token: ids (B, T) -> logits (B, T, C)."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = last_hidden_state(self.encoder, input_ids=input_ids,
                                   attention_mask=attention_mask)
        return self.head(states.float())  # (B, T, H) -> (B, T, C)


class GraphModel:
    """A tagger's ONNX export in TokenModel's place: ids (B, T) -> logits (B, T, C). It has no
    encoder, so explanations fall back to occlusion."""

    encoder = None

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.runner(input_ids, attention_mask)


def probabilities(model: Any, backbone: _backbone.Backbone,
                  windows: Sequence[Window], budget: int | None = None) -> list[np.ndarray]:
    """Tag probabilities (T, C) per window: length-sorted, token-budget batches (2,048 tokens
    and 64 windows on a CPU, 16,384 tokens on a GPU, as `Backbone.embed`)."""
    rows = [w.ids for w in windows]
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    device = backbone.device
    budget = _backbone.default_budget(device, 2048) if budget is None else budget
    batches = _backbone.token_batches(rows, budget, _backbone.rows_per_batch(device, budget))
    # the backbone's lock, as its other users hold it: explain puts hooks on the shared
    # embedding layer while it runs (a call meanwhile got its inputs, and explain failed)
    with backbone._lock, torch.inference_mode():
        results = ((index, model(**backbone.pad([rows[i] for i in index]))) for index in batches)
        for index, logits in _backbone.gather(results, defer=_backbone.off_cpu(device)):
            probs = softmax(logits)  # (B, T, C)
            for j, i in enumerate(index):
                out[i] = probs[j, : len(rows[i])]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in NumPy: torch's softmax opens an OpenMP parallel region
    even for one sentence's (1, T, C), and beside ONNX Runtime's spinning threads on 2 cores
    that region took 3.6 ms a call (tripling an ONNX tagger's latency under OpenMP's default
    wait policy).

    >>> softmax(np.array([[0.0, np.log(3.0)]])).round(3).tolist()
    [[0.25, 0.75]]
    """
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the tokens that carry a target (zero if none do)."""
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                              ignore_index=IGNORE, reduction="sum")
    return total / (targets != IGNORE).sum().clamp(min=1)


class Tagger(Function):
    """A `tag` function: text -> `Entities` (spans with character offsets into the text).

    >>> fn = funcformer.train("tag", "ner.jsonl")                   # doctest: +SKIP
    >>> [(s.text, s.label) for s in fn("Angela Merkel visited Paris.")]   # doctest: +SKIP
    [('Angela Merkel', 'PER'), ('Paris', 'LOC')]
    """

    def __init__(self, *, backbone: _backbone.Backbone, head: torch.nn.Module | None,
                 manifest: Manifest, encoder: torch.nn.Module | None = None,
                 runner: Any = None) -> None:
        super().__init__(manifest=manifest)
        self.backbone = backbone
        self.head = head.eval() if head is not None else None
        self.encoder = encoder
        """A fine-tuned encoder not yet saved; None runs `backbone.model`."""
        self.runner = runner
        """An ONNX Runtime session computing tag logits from token ids; None runs torch."""
        options = manifest.options
        self.coder = Coder(backbone.tokenizer, options["tags"], options["max_length"],
                           options.get("alignment", "first"))

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return "torch" if self.runner is None else "onnx"

    @property
    def model(self) -> Any:
        """The TokenModel, or on the ONNX runtime its graph (`GraphModel`)."""
        if self.runner is not None:
            return GraphModel(self.runner)
        assert self.head is not None  # only a graph-run tagger has none
        return TokenModel(self.encoder if self.encoder is not None else self.backbone.model,
                          self.head)

    def predict(self, texts: Sequence[str]) -> list[Entities]:  # type: ignore[override]
        """Entities of each text, in input order."""
        checked = read_texts(list(texts)).texts
        return [Entities([Span(text=text[start:end], label=label, start=start, end=end,
                               score=score) for start, end, label, score in found])
                for text, found in zip(checked, self.found(checked), strict=True)]

    def found(self, texts: Sequence[str]) -> list[list[Found]]:
        """(start, end, type, score) of each text's entities."""
        return self._decoded(self.coder.encode(texts))

    def _decoded(self, encoded: Encoded) -> list[list[Found]]:
        return self.coder.decode(encoded, probabilities(self.model, self.backbone,
                                                        encoded.windows))

    def explain(self, text: str, *, target: str | None = None, method: str = "auto",
                steps: int = 32) -> list[_explain.Explanation]:
        """Per entity found, word attributions for its tags: see `funcformer.explain`."""
        return _explain.explain(self, text, target=target, method=method, steps=steps)

    def read_inputs(self, data: Any, *, text_column: str = "text") -> list[Any]:
        """Texts from strings, text rows, or token rows (joined with spaces)."""
        return read_tagged(data, text_column=text_column, labelled=False).texts

    def result_from_dict(self, data: dict[str, Any]) -> Entities:
        return Entities([Span(**span) for span in data["spans"]])

    def evaluate(self, data: Any, *, text_column: str = "text",
                 label_column: str = "label") -> dict[str, Any]:
        """Entity-level precision, recall, F1 (micro) and per type, with the gold spans read
        as training reads them: whole words (`word_spans`)."""
        gold = check_types(read_tagged(data, text_column=text_column,
                                       label_column=label_column), self.manifest.labels)
        encoded = self.coder.encode(gold.texts)
        return entity_metrics(gold_words(encoded, gold), [[f[:3] for f in row]
                                                          for row in self._decoded(encoded)])

    def export_onnx(self, path: PathLike, *, int8: bool = False) -> Path:
        """Export the encoder and the tag head as one ONNX graph (logits per token) into the
        artifact at `path`; load it with `funcformer.load(path, runtime="onnx")`, which finds
        the same entities (the decoding runs in Python on either runtime)."""
        need_torch(self.runner, "export_onnx")
        return export_graph(self.digest, self.backbone, self.model, path, int8)

    def save(self, path: PathLike) -> Path:
        """Write funcformer.json + head.safetensors (+ encoder/ for `full`, adapter/ for
        `lora`) atomically."""
        need_torch(self.runner, "save")
        assert self.head is not None
        return save_with_head(path, self.head, self.manifest, self.model.encoder, self.backbone)


# -------------------------------------------------------------------- train / load


@dataclass
class _Fitted:
    encoder: torch.nn.Module | None
    head: torch.nn.Module
    history: Any
    metrics: dict[str, Any] | None
    windows: int


def train(data: Any, *, eval_data: Any = None, backbone: PathLike | None = None,
          method: Any = None, config: TrainConfig | None = None,
          progress: bool = True, cache: Any = None, device: str = "cpu",
          text_column: str = "text", label_column: str = "label", init: Any = None,
          **options: Any) -> Tagger:
    """Train a tagger. `alignment` says which sub-tokens train: "all" (default; B- on a
    word's first sub-token, I- on the rest) or "first" (only the first; the rest are ignored).
    On CoNLL-2003 (2,000 sentences, 2 epochs) "all" measured 0.746 dev F1 against 0.741.

    `cache` is not used: per-token states are not cached. `options` override TrainConfig.

    >>> fn = funcformer.train("tag", "conll.jsonl", epochs=2)     # doctest: +SKIP
    """
    method, options = method_option(method, options)
    asked = task_method("tag", method, config, METHODS, options)
    alignment = options.pop("alignment", "all")
    if alignment not in ALIGNMENTS:
        raise TaskError(f"Unknown alignment '{alignment}'. Choose first or all.")
    if init is not None:
        raise TaskError("tag has no informed start (init); train it from labelled data.")
    columns = {"text_column": text_column, "label_column": label_column}
    read = read_tagged(data, **columns)
    types = read.types()
    if not types:
        raise DataError(f"{read.source}: no entities in the training data. Fix: tag some "
                        "entities (B-TYPE / I-TYPE tags, or spans).")
    chosen, reason = choose_tuning(asked, "full", len(read), device)
    if config is None:
        for name, value in DEFAULTS.get(chosen, {}).items():
            options[name] = value if options.get(name) is None else options[name]
    config = make_config(replace(config, method=chosen) if config else None, chosen, options)
    train_set, eval_set, source = _split(read, eval_data, columns, types, config)
    shared = _backbone.load(backbone, device=device)
    limit = min(config.max_length or shared.max_length, shared.max_length)
    coder = Coder(shared.tokenizer, tag_list(types), limit, alignment)
    if reason is not None:
        say(f"method auto -> {chosen}: {reason}", progress)
    started = time.perf_counter()
    fitted = _fit(coder, shared, train_set, eval_set, config, progress)
    seconds = time.perf_counter() - started
    report = {"examples": len(read), "windows": fitted.windows,
              "seconds": round(seconds, 2), "eval_source": source,
              "history": fitted.history.to_dict()}
    if reason is not None:
        report["method_reason"] = f"auto: {reason}"
    manifest = _manifest(coder, shared, fitted, config, report, types)
    if fitted.metrics is not None:
        keys = ("f1", "precision", "recall", "examples")
        manifest.metrics = {(k if source == "given" else f"held_out_{k}"): fitted.metrics[k]
                            for k in keys}
    return Tagger(backbone=shared, head=fitted.head, manifest=manifest, encoder=fitted.encoder)


def _split(train_set: Tagged, eval_data: Any, columns: dict[str, str], types: list[str],
           config: TrainConfig) -> tuple[Tagged, Tagged | None, str]:
    """Training rows, and the given eval data (its types checked), else a seeded held-out
    share of the training rows, else none; and where the eval data came from."""
    from .._methods import MIN_HELD_OUT

    if eval_data is not None:
        return train_set, check_types(read_tagged(eval_data, **columns), types), "given"
    held = round(len(train_set) * config.eval_share)
    if held < MIN_HELD_OUT:
        return train_set, None, "none"
    order = list(range(len(train_set)))
    random.Random(config.seed).shuffle(order)
    return (train_set.subset(sorted(order[held:])), train_set.subset(sorted(order[:held])),
            f"held out {held}")


def check_types(eval_set: Tagged, types: Sequence[str]) -> Tagged:
    """`eval_set`, once every entity type in it is one of `types` (the training data's)."""
    for i, row in enumerate(eval_set.spans or []):
        for _, _, label in row:
            if label not in types:
                raise DataError(f"{eval_set.where(i)}: entity type '{label}' is not in the "
                                f"training data ({', '.join(types)}). Fix: add examples of "
                                "it to the training data, or drop it here.")
    return eval_set


def _fit(coder: Coder, shared: _backbone.Backbone, train_set: Tagged, eval_set: Tagged | None,
         config: TrainConfig, progress: bool) -> _Fitted:
    assert train_set.spans is not None
    encoded = coder.encode(train_set.texts)
    targets = coder.targets(encoded, train_set.spans)
    torch.manual_seed(config.seed)
    head = LinearHead(shared.hidden_size, len(coder.tags), config.dropout).to(shared.device)
    encoder = None
    if config.method != "head":  # full: a private copy; lora: an adapter on a shared view
        encoder = trainable_encoder(shared.model, config).float()
        model: torch.nn.Module = TokenModel(encoder, head)
    else:
        model = head
    evaluate, scores = _evaluator(coder, shared, eval_set, encoder, head)
    plan = Plan(model=model, batches=_batches(shared, encoded, targets, config),
                forward=_forward(shared, frozen=encoder is None), loss=_loss,
                evaluate=evaluate, head=head if encoder is not None else None, metric_name="f1",
                eval_key=content_digest(eval_set))
    history = run(plan, config, progress=progress, description=f"tag ({config.method})")
    evaluated = sum(1 for e in history.epochs if "eval" in e and e["epoch"] > 0)
    if evaluate is not None and len(scores) != evaluated:
        evaluate(plan.model)  # resumed: earlier epochs were evaluated by the killed run
        metrics = scores[-1]  # the kept (best) weights, evaluated now
    else:
        metrics = scores[history.best_epoch - 1] if scores and history.best_epoch else None
    return _Fitted(encoder.eval() if encoder is not None else None, head.eval(), history,
                   metrics, len(encoded.windows))


def _batches(shared: _backbone.Backbone, encoded: Encoded, targets: list[list[int]],
             config: TrainConfig) -> Any:
    rows = [w.ids for w in encoded.windows]
    lengths = [len(r) for r in rows]
    size = int(config.batch_size)

    def batches(epoch: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        out = []
        for index in length_grouped_batches(lengths, size, config.seed + epoch):
            inputs = shared.pad([rows[i] for i in index])
            labels = torch.full(inputs["input_ids"].shape, IGNORE, dtype=torch.long)
            for j, i in enumerate(index):
                labels[j, : lengths[i]] = torch.tensor(targets[i])
            out.append((inputs, labels.to(shared.device)))
        return out

    return batches


def _forward(shared: _backbone.Backbone, frozen: bool) -> Any:
    if not frozen:
        return lambda model, batch: model(**batch)

    def forward(head: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():  # the shared encoder stays frozen; only the head learns
            states = last_hidden_state(shared.model, **batch).float()  # (B, T, H)
        return head(states)

    return forward


def _evaluator(coder: Coder, shared: _backbone.Backbone, eval_set: Tagged | None,
               encoder: torch.nn.Module | None, head: torch.nn.Module) -> tuple[Any, list]:
    """Entity F1 on the eval data for early stopping; each epoch's full metrics are kept."""
    if eval_set is None:
        return None, []
    encoded, scores = coder.encode(eval_set.texts), []
    gold = gold_words(encoded, eval_set)
    model = TokenModel(encoder if encoder is not None else shared.model, head)

    def evaluate(_: torch.nn.Module) -> float:
        found = coder.decode(encoded, probabilities(model, shared, encoded.windows))
        scores.append(entity_metrics(gold, [[f[:3] for f in row] for row in found]))
        return float(scores[-1]["f1"])

    return evaluate, scores


def gold_words(encoded: Encoded, tagged: Tagged) -> list[list[tuple[int, int, str]]]:
    """`tagged`'s gold spans widened to whole words (`word_spans`) of its encoded texts."""
    assert tagged.spans is not None
    return [word_spans(ranges, row) for ranges, row in zip(encoded.ranges, tagged.spans,
                                                            strict=True)]


def _manifest(coder: Coder, shared: _backbone.Backbone, fitted: _Fitted, config: TrainConfig,
              report: dict[str, Any], types: list[str]) -> Manifest:
    adapter = fitted.encoder is not None and _lora.is_view(fitted.encoder)
    included = fitted.encoder is not None and not adapter
    ref = BackboneRef(name=shared.name, digest=shared.digest, included=included,
                      base_digest=shared.digest if included else None)
    options = {"scheme": "IOB2", "tags": coder.tags, "alignment": coder.alignment,
               "max_length": coder.limit, "stride": coder.stride}
    states = [fitted.head.state_dict(), encoder_state(fitted.encoder) or {}]
    return Manifest(task="tag", labels=types, method=config.method, backbone=ref,
                    adapter=_lora.describe(fitted.encoder) if adapter else None,
                    head=HeadSpec(hidden=shared.hidden_size, outputs=len(coder.tags)),
                    options=options, digest=state_digest([types, options], shared.digest,
                                                         *states),
                    config=config.to_dict(), training=report, library_version=__version__,
                    created_at=now())


def _check_tags(directory: Path, manifest: Manifest) -> None:
    tags = manifest.options.get("tags")
    if manifest.head is None or not tags or len(tags) != manifest.head.outputs:
        raise ArtifactError(f"{directory}: the manifest's tag list does not match its head. "
                            "The artifact is damaged or was edited by hand; save it again.")


def from_graph(directory: Path, manifest: Manifest, runner: Any,
               tokenizer: _backbone.Backbone) -> Tagger:
    """A tagger running its ONNX export (`load(..., runtime="onnx")`)."""
    _check_tags(directory, manifest)
    return Tagger(backbone=tokenizer, head=None, manifest=manifest, runner=runner)


def load(directory: Path, manifest: Manifest, *, backbone: PathLike | None = None,
         device: str = "cpu", dtype: str | None = None, merge_adapter: bool = False) -> Tagger:
    """Rebuild a saved tagger: its encoder (included, or referenced with its adapter) and its
    head."""
    _check_tags(directory, manifest)
    assert manifest.head is not None
    shared = load_backbone(directory, manifest, backbone, device, dtype)
    head = load_head(directory, manifest, HeadChoice(), frozenset(), shared.hidden_size)
    return Tagger(backbone=shared, head=head.to(device), manifest=manifest,
                  encoder=load_adapter(directory, manifest, shared, merge_adapter))
