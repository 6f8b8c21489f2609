"""One-shot helpers on a backbone's sentence embeddings: embed, similarity, zero-shot labels.

    funcformer.embed(["a", "b"])                     # (2, 384) float32, L2-normalised
    funcformer.similarity("a cat", ["a dog", "tax"]) # (2,) cosine similarities
    funcformer.zero_shot("Stocks fell.", ["business", "sports"])  # Prediction

Label embeddings are computed once per backbone and label prompt (kept in a process-wide
cache), never once per text: the transformers zero-shot pipeline runs one pass per label.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from . import _backbone
from ._artifact import BackboneRef, Manifest
from ._cache import Cache, MemoryCache
from ._data import LONE_SURROGATE, read_examples, read_texts
from ._errors import DataError, TaskError, cosine_threshold, for_option
from ._function import Function
from ._results import Labels, Prediction
from ._version import __version__

DEFAULT_TEMPLATE = "This text is about {}."
# Cosine similarities span a narrow range; a softmax over them at temperature 0.05 turns them
# into usable probabilities (the scale CLIP-style zero-shot classifiers use, 1 / 0.05 = 20).
_SCALE = 20.0
# Multi-label zero-shot keeps each label whose prompt's cosine similarity reaches this; 0.25
# separates on-topic from off-topic texts for all-MiniLM-L6-v2 prompts in our checks, but it
# depends on the backbone: `ZeroShot.calibrate(data)` tunes it on labelled examples.
DEFAULT_THRESHOLD = 0.25
_labels_cache = MemoryCache(max_items=10_000)

Texts = str | Sequence[str]


@overload
def embed(texts: str, **options: Any) -> np.ndarray: ...
@overload
def embed(texts: Sequence[str], **options: Any) -> np.ndarray: ...


def embed(texts: Texts, *, backbone: str | os.PathLike[str] | None = None,
          normalize: bool = True, cache: Cache | None = None,
          device: str = "cpu") -> np.ndarray:
    """Sentence embeddings as float32: one text -> (H,), a list -> (N, H), in input order.

    Pooling follows the backbone (mean pooling for all-MiniLM-L6-v2); `normalize` L2-normalises
    each vector, so a dot product is the cosine similarity.

    >>> funcformer.embed(["A cat sat.", "A dog ran."]).shape     # doctest: +SKIP
    (2, 384)
    """
    if not isinstance(normalize, bool):  # "maybe" was truthy
        raise TaskError(f"normalize must be true or false, got {normalize!r:.60}.")
    single = isinstance(texts, str)
    if not single and (not isinstance(texts, Iterable) or isinstance(texts, (bytes, bytearray))):
        raise DataError(f"Got {type(texts).__name__}: embed takes a text or a list of texts. "
                        "Fix: e.g. funcformer.embed('a text') or funcformer.embed(['a', 'b']) "
                        "(decode bytes first).")
    checked = read_texts([texts] if single else list(texts)).texts
    vectors, _ = _backbone.load(backbone, device=device).embed(checked, cache=cache)
    if normalize:
        vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    return vectors[0] if single else vectors


def similarity(a: Texts, b: Texts, **options: Any) -> Any:
    """Cosine similarity: two texts -> float; a text and a list -> (M,); two lists -> (N, M).

    >>> funcformer.similarity("A cat sat.", "A kitten was sitting.")  # doctest: +SKIP
    0.78
    """
    left, right = embed(a, **options), embed(b, **options)
    scores = np.atleast_2d(left) @ np.atleast_2d(right).T  # (N, M)
    if isinstance(a, str) and isinstance(b, str):
        return float(scores[0, 0])
    if isinstance(a, str):
        return scores[0]
    return scores[:, 0] if isinstance(b, str) else scores


LABEL_SET_FIX = ("zero_shot needs at least two labels, each a non-empty name (and "
                 "description). Fix: pass e.g. ['business', 'sports'].")


class ZeroShot(Function):
    """Classify with no training, from label names or descriptions.

    `labels` is a list of names (each put into `template`) or a dict {name: description}
    (descriptions used as written). Labels may also be given per call. With `multi_label`, every
    label whose cosine similarity reaches `threshold` is returned (`calibrate` tunes it on
    labelled data). `save()` writes a small artifact (settings only; the backbone is referenced).

    >>> topic = ZeroShot(["business", "sports", "science"])          # doctest: +SKIP
    >>> topic("The striker scored twice.").label                       # doctest: +SKIP
    'sports'
    """

    def __init__(self, labels: Sequence[str] | Mapping[str, str], *,
                 template: str = DEFAULT_TEMPLATE,
                 backbone: str | os.PathLike[str] | _backbone.Backbone | None = None,
                 device: str = "cpu", multi_label: bool = False,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        if labels is None:  # prompts(None) would read this function's labels, not yet set
            raise DataError("ZeroShot needs labels: a list of names or a dict of name -> "
                            "description. Fix: e.g. ZeroShot(['business', 'sports']).")
        if isinstance(labels, (set, frozenset)):  # its order, so the digest, varied by process
            raise DataError(f"ZeroShot labels are a set, which has no fixed order; the label "
                            f"order is part of the function. Fix: pass a list, e.g. "
                            f"sorted({labels!r:.60}).")
        if isinstance(labels, (str, bytes)):  # list('abc') would be the labels a, b, c
            raise DataError(f"ZeroShot takes a list of label names or a dict of name -> "
                            f"description, got the string {labels!r}. Fix: e.g. "
                            f"ZeroShot([{labels!r}, 'other']), or funcformer.train('zero_shot', "
                            "'labels.txt') for a file of labels.")
        self.template = _check_template(template)
        self.backbone = (backbone if isinstance(backbone, _backbone.Backbone)
                         else _backbone.load(backbone, device=device))
        if not isinstance(multi_label, bool):  # "false" was truthy
            raise TaskError(f"multi_label must be true or false, got {multi_label!r:.60}.")
        # checked now, not at the first call; names stripped as per-call ones are
        prompts = self.prompts(labels)
        self.spec = prompts if isinstance(labels, Mapping) else list(prompts)
        self.multi_label = multi_label
        self.threshold = cosine_threshold(threshold, "zero_shot")
        super().__init__(manifest=self._manifest())

    @classmethod
    def restored(cls, manifest: Manifest, backbone: _backbone.Backbone) -> ZeroShot:
        """A saved zero-shot function with its label names as saved: one saved before names
        were stripped keeps its names, prompts and digest."""
        options = manifest.options
        fn = cls.__new__(cls)
        fn.template = _check_template(options.get("template", DEFAULT_TEMPLATE))
        fn.backbone = backbone
        fn.spec = dict(options.get("descriptions") or {}) or list(manifest.labels)
        fn.multi_label = bool(options.get("multi_label"))
        fn.threshold = cosine_threshold(float(options.get("threshold", DEFAULT_THRESHOLD)),
                                        "zero_shot")
        fn.prompts()  # a damaged label set fails at load
        Function.__init__(fn, manifest=manifest)
        return fn

    @property
    def runner(self) -> Any:
        """The ONNX Runtime session embedding texts and prompts (None: the torch backbone)."""
        return self.backbone.graph

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return "torch" if self.runner is None else "onnx"

    def export_onnx(self, path: str | os.PathLike[str], *, int8: bool = False) -> Path:
        """Export the backbone's encoder and pooling, which embed the texts and the label
        prompts, as one ONNX graph into the artifact at `path` (the graph holds the backbone's
        weights: about 90 MB for all-MiniLM-L6-v2, where the artifact alone only names the
        backbone). `funcformer.load(path, runtime="onnx")` then gives the same scores."""
        import torch

        from ._function import export_graph, need_torch, pooled

        need_torch(self.runner, "export_onnx")
        return export_graph(self.digest, self.backbone,
                            pooled(self.backbone, None, torch.nn.Identity()), path, int8,
                            graph_of=self._graph_of())

    def _graph_of(self) -> str:
        """What the exported graph computes: the backbone's pooled embeddings, the same for
        every version of this function (labels, template and threshold stay outside it)."""
        pooling = self.backbone.pooling
        return f"backbone:{self.backbone.digest}:{pooling.mode}:{int(pooling.normalize)}"

    def _manifest(self) -> Manifest:
        from ._function import now, state_digest

        options = {"template": self.template, "multi_label": self.multi_label,
                   "threshold": self.threshold,
                   "descriptions": self.spec if isinstance(self.spec, dict) else {}}
        return Manifest(
            task="zero_shot", labels=list(self.prompts()), method="none",
            backbone=BackboneRef(name=self.backbone.name, digest=self.backbone.digest),
            options=options, digest=state_digest([list(self.spec), options],
                                                 self.backbone.digest),
            library_version=__version__, created_at=now())

    def fit(self, data: Any, **options: Any) -> Function:
        """A trainable `classify` Function whose head starts from these label embeddings,
        trained on this function's device unless `device=` says otherwise.

        >>> topic = ZeroShot({"billing": "invoices and charges", ...})  # doctest: +SKIP
        >>> fn = topic.fit("tickets.csv", epochs=20)                        # doctest: +SKIP
        """
        from ._function import need_torch, train

        need_torch(self.runner, "fit")
        options.setdefault("multi_label", self.multi_label or None)
        options.setdefault("device", self.backbone.device)
        return train("classify", data, init=self, backbone=self.backbone.path, **options)

    def prompts(self, labels: Sequence[str] | Mapping[str, str] | None = None
                ) -> dict[str, str]:
        """{label: the text embedded for it}: of `labels` (names stripped, as eval labels
        and label files are), or of this function's own labels, as they are."""
        verbatim = labels is None
        labels = self.spec if labels is None else labels

        def name(label: str) -> str:
            if not label.strip():  # before the duplicate check: '' and ' ' are no names
                raise DataError(LABEL_SET_FIX)
            return label if verbatim else label.strip()

        if isinstance(labels, Mapping):
            if any(not isinstance(t, str) for kv in labels.items() for t in kv):
                raise DataError("zero_shot labels and descriptions must be strings. Fix: pass "
                                "e.g. {'billing': 'invoices and charges', 'sports': 'games'}.")
            prompts = {}
            for k, v in labels.items():
                if name(k) in prompts:  # "a" and "a " were two labels scoring alike
                    raise DataError(f"zero_shot label {name(k)!r:.60} is given twice. Fix: "
                                    "give each label once.")
                prompts[name(k)] = v
        elif isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
            raise DataError(f"zero_shot labels must be a list of names (or a mapping of names "
                            f"to descriptions), got {type(labels).__name__} {labels!r:.60}. "
                            "Fix: pass e.g. ['business', 'sports'] (CLI: --set "
                            "'labels=[\"business\", \"sports\"]').")
        else:  # a tuple, a NumPy array of names (df["label"].unique()), a set (per call;
            # in order, for the same scores in every process)
            labels = sorted(labels, key=str) if isinstance(labels, (set, frozenset)) \
                else list(labels)
            if any(not isinstance(k, str) for k in labels):
                raise DataError("zero_shot labels must be strings. Fix: pass e.g. "
                                "['business', 'sports'].")
            labels = [name(k) for k in labels]
            seen: set[str] = set()
            for k in labels:
                if k in seen:
                    raise DataError(f"zero_shot label {k!r:.60} is given twice. Fix: give "
                                    "each label once.")
                seen.add(k)
            prompts = {str(k): self.template.format(k) for k in labels}
        bad = next((t for kv in prompts.items() for t in kv if LONE_SURROGATE.search(t)), None)
        if bad is not None:
            raise DataError(f"zero_shot label or description {bad!r:.60} is not valid Unicode "
                            "(a lone surrogate). Fix: send it as UTF-8.")
        if len(prompts) < 2 or any(not v.strip() for v in prompts.values()):
            raise DataError(LABEL_SET_FIX)
        return prompts

    def label_vectors(self, labels: Sequence[str] | Mapping[str, str] | None = None
                      ) -> np.ndarray:
        """Normalised prompt embeddings (L, H), computed once per backbone and prompt."""
        prompts = list(self.prompts(labels).values())
        vectors, _ = self.backbone.embed(prompts, cache=_labels_cache)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def similarities(self, texts: Sequence[str],
                     labels: Sequence[str] | Mapping[str, str] | None = None) -> np.ndarray:
        """Cosine similarity of each text to each label prompt (N, L)."""
        checked = read_texts(list(texts)).texts
        vectors, _ = self.backbone.embed(checked)
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors @ self.label_vectors(labels).T

    def __call__(self, texts: Texts,  # type: ignore[override]
                 labels: Sequence[str] | Mapping[str, str] | None = None, **options: Any) -> Any:
        """One text -> one result; a list -> a list. `labels` replaces the label set for
        this call (names, or {name: description})."""
        return super().__call__(texts, labels=labels, **options)  # others: a TaskError

    def predict(self, texts: Sequence[str],  # type: ignore[override]
                labels: Sequence[str] | Mapping[str, str] | None = None) -> list[Any]:
        """One result per text: a Prediction, or Labels when multi-label."""
        try:
            names = list(self.prompts(labels))
        except DataError as err:
            raise err if labels is None else for_option("labels", err) from None
        cosines = self.similarities(texts, labels)
        if self.multi_label:
            return [Labels(labels=[n for n, c in zip(names, row, strict=True)
                                   if c >= self.threshold],
                           scores={n: float(c) for n, c in zip(names, row, strict=True)})
                    for row in cosines]
        logits = _SCALE * cosines
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [Prediction(label=names[int(row.argmax())], score=float(row.max()),
                           scores={n: float(p) for n, p in zip(names, row, strict=True)})
                for row in probs]

    def result_from_dict(self, data: dict[str, Any]) -> Any:
        return Labels(**data) if self.multi_label else Prediction(**data)

    def calibrate(self, data: Any, *, text_column: str = "text",
                  label_column: str = "label") -> float:
        """Multi-label: set `threshold` to the cosine that maximises micro-F1 on labelled data."""
        from ._data import split_labels

        examples = read_examples(data, text_column=text_column, label_column=label_column,
                                 empty_labels=True)
        assert examples.labels is not None
        names = self.labels
        gold = np.array([[n in split_labels(y) for n in names] for y in examples.labels])
        cosines = self.similarities(examples.texts)
        best = (-1.0, self.threshold)
        for t in np.round(np.arange(-0.2, 0.9, 0.01), 2):
            guess = cosines >= t
            tp = float((guess & gold).sum())
            best = max(best, (2 * tp / max(float(guess.sum() + gold.sum()), 1.0), float(t)))
        self.threshold = best[1]
        self.manifest = self._manifest()
        return self.threshold

    def evaluate(self, data: Any, *, text_column: str = "text",
                 label_column: str = "label") -> dict[str, Any]:
        """Accuracy and macro-F1 (single-label), or micro/macro-F1 (multi-label)."""
        from ._data import split_labels
        from ._metrics import classification_metrics, multilabel_metrics

        examples = read_examples(data, text_column=text_column, label_column=label_column,
                                 empty_labels=self.multi_label)
        assert examples.labels is not None
        known = set(self.labels)
        for i, label in enumerate(examples.labels):
            for name in split_labels(label) if self.multi_label else [label]:
                if name not in known:
                    raise DataError(f"{examples.where(i)}, field '{label_column}': unknown "
                                    f"label '{name}'. This function knows: "
                                    f"{', '.join(self.labels)}.")
        results = self.predict(examples.texts)
        if self.multi_label:
            return multilabel_metrics([split_labels(y) for y in examples.labels],
                                      [r.labels for r in results], self.labels)
        return classification_metrics(examples.labels, [r.label for r in results], self.labels)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact (funcformer.json only: settings and the backbone reference).
        One loaded on ONNX saves too, after `calibrate` say. Saved into its own directory, it
        keeps the ONNX export there, changed or not: the graph is the backbone's, which a new
        threshold, template or label set leaves as it is, so no host with the backbone is
        needed to export it again."""
        from ._artifact import atomic_directory, write_manifest

        target = Path(path)
        with atomic_directory(target, graph_of=self._graph_of()) as temp:
            write_manifest(temp, self.manifest)
        return target


def zero_shot(texts: Texts, labels: Sequence[str] | Mapping[str, str], *,
              template: str = DEFAULT_TEMPLATE, backbone: str | os.PathLike[str] | None = None,
              multi_label: bool = False, threshold: float = DEFAULT_THRESHOLD) -> Any:
    """One-shot zero-shot classification; see `ZeroShot` for repeated use.

    >>> funcformer.zero_shot("Stocks fell 3%.", ["business", "sports"]).label  # doctest: +SKIP
    'business'
    """
    return ZeroShot(labels, template=template, backbone=backbone, multi_label=multi_label,
                    threshold=threshold)(texts)


def head_init(spec: Any, labels: Sequence[str], backbone: _backbone.Backbone) -> Any:
    """Head weights (C, H) for `labels` from label prompts: `spec` is "zero_shot" (template
    prompts) or a ZeroShot (its descriptions where it has one for a label)."""
    import torch

    if isinstance(spec, str) and spec == "zero_shot":
        spec = ZeroShot(labels, backbone=backbone)
    if not isinstance(spec, ZeroShot):
        raise TaskError(f"init must be 'zero_shot' or a ZeroShot, got {spec!r}.")
    given = spec.spec if isinstance(spec.spec, Mapping) else {}
    prompts = {label: given.get(label, spec.template.format(label)) for label in labels}
    return torch.from_numpy(_SCALE * spec.label_vectors(prompts)).float()


def _check_template(template: str) -> str:
    from ._config import check_template

    try:
        return check_template(template)
    except TaskError as err:
        raise DataError(str(err)) from None
