"""Caches of computed values keyed by (namespace, text): in memory (LRU) or in SQLite.

The namespace says what computed the value, so a changed function or backbone never reads a
stale entry: results use the function's digest, features the backbone's weights digest with
its pooling and token limit. Values are bytes; callers encode and decode them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from ._errors import FuncformerError, TaskError

log = logging.getLogger("funcformer")


class Cache(ABC):
    """Interface and hit/miss counters shared by both stores.

    >>> cache = MemoryCache(max_items=2)
    >>> cache.put_many("ns", [("a", b"1")]); cache.get_many("ns", ["a", "b"])
    [b'1', None]
    >>> cache.hits, cache.misses
    (1, 1)
    """

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self._counter_lock = threading.Lock()

    def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        values = self._get(namespace, keys)
        found = sum(v is not None for v in values)
        with self._counter_lock:
            self.hits += found
            self.misses += len(values) - found
        return values

    def put_many(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> None:
        if items:
            self._put(namespace, items)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    @abstractmethod
    def _get(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """The stored value for each key, None where there is none."""

    @abstractmethod
    def _put(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> None:
        """Store (key, value) pairs, replacing old values."""


class MemoryCache(Cache):
    """A thread-safe least-recently-used cache holding at most `max_items` values.

    >>> engine = funcformer.Engine({"sentiment": fn}, cache=MemoryCache(10_000))  # doctest: +SKIP
    """

    def __init__(self, max_items: int = 100_000) -> None:
        super().__init__()
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def _get(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        with self._lock:
            for key in keys:
                value = self._items.get((namespace, key))
                if value is not None:
                    self._items.move_to_end((namespace, key))
                out.append(value)
        return out

    def _put(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> None:
        with self._lock:
            for key, value in items:
                self._items[(namespace, key)] = value
                self._items.move_to_end((namespace, key))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)


class SQLiteCache(Cache):
    """A cache in an SQLite file (WAL mode): persists across runs, shared between processes.

    >>> funcformer.Engine.from_directory("fns", cache=SQLiteCache("c.db"))  # doctest: +SKIP

    Texts are stored as their sha256, so keys stay small whatever the text's length.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path)
        self._timeout = timeout
        self._local = threading.local()
        self._warned: set[str] = set()
        if self.path.is_dir():
            raise FuncformerError(f"cannot use {self.path} as a cache: it is a directory. Fix: "
                                  f"give a file's path, e.g. {self.path / 'cache.sqlite'}.")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                _check_tables(db)
                db.execute("CREATE TABLE IF NOT EXISTS cache (namespace TEXT NOT NULL, "
                           "key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (namespace, "
                           "key)) WITHOUT ROWID")
                _check_columns(db)
        except (sqlite3.Error, OSError) as error:
            reason = str(error) if isinstance(error, sqlite3.Error) else error.strerror or error
            raise FuncformerError(f"cannot use {self.path} as a cache: {reason}. Fix: "
                                  f"{_fix(str(reason), timeout)}.") from error

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread; sqlite3 objects are not shareable
            db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            try:
                self._wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                db.close()
                raise
            self._local.db = db
        return db

    def _wal(self, db: sqlite3.Connection) -> None:
        """Put the file in WAL mode. Switching needs the file to itself, and while another
        process opens or switches it SQLite answers "database is locked" at once instead of
        waiting out the busy timeout (four processes opening a new cache together failed in
        2 of 200 tries), so the switch is retried until the timeout."""
        deadline, pause = time.monotonic() + self._timeout, 0.005
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.2)

    def _get(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        hashed = [_hash(k) for k in keys]
        found: dict[bytes, bytes] = {}
        try:
            db = self._connect()
            for start in range(0, len(hashed), 500):  # SQLite caps bound parameters per query
                chunk = hashed[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, value FROM cache WHERE namespace = ? AND key "
                                  f"IN ({marks})", [namespace, *chunk])
                found.update(rows.fetchall())
        except sqlite3.Error as error:  # a damaged file: computing again is still right
            self._warn("read", error)
            return [None] * len(keys)
        return [found.get(h) for h in hashed]

    def _put(self, namespace: str, items: Sequence[tuple[str, bytes]]) -> None:
        try:
            db = self._connect()
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?)",
                               [(namespace, _hash(k), v) for k, v in items])
        except sqlite3.Error as error:  # read-only, disk full, damaged: the results stand
            self._warn("write", error)

    def _warn(self, action: str, error: sqlite3.Error) -> None:
        """Say once per action that the cache failed; calls go on without it (a cache only
        saves time), where raising would fail every call, or every request of a server."""
        if action not in self._warned:
            self._warned.add(action)
            log.warning("cannot %s the cache %s (%s); computing without it. Fix: %s.", action,
                        self.path, error, _fix(str(error), self._timeout))


def _check_tables(db: sqlite3.Connection) -> None:
    """Refuse an SQLite file that holds anything but a cache (another program's database)."""
    found = db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
                       "AND name NOT LIKE 'sqlite_%'").fetchall()
    if found not in ([], [("table", "cache")]):
        names = ", ".join(name for _, name in found)
        raise sqlite3.DatabaseError(f"an SQLite database of something else (tables: {names})")


def _check_columns(db: sqlite3.Connection) -> None:
    columns = [row[1] for row in db.execute("PRAGMA table_info(cache)")]
    if columns != ["namespace", "key", "value"]:
        raise sqlite3.DatabaseError(f"its table 'cache' has columns {', '.join(columns)}, not "
                                    "namespace, key, value")


def _fix(reason: str, timeout: float) -> str:
    """What to do about an SQLite error (or OSError) with this message."""
    reason = reason.lower()
    if "locked" in reason:
        return (f"another process has held it for over {timeout:g} s: let it finish, or give "
                "each process its own cache file")
    if "readonly" in reason or "unable to open" in reason or "permission" in reason:
        return "make the file and its directory writable, or give another path"
    if "full" in reason:
        return "free space on its disk, or give a path on another disk"
    damaged = " (a damaged cache may be deleted: it holds only what is computed again)"
    return ("give the path of a new file or of a cache funcformer wrote before"
            + (damaged if "malformed" in reason else ""))


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def open_cache(spec: Cache | str | Path | None) -> Cache | None:
    """None -> no cache; "memory" -> a MemoryCache; a path -> an SQLiteCache; a Cache as is."""
    if spec is None or isinstance(spec, Cache):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TaskError(f"cache must be 'memory', a file path or a cache object, got "
                        f"{spec!r}. Fix: e.g. cache='memory' or cache='features.sqlite'.")
    if str(spec) == "memory":
        return MemoryCache()
    return SQLiteCache(spec)
