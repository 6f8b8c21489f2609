"""Thread safety: shared functions, backbones, tokenizers and indexes called from many threads
at once (a web app's thread pool, the server's batcher) give the single-threaded results."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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

