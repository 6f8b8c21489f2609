"""The `search` task: an index of documents searched by meaning; FAQ answering.

    fn = funcformer.train("search", "faq.csv", id_column="faq_id", text_column="question",
                          eval_data="queries.csv")   # eval queries calibrate "no answer"
    fn("how do I delete my account?").hits[0].id
    fn.answer("how do I delete my account?")    # Answer(id, answer, question, score, answered)
    fn.add([{"id": "42", "text": "..."}]); fn.remove(["7"]); fn.save("faq-bot")

Documents are embedded with the function's encoder (the backbone, or one tuned on (query, id)
pairs with in-batch negatives: `pairs=`, method `full` or `lora`). Search is exact (a matrix
product in numpy) up to `ANN_THRESHOLD` documents; past that, or with `backend="faiss"`, an
HNSW index (the `[ann]` extra) answers instead, behind the same interface. The index is stored
in the artifact as index/vectors.safetensors and index/documents.jsonl (+ adapter/ for `lora`,
encoder/ for `full`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backbone
from .._artifact import Manifest, atomic_directory, write_manifest
from .._config import TrainConfig
from .._data import read_records
from .._errors import (
    ArtifactError,
    DataError,
    TaskError,
    cosine_threshold,
    for_option,
    is_whole,
    require,
)
from .._function import (
    Function,
    PathLike,
    export_graph,
    load_adapter,
    load_backbone,
    make_config,
    method_option,
    need_torch,
    now,
    pooled,
    say,
    write_adapter,
    write_encoder,
)
from .._methods import choose_tuning, task_method
from .._train import content_digest
from .._version import __version__
from .embed import (
    DEFAULT_LEARNING_RATE,
    METHODS,
    Embedder,
    from_backbone,
    retrieval_metrics,
    tune_encoder,
    tuned_manifest,
)

log = logging.getLogger("funcformer")
INDEX_DIR = "index"
ANN_THRESHOLD = 1_000_000
"""Past this many documents `backend="auto"` switches from exact search to HNSW (faiss)."""
DEFAULT_THRESHOLD = 0.5
"""`answer()` says "no answer" below this cosine similarity unless calibrated on queries."""

Filter = Mapping[str, Any] | Callable[[dict[str, Any]], bool] | None


@dataclass(frozen=True)
class Hit:
    """One matching document: its id, text, cosine similarity and metadata."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hits:
    """The top-k documents for one query, best first."""

    hits: list[Hit]

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [asdict(h) for h in self.hits]}


