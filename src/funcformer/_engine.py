"""The Engine: runs many functions over the same texts, computing as little as possible.

Functions whose encoder state is identical (every `head` function on one backbone) share one
backbone pass per batch; each then applies only its head. Results are cached by (function
digest and, when loaded in half precision or run on its ONNX export, its dtype or graph;
text), features by (backbone digest, dtype, pooling, token limit, text), in memory or SQLite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._artifact import MANIFEST
from ._cache import Cache, open_cache
from ._data import read_texts
from ._errors import TaskError


class Engine:
    """Holds named functions and runs them together.

    >>> engine = Engine({"sentiment": sentiment, "topic": topic})     # doctest: +SKIP
    >>> out = engine.run(["sentiment", "topic"], ["Stocks fell 3% today."])  # doctest: +SKIP
    >>> out["sentiment"][0].label                                     # doctest: +SKIP
    'negative'
    """

    def __init__(self, functions: Mapping[str, Any] | None = None, *,
                 cache: Cache | str | os.PathLike[str] | None = "memory",
                 threads: int | None = None) -> None:
        self.functions: dict[str, Any] = dict(functions or {})
        self.cache = open_cache(cache)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str], **options: Any) -> Engine:
        """Load every function artifact directly under `directory`, named by its folder."""
        from ._function import load

        root = Path(directory)
        found = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
        return cls({path.name: load(path) for path in found}, **options)

    @property
    def names(self) -> list[str]:
        return sorted(self.functions)

    def add(self, name: str, function: Any) -> None:
        self.functions[name] = function

    def remove(self, name: str) -> None:
        self.functions.pop(name, None)

    def __call__(self, name: str, inputs: str | Sequence[str]) -> Any:
        """Run one function: one text in, one result out; a list in, a list out."""
        if isinstance(inputs, str):
            return self.run([name], [inputs])[name][0]
        return self.run([name], inputs)[name]

    def run(self, names: Iterable[str] | str, texts: Sequence[str]) -> dict[str, list[Any]]:
        """Each named function's results for `texts`, in input order."""
        names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        # looked up once: another thread may add or remove functions while this call runs
        functions = {n: self.functions.get(n) for n in names}
        unknown = [n for n, fn in functions.items() if fn is None]
        if unknown:
            raise TaskError(f"Unknown function(s): {', '.join(unknown)}. This engine has: "
                            f"{', '.join(self.names) or 'none'}.")
        texts = list(texts)
        if any(fn.shares_features for fn in functions.values()):
            texts = read_texts(texts).texts
        results: dict[str, list[Any]] = {}
        groups: dict[Any, list[str]] = {}
        for name, fn in functions.items():
            if not fn.shares_features:  # its own model: one predict call, cached by input
                results[name] = self._own(fn, fn.read_inputs(texts))
                continue
            results[name] = self._cached(fn, texts)
            if any(r is None for r in results[name]):
                groups.setdefault(fn.encoder_key, []).append(name)
        for members in groups.values():
            self._compute({n: functions[n] for n in members}, texts, results)
        return results

    def _own(self, fn: Any, inputs: list[Any]) -> list[Any]:
        keys = [x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in inputs]
        if self.cache is None:
            return fn.predict(inputs)
        # read once, before predicting: a search function's digest changes when another thread
        # adds or removes documents, and results of the old index were stored under the new one
        namespace = _namespace(fn)
        values = self.cache.get_many(namespace, keys)
        found = {k: fn.result_from_dict(json.loads(v))
                 for k, v in zip(keys, values, strict=True) if v is not None}
        todo = {k: x for k, x in zip(keys, inputs, strict=True) if k not in found}
        if todo:
            computed = dict(zip(todo, fn.predict(list(todo.values())), strict=True))
            self.cache.put_many(namespace, [(k, json.dumps(r.to_dict()).encode())
                                            for k, r in computed.items()])
            found.update(computed)
        return [found[k] for k in keys]

    def _cached(self, fn: Any, texts: Sequence[str]) -> list[Any]:
        if self.cache is None:
            return [None] * len(texts)
        values = self.cache.get_many(_namespace(fn), texts)
        return [None if v is None else fn.result_from_dict(json.loads(v)) for v in values]

    def _compute(self, members: dict[str, Any], texts: Sequence[str],
                 results: dict[str, list[Any]]) -> None:
        """One encoder pass for the distinct texts any member lacks; then each member's head.

        A repeated text is computed once and shares one result object, so equal inputs give
        equal outputs (a GEMM may round two equal rows differently).
        """
        missing = list(dict.fromkeys(texts[i] for n in members
                                     for i, r in enumerate(results[n]) if r is None))
        first = next(iter(members.values()))
        features = first.features(missing, cache=self.cache)  # (M, H)
        for name, fn in members.items():
            logits = fn.apply_head(features)
            computed = dict(zip(missing, fn.task.decode(logits), strict=True))
            lacking = {texts[i] for i, r in enumerate(results[name]) if r is None}
            results[name] = [computed[t] if r is None else r
                             for t, r in zip(texts, results[name], strict=True)]
            if self.cache is not None:
                self.cache.put_many(_namespace(fn), [(t, json.dumps(computed[t].to_dict())
                                                      .encode()) for t in lacking])

    def stats(self) -> dict[str, Any]:
        """Cache hit/miss counters and the functions loaded."""
        return {"functions": self.names,
                "cache": self.cache.stats() if self.cache is not None else None}


def _namespace(fn: Any) -> str:
    """Results of one function as it runs: loaded in bfloat16 or float16, or run on its ONNX
    export (float32 or int8), it computes other numbers than in float32 torch, so they never
    share results (as their features never do)."""
    runner = getattr(fn, "runner", None)
    if runner is not None:  # the graph's file tells float32 from int8
        return f"results:{fn.digest}:onnx:{Path(runner.path).name}"
    return f"results:{fn.digest}{_half_precision(fn)}"


def _half_precision(fn: Any) -> str:
    """':bfloat16' or ':float16' for a function whose weights were loaded so, else ''."""
    holder = getattr(fn, "embedder", fn)  # a search function runs its embedder's backbone
    model = getattr(getattr(holder, "lm", None) or getattr(holder, "backbone", None), "model",
                    None)
    if model is None:  # an ONNX runtime: no torch weights
        return ""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return "" if dtype == "float32" else f":{dtype}"
