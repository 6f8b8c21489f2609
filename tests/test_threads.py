"""Thread safety: shared functions, backbones, tokenizers and indexes called from many threads
at once (a web app's thread pool, the server's batcher) give the single-threaded results."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import funcformer
from funcformer import _backbone


@pytest.fixture(autouse=True)
def frequent_switches() -> Iterator[None]:
    """Switch threads every microsecond: a race then shows within a few hundred calls."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def run_threads(work: Callable[[int], None], threads: int = 8) -> None:
    """Run work(i) for i in range(threads) at once; re-raise the first exception."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert not any(t.is_alive() for t in pool), "a thread is stuck (deadlock?)"
    if errors:
        raise errors[0]


def test_one_tokenizer_with_other_limits_in_other_threads(tiny_backbone: Path) -> None:
    # a fast tokenizer holds its truncation settings: each call set its own, then encoded
    # with whatever another thread had set meanwhile (a 64-token limit cut at 8)
    backbone = _backbone.load(tiny_backbone)
    text = "the food was " + "very " * 30 + "good"
    limits = (8, 16, 64)
    want = {n: backbone.tokenize([text], n).input_ids for n in limits}
    wrong: list[int] = []

    def work(i: int) -> None:
        limit = limits[i % len(limits)]
        for _ in range(150):
            if backbone.tokenize([text], limit).input_ids != want[limit]:
                wrong.append(limit)

    run_threads(work, threads=6)
    assert not wrong


def _docs(prefix: str, n: int, **metadata: object) -> list[dict[str, object]]:
    from conftest import NOUNS, POSITIVE

    return [{"id": f"{prefix}{i}", "text": f"the {NOUNS[i % 10]} was {POSITIVE[i % 10]}",
             "metadata": {"lang": "en", **metadata}} for i in range(n)]


@pytest.mark.parametrize("change", ["add", "remove"])
def test_a_search_reads_one_index_while_another_thread_changes_it(
        tiny_backbone: Path, change: str) -> None:
    # add/remove replaced the documents, then the vectors: a search between the two failed
    # (IndexError: boolean index did not match) or named another row's document
    fn = funcformer.train("search", _docs("d", 20), backbone=tiny_backbone)
    texts = {doc["id"]: doc["text"] for doc in _docs("d", 20) + _docs("new", 3)}
    inside, changed = threading.Event(), threading.Event()
    found: list[Any] = []

    def where(metadata: dict[str, Any]) -> bool:  # the first call waits for the change
        if not inside.is_set():
            inside.set()
            assert changed.wait(10)
        return True

    def work(i: int) -> None:
        if i == 1:
            found.extend(fn.search("the food was great", k=30, filter=where))
            return
        assert inside.wait(10)
        fn.add(_docs("new", 3)) if change == "add" else fn.remove(["d0", "d1", "d2"])
        changed.set()

    run_threads(work, threads=2)
    assert len(found) == 20 and all(hit.text == texts[hit.id] for hit in found)
    fn.add(_docs("last", 1, newest=True))  # a filter's fields are those of the newest index
    assert [hit.id for hit in fn.search("x", filter={"newest": True})] == ["last0"]


def test_adds_from_many_threads_keep_every_document(tiny_backbone: Path) -> None:
    fn = funcformer.train("search", _docs("d", 4), backbone=tiny_backbone)
    for _ in range(5):
        before = len(fn.index)
        run_threads(lambda i: fn.add([{"text": f"the food was great {i}"}]), threads=8)
        assert len(fn.index) == before + 8  # both read one index: one's documents were lost
        assert len({document.id for document in fn.index.documents}) == len(fn.index)


def test_engine_caches_a_search_under_the_digest_it_ran_with(tiny_backbone: Path) -> None:
    # the Engine read the digest again after predicting: a search on the old index, while
    # another thread removed a document, was cached under the new digest, and every later
    # call answered with the removed document
    fn = funcformer.train("search", _docs("d", 5), backbone=tiny_backbone)
    engine = funcformer.Engine({"faq": fn})
    encode, inside, changed = fn.embedder.encode, threading.Event(), threading.Event()

    def slow_encode(texts: Any) -> Any:  # the engine's call waits here for the remove
        if threading.current_thread().name == "engine":
            inside.set()
            assert changed.wait(10)
        return encode(texts)

    fn.embedder.encode = slow_encode
    query, errors = "the food was great", []
    best = fn(query, k=1)[0].id

    def call() -> None:
        try:
            engine("faq", query)
        except BaseException as err:  # re-raised below: a thread's failure was swallowed
            errors.append(err)

    thread = threading.Thread(target=call, name="engine")
    thread.start()
    assert inside.wait(10)
    fn.remove([best])
    changed.set()
    thread.join(10)
    assert not thread.is_alive() and not errors, errors
    assert best not in [hit.id for hit in engine("faq", query)]


def test_saves_of_one_path_from_many_threads(tiny_backbone: Path, tmp_path: Path) -> None:
    # between a save's two renames another save moved the directory away or put its own
    # there: FileNotFoundError or "Directory not empty", and a stray old copy was left
    from conftest import make_reviews

    fn = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method="head",
                          epochs=1, progress=False)
    run_threads(lambda i: [fn.save(tmp_path / "fn") for _ in range(8)], threads=6)
    assert [p.name for p in tmp_path.iterdir()] == ["fn"]
    assert funcformer.load(tmp_path / "fn").digest == fn.digest


def test_tag_calls_while_explaining_on_one_backbone(tiny_backbone: Path) -> None:
    # tag ran the shared encoder without the backbone's lock: while explain's hooks were on
    # its embedding layer, a tag call got explain's inputs (and explain failed on a size
    # mismatch: 'The size of tensor a (18) must match the size of tensor b (15)')
    pytest.importorskip("captum")
    from conftest import make_reviews
    from test_tag import toy_rows

    classify = funcformer.train("classify", make_reviews(), backbone=tiny_backbone,
                                method="head", epochs=1, progress=False)
    tag = funcformer.train("tag", toy_rows(20), backbone=tiny_backbone, method="head",
                           epochs=1, progress=False)
    texts = ["the food was great", "the staff was very rude indeed", "the room was dirty"]
    want = [tag(text) for text in texts]
    done = threading.Event()
    wrong: list[str] = []

    def work(i: int) -> None:
        if i == 0:
            try:
                for _ in range(6):
                    classify.explain("the battery was very very slow", method="ig", steps=8)
            finally:
                done.set()
        while not done.is_set():
            wrong.extend(t for t, w in zip(texts, want, strict=True) if tag(t) != w)

    run_threads(work, threads=4)
    assert not wrong
