"""funcformer: pretrained transformers as small, typed, trainable functions.

>>> import funcformer
>>> fn = funcformer.train("classify", "reviews.csv")      # doctest: +SKIP
>>> fn("Delivery was two days late.")                      # doctest: +SKIP
Prediction(label='negative', score=0.91, scores={...})

Heavy modules (torch, transformers) load on first use, so `import funcformer` is fast. The
import caps oneDNN's caches through environment variables (`_bound_onednn_caches`).
"""

from __future__ import annotations

import importlib
import os as _os
import platform as _platform
from collections.abc import MutableMapping as _MutableMapping
from typing import TYPE_CHECKING, Any

from ._version import __version__

_ONEDNN_CACHE_ENTRIES = 64
"""What `_bound_onednn_caches` allows oneDNN's primitive cache and, on x86, ideep's operator
cache (1,024 entries each by default there). Training meets a new product shape in nearly
every batch (its token count), and each cached entry holds memory: `full` on 2,000 SST-2 rows
(2-core AMD EPYC) peaked at 2,486 MB of RSS with the defaults, 1,425 MB with 64 entries each, in
the same 64 s and to the same accuracy. 16 entries saved 70 MB more; 64 keeps a server's
recurring batch shapes cached: cycling through 96 shapes, the worst case for these caches,
took 26.6 against 26.0 ms a forward (bench/onednn_caches.py, docs/benchmarks.md)."""


def _bound_onednn_caches(environ: _MutableMapping[str, str] = _os.environ) -> None:
    """Cap oneDNN's primitive cache, and on x86 ideep's operator cache, at
    `_ONEDNN_CACHE_ENTRIES` each, unless the user set that cache's variable. oneDNN reads
    them when it is first used in the process, so this runs on `import funcformer` (torch
    loads later); a process that ran oneDNN before keeps its sizes. The variables are
    process-wide and inherited by child processes. Not `LRU_CACHE_CAPACITY` off x86: ideep's
    default there is 1 entry, which 64 would raise.

    >>> env = {}; _bound_onednn_caches(env); env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
    '64'
    >>> env = {"DNNL_PRIMITIVE_CACHE_CAPACITY": "1024"}; _bound_onednn_caches(env)
    >>> "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in env
    False
    """
    if not {"ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"} & set(environ):
        environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(_ONEDNN_CACHE_ENTRIES)
    if _platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        environ.setdefault("LRU_CACHE_CAPACITY", str(_ONEDNN_CACHE_ENTRIES))


_bound_onednn_caches()

__all__ = [  # noqa: RUF022 (plain sorted order, which tests/test_api.py checks)
    "AdaLoRA",
    "Answer",
    "ArtifactError",
    "BackboneNotFound",
    "DataError",
    "Embedding",
    "Engine",
    "Entities",
    "Explanation",
    "FuncformerError",
    "Function",
    "Generation",
    "Hit",
    "Hits",
    "IA3",
    "Labels",
    "LoRA",
    "MemoryCache",
    "MissingExtra",
    "PairScore",
    "Prediction",
    "PrefixTuning",
    "PromptTuning",
    "Ranked",
    "SQLiteCache",
    "SelfTraining",
    "Span",
    "Suggestion",
    "TaskError",
    "TrainConfig",
    "ZeroShot",
    "__version__",
    "distill",
    "embed",
    "explain",
    "generator",
    "load",
    "map",
    "similarity",
    "suggest",
    "train",
    "tune",
    "write_report",
    "zero_shot",
]

_LAZY = {
    "Answer": "._tasks.search",
    "Embedding": "._tasks.embed",
    "Entities": "._tasks.tag",
    "Span": "._tasks.tag",
    "PairScore": "._tasks.pair",
    "Ranked": "._tasks.pair",
    "Generation": "._tasks.generate",
    "Hit": "._tasks.search",
    "Hits": "._tasks.search",
    "Labels": "._results",
    "LoRA": "._lora",
    "AdaLoRA": "._peft",
    "IA3": "._peft",
    "PrefixTuning": "._peft",
    "PromptTuning": "._peft",
    "generator": "._tasks.generate",
    "Explanation": "._explain",
    "distill": "._distill",
    "explain": "._explain",
    "write_report": "._report",
    "ArtifactError": "._errors",
    "BackboneNotFound": "._errors",
    "DataError": "._errors",
    "FuncformerError": "._errors",
    "MissingExtra": "._errors",
    "TaskError": "._errors",
    "Prediction": "._results",
    "TrainConfig": "._config",
    "Function": "._function",
    "Engine": "._engine",
    "ZeroShot": "._embed",
    "embed": "._embed",
    "similarity": "._embed",
    "zero_shot": "._embed",
    "MemoryCache": "._cache",
    "SQLiteCache": "._cache",
    "load": "._function",
    "map": "._map",
    "train": "._function",
    "SelfTraining": "._unlabeled",
    "Suggestion": "._unlabeled",
    "suggest": "._unlabeled",
    "tune": "._tune",
}

if TYPE_CHECKING:
    from ._cache import MemoryCache, SQLiteCache
    from ._config import TrainConfig
    from ._distill import distill
    from ._embed import ZeroShot, embed, similarity, zero_shot
    from ._engine import Engine
    from ._errors import (
        ArtifactError,
        BackboneNotFound,
        DataError,
        FuncformerError,
        MissingExtra,
        TaskError,
    )
    from ._explain import Explanation, explain
    from ._function import Function, load, train
    from ._lora import LoRA
    from ._map import map
    from ._peft import IA3, AdaLoRA, PrefixTuning, PromptTuning
    from ._report import write_report
    from ._results import Labels, Prediction
    from ._tasks.embed import Embedding
    from ._tasks.generate import Generation, generator
    from ._tasks.pair import PairScore, Ranked
    from ._tasks.search import Answer, Hit, Hits
    from ._tasks.tag import Entities, Span
    from ._tune import tune
    from ._unlabeled import SelfTraining, Suggestion, suggest


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'funcformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
