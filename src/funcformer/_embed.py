"""One-shot helpers on a backbone's sentence embeddings: embed, similarity, zero-shot labels.

    funcformer.embed(["a", "b"])                     # (2, 384) float32, L2-normalised
    funcformer.similarity("a cat", ["a dog", "tax"]) # (2,) cosine similarities
    funcformer.zero_shot("Stocks fell.", ["business", "sports"])  # Prediction

Label embeddings are computed once per backbone and label prompt (kept in a process-wide
cache), never once per text: the transformers zero-shot pipeline runs one pass per label.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np

from . import _backbone
from ._cache import Cache, MemoryCache
from ._data import read_texts
from ._errors import DataError, TaskError
from ._results import Prediction

DEFAULT_TEMPLATE = "This text is about {}."
# Cosine similarities span a narrow range; a softmax over them at temperature 0.05 turns them
# into usable probabilities (the scale CLIP-style zero-shot classifiers use, 1 / 0.05 = 20).
_SCALE = 20.0
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
    single = isinstance(texts, str)
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


class ZeroShot:
    """Classify with no training, from label names or descriptions.

    `labels` is a list of names (each put into `template`) or a dict {name: description}
    (descriptions used as written). Labels may also be given per call.

    >>> topic = ZeroShot(["business", "sports", "science"])          # doctest: +SKIP
    >>> topic("The striker scored twice.").label                       # doctest: +SKIP
    'sports'
    """

    def __init__(self, labels: Sequence[str] | Mapping[str, str], *,
                 template: str = DEFAULT_TEMPLATE,
                 backbone: str | os.PathLike[str] | _backbone.Backbone | None = None,
                 device: str = "cpu") -> None:
        self.template = _check_template(template)
        self.backbone = (backbone if isinstance(backbone, _backbone.Backbone)
                         else _backbone.load(backbone, device=device))
        self.labels = labels

    def fit(self, data: Any, **options: Any) -> Any:
        """A trainable `classify` Function whose head starts from these label embeddings.

        >>> topic = ZeroShot({"billing": "invoices and charges", ...})  # doctest: +SKIP
        >>> fn = topic.fit("tickets.csv", epochs=20)                        # doctest: +SKIP
        """
        from ._function import train

        return train("classify", data, init=self, backbone=self.backbone.path, **options)

    def prompts(self, labels: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
        """{label: the text embedded for it}."""
        if isinstance(labels, Mapping):
            prompts = {str(k): str(v) for k, v in labels.items()}
        else:
            prompts = {str(k): self.template.format(k) for k in labels}
        if len(prompts) < 2 or any(not k.strip() or not v.strip() for k, v in prompts.items()):
            raise DataError("zero_shot needs at least two labels, each a non-empty name (and "
                            "description). Fix: pass e.g. ['business', 'sports'].")
        return prompts

    def label_vectors(self, labels: Sequence[str] | Mapping[str, str]) -> np.ndarray:
        """Normalised prompt embeddings (L, H), computed once per backbone and prompt."""
        prompts = list(self.prompts(labels).values())
        vectors, _ = self.backbone.embed(prompts, cache=_labels_cache)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def __call__(self, texts: Texts, labels: Sequence[str] | Mapping[str, str] | None = None,
                 ) -> Prediction | list[Prediction]:
        single = isinstance(texts, str)
        checked = read_texts([texts] if single else list(texts)).texts
        labels = self.labels if labels is None else labels
        names = list(self.prompts(labels))
        vectors, _ = self.backbone.embed(checked)
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        logits = _SCALE * (vectors @ self.label_vectors(labels).T)  # (N, L)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        out = [Prediction(label=names[int(row.argmax())], score=float(row.max()),
                          scores={n: float(p) for n, p in zip(names, row, strict=True)})
               for row in probs]
        return out[0] if single else out


def zero_shot(texts: Texts, labels: Sequence[str] | Mapping[str, str], *,
              template: str = DEFAULT_TEMPLATE, backbone: str | os.PathLike[str] | None = None
              ) -> Prediction | list[Prediction]:
    """One-shot zero-shot classification; see `ZeroShot` for repeated use.

    >>> funcformer.zero_shot("Stocks fell 3%.", ["business", "sports"]).label  # doctest: +SKIP
    'business'
    """
    return ZeroShot(labels, template=template, backbone=backbone)(texts)


def head_init(spec: Any, labels: Sequence[str], backbone: _backbone.Backbone) -> Any:
    """Head weights (C, H) for `labels` from label prompts: `spec` is "zero_shot" (template
    prompts) or a ZeroShot (its descriptions where it has one for a label)."""
    import torch

    if isinstance(spec, str) and spec == "zero_shot":
        spec = ZeroShot(labels, backbone=backbone)
    if not isinstance(spec, ZeroShot):
        raise TaskError(f"init must be 'zero_shot' or a ZeroShot, got {spec!r}.")
    given = spec.labels if isinstance(spec.labels, Mapping) else {}
    prompts = {label: given.get(label, spec.template.format(label)) for label in labels}
    return torch.from_numpy(_SCALE * spec.label_vectors(prompts)).float()


def _check_template(template: str) -> str:
    if template.count("{}") != 1:
        raise DataError(f"The template {template!r} must contain exactly one '{{}}' where the "
                        "label goes, e.g. 'This text is about {}.'")
    return template