@dataclass(frozen=True)
class Answer:
    """The best FAQ entry for a query, or `answered=False` when none is close enough."""

    answered: bool
    id: str | None
    answer: str | None
    question: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Document:
    id: str
    text: str
    answer: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Index:
    """Documents and their normalised vectors (N, H); exact or HNSW top-k search.

    Never changed once made: `add` and `remove` return a new index, so a search running in
    another thread reads one consistent set of documents, vectors and HNSW graph.
    """

    def __init__(self, documents: list[Document], vectors: np.ndarray,
                 backend: str = "auto") -> None:
        if backend not in ("auto", "exact", "faiss"):
            raise TaskError(f"Unknown search backend '{backend}'. Choose auto, exact or faiss.")
        self.documents = documents
        self.vectors = vectors.astype(np.float32, copy=False)
        self.backend = backend
        self.rows = {doc.id: i for i, doc in enumerate(documents)}
        self._ann: Any = None
        self._ann_lock = threading.Lock()  # the graph is built once, on the first search
        self._fields: set[str] | None = None

    def __len__(self) -> int:
        return len(self.documents)

    def metadata_fields(self) -> set[str]:
        """Every metadata field of the documents, computed once (a filter is checked against
        them on each call)."""
        if self._fields is None:
            self._fields = set().union(*(doc.metadata for doc in self.documents))
        return self._fields

    @property
    def uses_ann(self) -> bool:
        return self.backend == "faiss" or (self.backend == "auto" and len(self) > ANN_THRESHOLD)

    def add(self, documents: list[Document], vectors: np.ndarray) -> Index:
        """A new index that also holds `documents`, embedded as `vectors` (M, H)."""
        clash = [d.id for d in documents if d.id in self.rows]
        if clash:
            raise DataError(f"Document id '{clash[0]}' is already in the index. Fix: remove it "
                            "first, or give new documents new ids.")
        return Index(self.documents + documents,
                     np.concatenate([self.vectors, vectors.astype(np.float32)]), self.backend)

    def remove(self, ids: Sequence[str]) -> tuple[Index, int]:
        """A new index without the documents of these ids, and how many of them there were."""
        drop = {str(i) for i in ids} & set(self.rows)
        keep = [i for i, doc in enumerate(self.documents) if doc.id not in drop]
        return Index([self.documents[i] for i in keep], self.vectors[keep],
                     self.backend), len(drop)

    def search(self, queries: np.ndarray, k: int, where: Filter = None
               ) -> list[list[tuple[int, float]]]:
        """Per query, up to `k` (row, cosine) pairs, best first, among documents passing
        `where` (a dict of metadata values that must match, or a predicate on metadata)."""
        allowed = self._allowed(where)
        if not len(self) or (allowed is not None and not allowed.any()):
            return [[] for _ in queries]
        if self.uses_ann:
            return self._ann_search(queries, k, allowed)
        scores = queries @ self.vectors.T  # (Q, N)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        k = min(k, len(self) if allowed is None else int(allowed.sum()))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out = []
        for row, candidates in zip(scores, top, strict=True):
            best = candidates[np.argsort(-row[candidates], kind="stable")]
            out.append([(int(i), float(row[i])) for i in best])
        return out

    def _allowed(self, where: Filter) -> np.ndarray | None:
        if where is None:
            return None
        if callable(where):
            return np.array([bool(where(doc.metadata)) for doc in self.documents], dtype=bool)
        return np.array([all(doc.metadata.get(k) == v for k, v in where.items())
                         for doc in self.documents], dtype=bool)

    def _ann_search(self, queries: np.ndarray, k: int,
                    allowed: np.ndarray | None) -> list[list[tuple[int, float]]]:
        faiss = require("faiss", "ann")
        with self._ann_lock:
            if self._ann is None:
                index = faiss.IndexHNSWFlat(self.vectors.shape[1], 32,
                                            faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = 200
                index.add(np.ascontiguousarray(self.vectors))
                self._ann = index
        # per call, not index.hnsw.efSearch: searches with other k run in other threads
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(64, 2 * k)
        fetch = k if allowed is None else min(len(self), k * 10)  # filter after fetching more
        scores, rows = self._ann.search(np.ascontiguousarray(queries, dtype=np.float32), fetch,
                                        params=params)
        out = []
        for query, score_row, index_row in zip(queries, scores, rows, strict=True):
            hits = [(int(i), float(s)) for i, s in zip(index_row, score_row, strict=True)
                    if i >= 0 and (allowed is None or allowed[i])]
            if allowed is not None and len(hits) < min(k, int(allowed.sum())):
                hits = self._exact_among(query, k, allowed)  # a selective filter: few passed
            out.append(hits[:k])
        return out

    def _exact_among(self, query: np.ndarray, k: int,
                     allowed: np.ndarray) -> list[tuple[int, float]]:
        """The top `k` of the allowed documents by exact cosine: where the fetched
        neighbours held too few of them (an answer under a rare filter was none)."""
        rows = np.flatnonzero(allowed)
        scores = self.vectors[rows] @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [(int(rows[j]), float(scores[j])) for j in best]


class Searcher(Function):
    """A `search` function: `fn(query)` -> Hits; `fn.answer(query)` -> Answer."""

    def __init__(self, *, embedder: Embedder, index: Index, manifest: Manifest) -> None:
        super().__init__(manifest=manifest)
        self.embedder = embedder
        self.index = index
        """Replaced, never changed, by add and remove: a call reads it once."""
        self._lock = threading.Lock()
        """Held by what changes the index or the manifest (add, remove, calibrate) and by save."""

    @property
    def threshold(self) -> float:
        return float(self.manifest.options.get("threshold", DEFAULT_THRESHOLD))

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return self.embedder.runtime

    def export_onnx(self, path: PathLike, *, int8: bool = False) -> Path:
        """Export the query and document encoder (encoder and pooling) as one ONNX graph into
        the artifact at `path`; `funcformer.load(path, runtime="onnx")` then encodes queries
        (and documents `add`ed) with ONNX Runtime. Saving the function again (after `add`,
        say) replaces the artifact, export included: export again."""
        need_torch(self.embedder.runner, "export_onnx")
        from torch.nn import Identity

        backbone = self.embedder.backbone
        return export_graph(self.digest, backbone,
                            pooled(backbone, self.embedder.encoder, Identity()), path, int8)

    def predict(self, queries: Sequence[str], k: int = 10, filter: Filter = None,
                answer: bool = False) -> list[Any]:
        """Top-k Hits per query (or, with `answer=True`, an Answer per query: the best entry
        passing `filter`, whatever `k`)."""
        if not isinstance(answer, bool):
            raise for_option("answer", TaskError(f"answer must be true or false, got "
                                                 f"{answer!r:.60}."))
        if not is_whole(k) or k < 1:
            raise for_option("k", TaskError(f"k must be a whole number of at least 1, got "
                                            f"{k!r:.60}."))
        self._check_filter(filter)
        if answer:  # the filter applies here too: it was ignored
            return self.answers(queries, filter)
        k = int(k)
        index = self.index  # once: another thread's add or remove swaps in another
        found = index.search(self.embedder.encode(list(queries)).reshape(len(queries), -1),
                             k, filter)
        docs = index.documents
        return [Hits([Hit(id=docs[i].id, text=docs[i].text, score=s,
                          metadata=dict(docs[i].metadata)) for i, s in row]) for row in found]

    def search(self, query: str, k: int = 10, filter: Filter = None) -> Hits:
        return self.predict([query], k=k, filter=filter)[0]

    def answer(self, query: str | Sequence[str], filter: Filter = None) -> Any:
        """The best entry's answer for one query (an Answer), or a list for a list; `filter`
        as for `search`."""
        self._check_filter(filter)
        if isinstance(query, str):
            return self.answers([query], filter)[0]
        if not isinstance(query, Iterable):  # None was a TypeError
            raise DataError(f"Got {type(query).__name__}: answer takes a query or a list of "
                            "them. Fix: e.g. fn.answer('how do I pay?').")
        return self.answers(list(query), filter)

    def _check_filter(self, filter: Filter) -> None:
        if filter is None or callable(filter):
            return
        if not isinstance(filter, dict):
            raise for_option("filter", TaskError(f"filter must map metadata fields to values, "
                                                 f'e.g. {{"lang": "en"}}; got {filter!r:.60}.'))
        index = self.index
        fields = index.metadata_fields()
        unknown = [name for name in filter if name not in fields]
        if unknown and index.documents:  # a typo matched nothing, silently
            raise for_option("filter", TaskError(
                f"filter field {unknown[0]!r:.60} is in no document's metadata (fields: "
                f"{', '.join(sorted(map(str, fields))) or 'none'}). Fix: filter on one of them."))

    def answers(self, queries: Sequence[str], filter: Filter = None) -> list[Answer]:
        index = self.index
        found = index.search(self.embedder.encode(list(queries)).reshape(len(queries), -1),
                             1, filter)
        out = []
        for row in found:
            if not row:
                out.append(Answer(False, None, None, None, 0.0))
                continue
            i, score = row[0]
            doc = index.documents[i]
            ok = score >= self.threshold
            out.append(Answer(answered=ok, id=doc.id if ok else None,
                              answer=(doc.answer if doc.answer is not None else doc.text)
                              if ok else None,
                              question=doc.text if ok else None, score=score))
        return out

    def result_from_dict(self, data: dict[str, Any]) -> Any:
        if "hits" in data:
            return Hits([Hit(**h) for h in data["hits"]])
        return Answer(**data)

    def add(self, documents: Any, **columns: Any) -> int:
        """Embed and add documents (same formats as training); returns how many."""
        with self._lock:  # two adds at once: both read one index, one's documents were lost
            # documents without an id are numbered after the index's: row numbers clashed
            docs = read_documents(documents, first_id=self._next_id(),
                                  **{**self._columns(), **columns})
            vectors = self.embedder.encode([d.text for d in docs]).reshape(len(docs), -1)
            self.index = self.index.add(docs, vectors)
            self.manifest.options["next_id"] = self._next_id()
            self._refresh()  # after the index: a digest read first never names an older one
        return len(docs)

    def remove(self, ids: Sequence[str] | str) -> int:
        """Remove documents by id; returns how many were found and removed. Their numbers
        are not given again to documents added without an id."""
        if not isinstance(ids, (str, Iterable)):  # None was a TypeError
            raise DataError(f"remove takes an id or a list of ids, got {type(ids).__name__}.")
        with self._lock:
            # removing the highest number gave it to the next document added (a stale
            # reference to the removed one then named another)
            self.manifest.options["next_id"] = self._next_id()
            self.index, removed = self.index.remove([ids] if isinstance(ids, str) else list(ids))
            self._refresh()
        return removed

    def _next_id(self) -> int:
        """The number for the next document added without an id: past every numbered id in
        the index and every one it held before (kept in the manifest across saves)."""
        numbered = [int(d.id) for d in self.index.documents if d.id.isascii() and d.id.isdigit()]
        return max(max(numbered, default=-1) + 1, int(self.manifest.options.get("next_id", 0)))

    def _columns(self) -> dict[str, str]:
        return dict(self.manifest.options.get("columns", {}))

    def _refresh(self) -> None:
        self.manifest.options["documents"] = len(self.index)
        self.manifest.digest = index_digest(self.manifest.options["encoder_digest"], self.index,
                                            self.threshold)

    def _ids(self) -> set[str]:
        return {document.id for document in self.index.documents}

    def calibrate(self, queries: Any, **columns: Any) -> float:
        """Set the "no answer" threshold from queries with gold ids (an empty id: the query has
        no answer): the cosine that makes the most answer-or-abstain decisions right."""
        with self._lock:
            texts, gold = read_queries(queries, **{**self._columns(), **columns},
                                       known=self._ids())
            vectors = self.embedder.encode(texts).reshape(len(texts), -1)
            found = self.index.search(vectors, 1, None)
            top = [(row[0][1], self.index.documents[row[0][0]].id in ids) if row
                   else (0.0, False) for row, ids in zip(found, gold, strict=True)]
            best = (-1, DEFAULT_THRESHOLD)
            for t in sorted({s for s, _ in top} | {1.01}):
                right = sum((s >= t) == correct for s, correct in top)
                best = max(best, (right, t))
            self.manifest.options["threshold"] = float(best[1])
            self.manifest.options["calibrated_on"] = len(texts)
            self._refresh()
            return self.threshold

    def evaluate(self, data: Any, **columns: Any) -> dict[str, Any]:
        """Queries with gold document ids: accuracy@1, MRR@10, and how often `answer()` is right
        (the right entry above the threshold, or no answer for a query without one)."""
        index = self.index
        texts, gold = read_queries(data, **{**self._columns(), **columns},
                                   known={document.id for document in index.documents})
        vectors = self.embedder.encode(texts).reshape(len(texts), -1)
        found = index.search(vectors, 10, None)
        ranks = [next((r for r, (i, _) in enumerate(row) if index.documents[i].id in ids),
                      None) for row, ids in zip(found, gold, strict=True) if ids]
        metrics = ({"accuracy_at_1": sum(r == 0 for r in ranks) / len(ranks),
                    "mrr_at_10": sum(1 / (r + 1) for r in ranks if r is not None) / len(ranks)}
                   if ranks else {})
        right = sum((bool(row) and row[0][1] >= self.threshold
                     and index.documents[row[0][0]].id in ids)
                    or (not ids and (not row or row[0][1] < self.threshold))
                    for row, ids in zip(found, gold, strict=True))
        return {**metrics, "answer_accuracy": right / len(texts), "examples": len(texts)}

    def save(self, path: PathLike) -> Path:
        need_torch(self.embedder.runner, "save")
        with self._lock:  # an add meanwhile: vectors of one index, documents of the next
            return self._save(Path(path))

    def _save(self, target: Path) -> Path:
        from safetensors.numpy import save_file

        with atomic_directory(target) as temp:
            (temp / INDEX_DIR).mkdir()
            save_file({"vectors": np.ascontiguousarray(self.index.vectors)},
                      str(temp / INDEX_DIR / "vectors.safetensors"))
            with open(temp / INDEX_DIR / "documents.jsonl", "w", encoding="utf-8") as handle:
                for doc in self.index.documents:
                    handle.write(json.dumps(asdict(doc), ensure_ascii=False) + "\n")
            manifest = self.manifest
            if manifest.backbone.included:
                manifest = write_encoder(temp, self.embedder.encoder, self.embedder.backbone,
                                         manifest)
            write_adapter(temp, self.embedder.encoder, manifest)
            write_manifest(temp, manifest)
        return target


def index_digest(encoder_digest: str, index: Index, threshold: float) -> str:
    digest = hashlib.sha256(f"{encoder_digest}:{threshold}".encode())
    for doc in index.documents:
        digest.update(json.dumps(asdict(doc), sort_keys=True, ensure_ascii=False).encode())
    return "sha256:" + digest.hexdigest()


def read_documents(data: Any, *, id_column: str = "id", text_column: str = "text",
                   answer_column: str = "answer", first_id: int = 0,
                   **_: Any) -> list[Document]:
    """Documents from a file, list or DataFrame: text, optional id (default: the row number
    counted from `first_id`; an `id_column` named other than "id" must be in every row),
    optional answer; a JSONL `metadata` object, or else every other column, is metadata."""
    if isinstance(data, Sequence) and not isinstance(data, str) and all(
            isinstance(x, str) for x in data):
        data = [{text_column: x} for x in data]
    records = read_records(data, texts=[text_column], what="documents", fields=["text"])
    docs, seen = [], {}
    for i, row in enumerate(records.rows):
        raw_id = row.get(id_column)
        if isinstance(raw_id, (list, dict, bool)):
            raise DataError(f"{records.where(i)}, field '{id_column}': an id is a text or a "
                            f"number, got {raw_id!r}. Fix: give every document a plain id.")
        given = id_text(raw_id)  # " " was the id "", a DataFrame's 1.0 the id '1.0'
        if not given and id_column != "id":  # asked for by name: never a row number
            raise DataError(f"{records.where(i)}: no id in the field '{id_column}' "
                            f"(id_column). Fix: fill it in, or name the id field with "
                            f"--set id_column=... / id_column= (fields here: "
                            f"{', '.join(row)}).")
        doc_id = given or str(first_id + i)
        if doc_id in seen:
            how = "" if given else " (the number given to this document, which has no id)"
            raise DataError(f"{records.where(i)}, field '{id_column}': duplicate id '{doc_id}'"
                            f"{how} (first at {records.places[seen[doc_id]]}). Fix: give every "
                            "document its own id.")
        seen[doc_id] = i
        answer = None if _missing(row.get(answer_column)) else row[answer_column]
        if answer is not None and not isinstance(answer, str):
            raise DataError(f"{records.where(i)}, field '{answer_column}': expected a text, "
                            f"got {type(answer).__name__}. Fix: write the answer as text.")
        metadata = row.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise DataError(f"{records.where(i)}, field 'metadata': expected an object, e.g. "
                            '{"lang": "en"}. Fix: write metadata as a JSON object.')
        if metadata is None:
            metadata = {k: v for k, v in row.items()
                        if k not in (id_column, text_column, answer_column)}
        docs.append(Document(doc_id, row[text_column], answer, dict(metadata)))
    return docs


def id_text(value: Any) -> str:
    """An id as text: '' for none (absent, blank, a DataFrame's NaN), and a whole float as
    the integer it is (pandas turns an id column with a gap into floats: 1 -> 1.0).

    >>> import numpy as np
    >>> id_text(1.0), id_text(np.float32(7)), id_text(float("nan")), id_text(" a7 "), id_text(2.5)
    ('1', '7', '', 'a7', '2.5')
    """
    if _missing(value):
        return ""
    if _fractional_type(value) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _fractional_type(value: Any) -> bool:
    """A float of any kind (Python's, NumPy's float32/float64), not an int or a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)


def _missing(value: Any) -> bool:
    """No value: absent, null, empty or blank, or a DataFrame's NaN."""
    return (value is None or (_fractional_type(value) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def read_queries(data: Any, *, id_column: str = "id", query_column: str = "text",
                 known: set[str] | None = None, **_: Any) -> tuple[list[str], list[set[str]]]:
    """Queries and their gold document ids ('a|b' for several; empty: no answer exists);
    with `known` (the documents' ids), an id not among them is a DataError naming the row."""
    records = read_records(data, texts=[query_column], optional=[id_column], what="queries",
                           fields=["query"])
    gold = []
    for i, row in enumerate(records.rows):
        if id_column not in row:
            raise DataError(f"{records.where(i)}: field '{id_column}' is missing. Fix: give "
                            "each query the id of the document that answers it (empty: none).")
        ids = {p.strip() for p in id_text(row[id_column]).split("|") if p.strip()}
        unknown = sorted(ids - known) if known is not None else []
        if unknown:  # calibrating on it would count every answer as wrong
            raise DataError(f"{records.where(i)}, field '{id_column}': no document has the id "
                            f"'{unknown[0]}'. Fix: use ids of the indexed documents (empty: the "
                            "query has no answer).")
        gold.append(ids)
    return records.column(query_column), gold


def train(data: Any, *, eval_data: Any = None, backbone: Any = None, method: Any = None,
          config: TrainConfig | None = None, progress: bool = True, device: str = "cpu",
          text_column: str = "text", label_column: str = "label", init: Any = None,
          cache: Any = None, pairs: Any = None, id_column: str = "id",
          answer_column: str = "answer", query_column: str = "text", backend: str = "auto",
          threshold: float | None = None, **options: Any) -> Searcher:
    """Index documents; with `pairs` (queries with gold ids) tune the encoder first (`full` or
    `lora`); with `eval_data` (queries with gold ids) calibrate "no answer" and record the
    metrics."""
    started = time.perf_counter()
    if threshold is not None:
        threshold = cosine_threshold(threshold, "search")
    method, options = method_option(method, options)
    asked = task_method("search", method, config, METHODS, options)
    columns = {"id_column": id_column, "text_column": text_column,
               "answer_column": answer_column, "query_column": query_column}
    docs = read_documents(data, **columns)
    unused = sorted(k for k, v in options.items() if v is not None and k != "seed")
    if pairs is None and (unused or asked not in (None, "auto")):
        what = ", ".join(unused) if unused else f"method '{asked}'"
        raise TaskError(f"{what}: only used when tuning the encoder; pass pairs= (queries with "
                        "the ids of their documents) to train.")
    shared = _backbone.load(backbone, device=device)
    embedder = from_backbone(shared)
    history: dict[str, Any] = {}
    report: dict[str, Any] = {}
    if pairs is not None:
        a, b = _query_pairs(docs, pairs, columns)
        chosen, reason = choose_tuning(asked, "full", len(a), device)
        if chosen == "full" and (config is None or config.learning_rate is None):
            options.setdefault("learning_rate", DEFAULT_LEARNING_RATE)
        config = make_config(replace(config, method=chosen) if config else None, chosen,
                             options)
        if reason is not None:
            say(f"method auto -> {chosen}: {reason}", progress)
            report["method_reason"] = f"auto: {reason}"
        embedder, history = _tune(embedder, docs, a, b, eval_data, columns, config, progress)
    vectors = embedder.encode([d.text for d in docs]).reshape(len(docs), -1)
    options_out = {"columns": columns, "threshold": DEFAULT_THRESHOLD if threshold is None
                   else float(threshold), "backend": backend, "documents": len(docs),
                   "encoder_digest": embedder.digest}
    manifest = Manifest(
        task="search", method=embedder.manifest.method, options=options_out,
        config=config.to_dict() if pairs is not None and config else {},
        backbone=embedder.manifest.backbone, adapter=embedder.manifest.adapter, digest="",
        training={"examples": len(docs), "seconds": 0.0, "history": history,
                  "eval_source": "given" if eval_data is not None else "none", **report},
        library_version=__version__, created_at=now())
    fn = Searcher(embedder=embedder, index=Index(docs, vectors, backend), manifest=manifest)
    fn._refresh()
    if eval_data is not None:
        if threshold is None:
            fn.calibrate(eval_data)
        fn.manifest.metrics = fn.evaluate(eval_data)
    fn.manifest.training["seconds"] = round(time.perf_counter() - started, 2)
    return fn


def _query_pairs(docs: list[Document], pairs: Any,
                 columns: dict[str, str]) -> tuple[list[str], list[str]]:
    """(query, document text) for each gold id of each query in `pairs`."""
    by_id = {d.id: d.text for d in docs}
    texts, gold = read_queries(pairs, **columns, known=set(by_id))
    a, b = [], []
    for query, ids in zip(texts, gold, strict=True):
        for doc_id in sorted(ids):
            a.append(query)
            b.append(by_id[doc_id])
    if not a:
        raise DataError("pairs: no query names a document. Fix: give queries with gold ids.")
    return a, b


def _tune(embedder: Embedder, docs: list[Document], a: list[str], b: list[str], eval_data: Any,
          columns: dict[str, str], config: TrainConfig,
          progress: bool) -> tuple[Embedder, dict[str, Any]]:
    shared = embedder.backbone
    evaluate = None
    if eval_data is not None:
        eval_texts, eval_gold = read_queries(eval_data, **columns, known={d.id for d in docs})
        doc_texts = [d.text for d in docs]
        rows = {d.id: i for i, d in enumerate(docs)}
        keep = [q for q, ids in enumerate(eval_gold) if ids & set(rows)]
        targets = [{rows[i] for i in eval_gold[q] if i in rows} for q in keep]

        def evaluate(encoder: Any) -> float:
            embedder.encoder = encoder
            q = embedder.encode([eval_texts[i] for i in keep]).reshape(len(keep), -1)
            d = embedder.encode(doc_texts).reshape(len(doc_texts), -1)
            return retrieval_metrics(q @ d.T, targets)["mrr_at_10"]

    encoder, history, _ = tune_encoder(
        shared, a, b, None, config, evaluate, progress, metric_name="mrr@10",
        # the queries are ranked against every document: they count too
        eval_key=content_digest((eval_texts, eval_gold, [(d.id, d.text) for d in docs]))
        if evaluate is not None else None)
    manifest = tuned_manifest(shared, encoder, {}, config)
    return Embedder(backbone=shared, manifest=manifest, encoder=encoder), history.to_dict()


def load(directory: Path, manifest: Manifest, *, backbone: Any = None, device: str = "cpu",
         dtype: str | None = None, merge_adapter: bool = False) -> Searcher:
    shared = load_backbone(directory, manifest, backbone, device, dtype)
    embedder = Embedder(backbone=shared, manifest=_embedder_manifest(manifest),
                        encoder=load_adapter(directory, manifest, shared, merge_adapter))
    return Searcher(embedder=embedder, index=_read_index(directory, manifest), manifest=manifest)


def from_graph(directory: Path, manifest: Manifest, runner: Any,
               tokenizer: _backbone.Backbone) -> Searcher:
    """A search function whose queries (and added documents) run on its ONNX export."""
    embedder = Embedder(backbone=tokenizer, manifest=_embedder_manifest(manifest), runner=runner)
    return Searcher(embedder=embedder, index=_read_index(directory, manifest), manifest=manifest)


def _embedder_manifest(manifest: Manifest) -> Manifest:
    return manifest.model_copy(update={"task": "embed", "options": {}})


def _read_index(directory: Path, manifest: Manifest) -> Index:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    vectors_file = directory / INDEX_DIR / "vectors.safetensors"
    docs_file = directory / INDEX_DIR / "documents.jsonl"
    if not vectors_file.is_file() or not docs_file.is_file():
        raise ArtifactError(f"{directory}: the index ({INDEX_DIR}/vectors.safetensors and "
                            f"{INDEX_DIR}/documents.jsonl) is missing. Save the function again.")
    try:
        vectors = load_file(str(vectors_file))["vectors"]
        docs = [Document(**json.loads(line)) for line in
                docs_file.read_text("utf-8").splitlines() if line.strip()]
    except (SafetensorError, KeyError, TypeError, ValueError, OSError) as err:
        raise ArtifactError(f"{directory / INDEX_DIR}: cannot read the index ({str(err)[:200]})."
                            " The artifact is damaged; save it again.") from None
    if len(docs) != len(vectors):
        raise ArtifactError(f"{directory / INDEX_DIR}: {len(docs)} documents but "
                            f"{len(vectors)} vectors. The artifact is damaged; save it again.")
    return Index(docs, vectors, manifest.options.get("backend", "auto"))
