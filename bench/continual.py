"""Benchmark: continual updates on Emotion — train on 4 labels, `update` with the other 2.

    python bench/continual.py                       # head, memory 20 and 100 per label
    python bench/continual.py --memory 0 20 --max-train 4000

Compared in the same run with training on all 6 labels at once (the same method, data and
seed). Goals (issue 4): old-label accuracy drops <= 3 points after the update; all-label
accuracy >= 95% of training on all 6. Features of the frozen backbone are cached in memory, so
every variant pays the encoder once.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import DATA, accuracy, print_header, read_tsv

import funcformer
from funcformer import MemoryCache

OLD = ["sadness", "joy", "anger", "fear"]
NEW = ["love", "surprise"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", nargs="+", type=int, default=[20, 100])
    parser.add_argument("--method", default="head")
    parser.add_argument("--max-train", type=int, default=0, help="0: all 16,000 rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_header()
    train = read_tsv(DATA / "emotion/train.tsv")
    if args.max_train:
        train = random.Random(args.seed).sample(train, args.max_train)
    dev = read_tsv(DATA / "emotion/validation.tsv")
    test = read_tsv(DATA / "emotion/test.tsv")
    old_train = [r for r in train if r[1] in OLD]
    new_train = [r for r in train if r[1] in NEW]
    old_test = [r for r in test if r[1] in OLD]
    new_test = [r for r in test if r[1] in NEW]
    cache = MemoryCache()
    common = {"method": args.method, "seed": args.seed, "cache": cache, "progress": False}

    started = time.perf_counter()
    everything = funcformer.train("classify", train, eval_data=dev, **common)
    all_seconds = time.perf_counter() - started
    print(f"train: {len(old_train)} rows of {', '.join(OLD)}; update: {len(new_train)} rows of "
          f"{', '.join(NEW)}; test: {len(old_test)} old-label rows, {len(new_test)} new-label "
          f"rows; method {args.method}\n")
    print("| system | memory / label | old-label acc. before | old-label acc. after | drop "
          "(points) | new-label acc. | all-label acc. | vs all-at-once | update s |")
    print("|---|---|---|---|---|---|---|---|---|")
    all_acc = accuracy(everything, test)
    print(f"| all 6 labels at once | - | - | {accuracy(everything, old_test):.4f} | - | "
          f"{accuracy(everything, new_test):.4f} | {all_acc:.4f} | 1.000 | "
          f"{all_seconds:.1f} (train) |", flush=True)
    old_dev = [r for r in dev if r[1] in OLD]
    for memory in args.memory:
        base = funcformer.train("classify", old_train, eval_data=old_dev,
                                memory=memory or None, **common)
        before = accuracy(base, old_test)
        started = time.perf_counter()
        updated = base.update(new_train, eval_data=dev, progress=False)
        seconds = time.perf_counter() - started
        after = accuracy(updated, old_test)
        total = accuracy(updated, test)
        print(f"| funcformer update | {memory} | {before:.4f} | {after:.4f} | "
              f"{100 * (before - after):.2f} | {accuracy(updated, new_test):.4f} | {total:.4f} | "
              f"{total / all_acc:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
