"""Benchmark: a 10:1 imbalanced SST-2 — plain cross-entropy vs class weights vs focal loss.

    python bench/imbalance.py                        # head (seconds after the features)
    python bench/imbalance.py --methods head lora    # lora too (minutes per variant on CPU)

2,000 training rows drawn (seeded) from SST-2 train: 1,818 of the majority label and 182 of
the other; macro-F1 on the balanced dev set (872). Every variant trains with the library's
defaults plus one option, in the same run, on the same rows and seed: once with the default
early stopping (on 10% held out of the imbalanced training rows), once training every epoch
(`eval_fraction=0`), so a gain is not just an artefact of when training stopped. The frozen
backbone's features are cached in memory, so `head` variants pay the encoder once.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import DATA, print_header, read_tsv

import funcformer
from funcformer import MemoryCache

VARIANTS = {
    "cross-entropy": {},
    "class_weight='balanced'": {"class_weight": "balanced"},
    "loss='focal'": {"loss": "focal"},
    "focal + balanced": {"loss": "focal", "class_weight": "balanced"},
}


def imbalanced(rows: list[tuple[str, str]], size: int, ratio: float, minority: str,
               seed: int) -> list[tuple[str, str]]:
    """`size` rows, `ratio` majority rows for each minority row, seeded."""
    rng = random.Random(seed)
    few = round(size / (ratio + 1))
    major = [r for r in rows if r[1] != minority]
    minor = [r for r in rows if r[1] == minority]
    picked = rng.sample(major, size - few) + rng.sample(minor, few)
    rng.shuffle(picked)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["head"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--ratio", type=float, default=10.0)
    parser.add_argument("--minority", default="1", help="SST-2 label made rare (1: positive)")
    parser.add_argument("--metric", default=None, help="early-stopping metric; default: the "
                        "library's")
    parser.add_argument("--stopping", nargs="+", default=["held-out", "none"],
                        choices=["held-out", "none"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_header()
    train = imbalanced(read_tsv(DATA / "sst2/train.tsv"), args.size, args.ratio, args.minority,
                       args.seed)
    dev = read_tsv(DATA / "sst2/dev.tsv")
    count = sum(y == args.minority for _, y in train)
    print(f"train: {len(train)} rows, {len(train) - count} majority / {count} minority (label "
          f"{args.minority}); dev: {len(dev)} rows, {sum(y == args.minority for _, y in dev)} "
          f"of the minority label; seed {args.seed}\n")
    print("| method | early stopping | loss option | macro-F1 | accuracy | minority F1 | "
          "minority recall | majority recall | epochs kept | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cache = MemoryCache()
    extra = {"metric": args.metric} if args.metric else {}
    for method in args.methods:
        for stopping in args.stopping:
            held = {} if stopping == "held-out" else {"eval_fraction": 0.0}
            for name in args.variants:
                started = time.perf_counter()
                fn = funcformer.train("classify", train, method=method, seed=args.seed,
                                      cache=cache, progress=False, **extra, **held,
                                      **VARIANTS[name])
                seconds = time.perf_counter() - started
                _row(fn, dev, args.minority, f"{method} | {stopping} | {name}", seconds, cache)


def _row(fn: funcformer.Function, dev: list[tuple[str, str]], minority: str, what: str,
         seconds: float, cache: MemoryCache) -> None:
    # fn.evaluate(dev), with the frozen backbone's dev features from the cache (a tuned
    # encoder's are never cached)
    logits = fn.logits([t for t, _ in dev], cache=cache)
    m = fn.task.metrics([y for _, y in dev], fn.task.predicted_labels(logits))
    per = m["per_class"]
    major = next(k for k in per if k != minority)
    kept = fn.manifest.training["history"]["best_epoch"]
    print(f"| {what} | {m['macro_f1']:.4f} | {m['accuracy']:.4f} | {per[minority]['f1']:.4f} | "
          f"{per[minority]['recall']:.4f} | {per[major]['recall']:.4f} | {kept} | "
          f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
