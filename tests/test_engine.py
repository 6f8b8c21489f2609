"""The Engine: one backbone pass for many functions, input order, result and feature caches."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import funcformer
from funcformer import Engine, FuncformerError, MemoryCache, SQLiteCache, TaskError
from funcformer import _backbone as bb

TEXTS = ["the food was great", "slow", "the staff were rude and the room was dirty",
         "the food was great", "lovely hotel"]


@pytest.fixture(scope="module")
def functions(tiny_backbone: Path) -> dict[str, funcformer.Function]:
    from conftest import make_reviews

    head = {f"head{i}": funcformer.train("classify", make_reviews(seed=i), backbone=tiny_backbone,
                                         epochs=2, seed=i, method="head", progress=False)
            for i in range(3)}
    full = funcformer.train("classify", make_reviews(), backbone=tiny_backbone, method="full",
                            epochs=1, progress=False)
    return {**head, "full": full}


@pytest.fixture()
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts encoder passes (calls of Backbone._embed) and the texts each computed."""
    calls: list[int] = []
    original = bb.Backbone._embed

    def counting(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(bb.Backbone, "_embed", counting)
    return calls


def test_results_equal_each_function_run_alone_in_input_order(functions: dict) -> None:
    engine = Engine(functions, cache=None)
    out = engine.run(list(functions), TEXTS)
    for name, fn in functions.items():
        assert [p.label for p in out[name]] == [p.label for p in fn(TEXTS)]
        expected = [p.scores for p in fn(TEXTS)]
        for got, want in zip(out[name], expected, strict=True):
            assert got.scores == pytest.approx(want, abs=1e-6)


def test_head_functions_share_one_backbone_pass(functions: dict, passes: list[int]) -> None:
    engine = Engine(functions, cache=None)
    engine.run(["head0", "head1", "head2"], TEXTS)
    assert passes == [4]  # one pass, each distinct text once
    passes.clear()
    engine.run(["head0", "full"], TEXTS)
    assert len(passes) == 2  # the fine-tuned encoder needs its own pass


def test_repeated_calls_hit_the_result_cache(functions: dict, passes: list[int]) -> None:
    engine = Engine(functions, cache=MemoryCache())
    first = engine.run(["head0", "head1"], TEXTS)
    assert engine.cache is not None and engine.cache.misses > 0
    passes.clear()
    hits = engine.cache.hits
    again = engine.run(["head0", "head1"], TEXTS)
    assert passes == []
    assert engine.cache.hits == hits + 2 * len(TEXTS)
    assert again == first


def test_new_functions_reuse_cached_features(functions: dict, passes: list[int]) -> None:
    engine = Engine({"head0": functions["head0"]}, cache=MemoryCache())
    engine.run("head0", TEXTS)
    passes.clear()
    engine.add("head1", functions["head1"])
    engine.run("head1", TEXTS)  # results not cached yet, features are
    assert passes == []


def test_a_changed_function_never_reads_stale_results(functions: dict,
                                                      tiny_backbone: Path) -> None:
    from conftest import make_reviews

    cache = MemoryCache()
    engine = Engine({"f": functions["head0"]}, cache=cache)
    before = engine.run("f", TEXTS)["f"]
    flipped = [(t, "negative" if y == "positive" else "positive") for t, y in make_reviews()]
    retrained = funcformer.train("classify", flipped, backbone=tiny_backbone, epochs=2,
                                 method="head", progress=False)
    assert retrained.digest != functions["head0"].digest
    engine.add("f", retrained)
    after = engine.run("f", TEXTS)["f"]
    for got, want in zip(after, retrained(TEXTS), strict=True):
        assert got.label == want.label and got.scores == pytest.approx(want.scores, abs=1e-6)
    assert [p.scores for p in after] != [p.scores for p in before]


def test_call_shapes_and_errors(functions: dict) -> None:
    engine = Engine(functions)
    assert engine("head0", "lovely hotel") == engine("head0", ["lovely hotel"])[0]
    with pytest.raises(TaskError, match=r"Unknown function.*nope"):
        engine.run(["nope"], TEXTS)
    with pytest.raises(funcformer.DataError, match="index 1"):
        engine.run("head0", ["fine", "  "])


def test_from_directory_loads_each_artifact(functions: dict, tmp_path: Path) -> None:
    for name in ("head0", "full"):
        functions[name].save(tmp_path / name)
    (tmp_path / "not-a-function").mkdir()
    engine = Engine.from_directory(tmp_path)
    assert engine.names == ["full", "head0"]
    for got, want in zip(engine("head0", TEXTS), functions["head0"](TEXTS), strict=True):
        assert got.label == want.label and got.scores == pytest.approx(want.scores, abs=1e-6)


def test_training_reuses_the_feature_cache(tiny_backbone: Path, passes: list[int]) -> None:
    from conftest import make_reviews

    cache = MemoryCache()
    rows = make_reviews()
    funcformer.train("classify", rows, backbone=tiny_backbone, epochs=1, cache=cache,
                     method="head", progress=False)
    computed = sum(passes)
    passes.clear()
    funcformer.train("classify", rows, backbone=tiny_backbone, epochs=1, seed=5, cache=cache,
                     method="head", progress=False)
    assert computed > 0 and sum(passes) == 0


def test_a_function_removed_during_a_call_finishes_that_call(functions: dict) -> None:
    # another thread's remove() between the name check and the head: KeyError
    class Removing(MemoryCache):
        def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
            engine.remove("f")
            return super().get_many(namespace, keys)

    engine = Engine({"f": functions["head0"]}, cache=Removing())
    expected = Engine({"f": functions["head0"]}, cache=None).run("f", TEXTS)["f"]
    assert engine.run("f", TEXTS)["f"] == expected
    assert engine.names == []


def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(max_items=2)
    cache.put_many("ns", [("a", b"1"), ("b", b"2")])
    cache.get_many("ns", ["a"])
    cache.put_many("ns", [("c", b"3")])
    assert cache.get_many("ns", ["a", "b", "c"]) == [b"1", None, b"3"]
    assert cache.get_many("other", ["a"]) == [None]


def _writer(path: str, start: int) -> None:
    cache = SQLiteCache(path)
    for i in range(start, start + 200, 10):
        cache.put_many("ns", [(f"text {j}", str(j).encode()) for j in range(i, i + 10)])
        cache.get_many("ns", [f"text {j}" for j in range(0, 400, 7)])


def test_sqlite_cache_is_shared_between_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, s)) for s in (0, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    values = SQLiteCache(path).get_many("ns", [f"text {j}" for j in range(400)])
    assert values == [str(j).encode() for j in range(400)]


class _LockedFor:
    """A connection whose journal-mode switch finds the file locked `times` times."""

    def __init__(self, times: int) -> None:
        self.times, self.calls = times, 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.times:
            raise sqlite3.OperationalError("database is locked")


def test_sqlite_cache_waits_for_another_process_switching_to_wal(tmp_path: Path) -> None:
    # SQLite answers "locked" at once (no busy wait) while another process opens a new file.
    cache = SQLiteCache(tmp_path / "cache.db", timeout=5.0)
    db = _LockedFor(3)
    cache._wal(db)  # type: ignore[arg-type]
    assert db.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        SQLiteCache(tmp_path / "other.db", timeout=0.05)._wal(_LockedFor(10**6))  # type: ignore[arg-type]


def test_a_file_that_is_no_cache_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just notes\n" * 100)
    with pytest.raises(FuncformerError, match=r"cannot use .*notes\.txt as a cache.*Fix"):
        SQLiteCache(path)
    assert path.read_text().startswith("not a database")  # left as it was


@pytest.mark.parametrize("schema", ["CREATE TABLE cache (k TEXT, v TEXT)",
                                    "CREATE TABLE users (name TEXT)"])
def test_an_sqlite_file_of_another_schema_is_refused_untouched(tmp_path: Path,
                                                               schema: str) -> None:
    # it failed at the first call ("no such column: key"), or added a table to the database
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute(schema)
    with pytest.raises(FuncformerError, match=r"cannot use .*app\.db as a cache: .*Fix: give"):
        SQLiteCache(path)
    with sqlite3.connect(path) as db:
        assert len(db.execute("SELECT * FROM sqlite_master").fetchall()) == 1


def test_a_full_disk_under_the_cache_names_its_fix() -> None:
    # SQLite's "database or disk is full" (a write, so a warning) was told to give a new path
    from funcformer._cache import _fix

    assert _fix("database or disk is full", 30.0).startswith("free space on its disk")


def test_a_directory_is_refused_as_a_cache(tmp_path: Path) -> None:
    with pytest.raises(FuncformerError, match=r"is a directory\. Fix: .*cache\.sqlite"):
        SQLiteCache(tmp_path)


def test_a_cache_that_fails_later_is_computed_around(functions: dict, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # damaged after it was opened (or read-only, or a full disk): every call raised
    # sqlite3.DatabaseError, an internal error in the CLI and a 500 from the server
    path = tmp_path / "cache.db"
    cache = SQLiteCache(path)
    cache.put_many("ns", [(f"text {i}", bytes(300)) for i in range(2000)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as handle:  # every page but the first (the schema)
        handle.seek(4096)
        handle.write(b"\xff" * (path.stat().st_size - 4096))
    engine = Engine({"f": functions["head0"]}, cache=cache)
    with caplog.at_level("WARNING", logger="funcformer"):
        got = engine.run("f", TEXTS)["f"]
    assert got == Engine({"f": functions["head0"]}, cache=None).run("f", TEXTS)["f"]
    assert "cannot read the cache" in caplog.text and "cache.db" in caplog.text
    assert cache.get_many("ns", ["text 1"]) == [None]


def test_sqlite_cache_persists_features(functions: dict, tmp_path: Path,
                                        passes: list[int]) -> None:
    path = tmp_path / "cache.db"
    first = Engine(functions, cache=SQLiteCache(path)).run("head0", TEXTS)["head0"]
    passes.clear()
    fresh = Engine(functions, cache=str(path))
    assert fresh.run("head0", TEXTS)["head0"] == first
    assert passes == []
    backbone = functions["head0"].backbone
    cached = np.stack([np.frombuffer(v, dtype=np.float32) for v in SQLiteCache(path).get_many(
        backbone.feature_namespace(), TEXTS[:2])])
    np.testing.assert_allclose(cached, backbone.embed(TEXTS[:2])[0], atol=1e-6)
    assert torch.get_num_threads() >= 1


def test_feature_cache_keeps_dtypes_apart(tiny_backbone: Path) -> None:
    fp32, bf16 = bb.load(tiny_backbone), bb.load(tiny_backbone, dtype="bfloat16")
    assert fp32.digest == bf16.digest
    assert fp32.feature_namespace() != bf16.feature_namespace()


def test_feature_cache_keeps_token_limits_apart(tiny_backbone: Path) -> None:
    """A text cut at 8 tokens is another input than the whole text: one shared cache must not
    answer the one with the other's features."""
    backbone, cache = bb.load(tiny_backbone), MemoryCache()
    long = [" ".join(["the food was great and the room was clean"] * 4)]
    whole, _ = backbone.embed(long, cache=cache)
    cut, truncated = backbone.embed(long, max_length=8, cache=cache)
    assert truncated == 1 and not np.allclose(cut, whole, atol=1e-3)
    np.testing.assert_allclose(cut, backbone.embed(long, max_length=8)[0], atol=1e-6)
    np.testing.assert_allclose(backbone.embed(long, cache=cache)[0], whole, atol=1e-6)


def test_result_cache_keeps_dtypes_apart(functions: dict, tmp_path: Path) -> None:
    """One artifact loaded in float32 and in float16 has one digest: the result cache was keyed
    by it alone, so whichever ran first answered for both (features were kept apart)."""
    path = functions["head0"].save(tmp_path / "fn")
    search = funcformer.train("search", TEXTS[:3], backbone=functions["head0"].backbone.path)
    faq = search.save(tmp_path / "faq")
    engine = Engine({"fp32": funcformer.load(path), "faq": funcformer.load(faq)},
                    cache=MemoryCache())
    float32 = {name: engine(name, TEXTS) for name in ["fp32", "faq"]}  # cached first
    for dtype in ("float16", "bfloat16"):
        engine.add("half", funcformer.load(path, dtype=dtype))
        engine.add("faq-half", funcformer.load(faq, dtype=dtype))
        for name, was in (("half", "fp32"), ("faq-half", "faq")):
            got = [r.to_dict() for r in engine(name, TEXTS)]
            assert got != [r.to_dict() for r in float32[was]], (dtype, name)  # its own


def test_result_cache_keeps_onnx_graphs_apart(functions: dict, tmp_path: Path) -> None:
    """A function run on torch, on its ONNX export and on its int8 export shares one digest:
    a shared result cache answered each from whichever ran first."""
    pytest.importorskip("onnxruntime")
    from funcformer._engine import _namespace

    fn = functions["head0"]
    path = fn.save(tmp_path / "fn")
    fn.export_onnx(path)
    fn.export_onnx(path, int8=True)
    loads = [funcformer.load(path, runtime=r) for r in ("torch", "onnx", "onnx-int8")]
    assert len({_namespace(f) for f in loads}) == 3
    assert _namespace(loads[0]) == f"results:{fn.digest}"  # float32 torch keys as before
    engine = Engine({"torch": loads[0]}, cache=MemoryCache())
    first = [r.to_dict() for r in engine("torch", TEXTS)]
    engine.add("int8", loads[2])
    assert [r.to_dict() for r in engine("int8", TEXTS)] != first  # its own, not the cached


def test_other_tasks_run_beside_classifiers_and_are_cached(functions: dict, tiny_backbone: Path,
                                                          passes: list[int]) -> None:
    from funcformer._tasks.embed import from_backbone

    faq = funcformer.train("search", ["the food was great", "the room was dirty"],
                           backbone=tiny_backbone)
    engine = Engine({"head0": functions["head0"], "faq": faq,
                     "emb": from_backbone(tiny_backbone)}, cache=MemoryCache())
    out = engine.run(["head0", "faq", "emb"], TEXTS)
    assert [p.label for p in out["head0"]] == [p.label for p in functions["head0"](TEXTS)]
    for got, want in zip(out["faq"], faq(TEXTS), strict=True):  # batching rounds differently
        assert [h.id for h in got] == [h.id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    for got, want in zip(out["emb"], engine.functions["emb"](TEXTS), strict=True):
        assert got.vector == pytest.approx(want.vector, abs=1e-5)
    passes.clear()
    assert engine.run(["faq", "emb"], TEXTS) == {"faq": out["faq"], "emb": out["emb"]}
    assert passes == []  # every result came from the cache
    with pytest.raises(funcformer.DataError):
        engine.run(["faq"], [""])
