"""Benchmark: continual updates of a multi-label function — AG News texts of one or two topics.

    python bench/continual_multilabel.py                  # 3 seeds, memory 20
    python bench/continual_multilabel.py --seeds 1 --rows 200

Each row joins one or two AG News descriptions of different topics and is labelled with those
topics ('Business|World'). v1 learns World and Sports (`head`, `memory=20`); `update` adds
Business and Sci/Tech from rows about those two only, with an eval set of all four topics
(which also tunes the thresholds). Compared in the same run with one function trained on both
sets of rows at once (same eval set). Scored on other rows of the test split: micro-F1 over all
labels, and over the old labels (v1 before the update, the updated function after). There is
no multi-label dataset among the shared benchmarks, hence these composed texts.
"""

from __future__ import annotations

import argparse
import random
import statistics

from _common import DATA, print_header, read_tsv

import funcformer
from funcformer import MemoryCache

OLD = ["Sports", "World"]
NEW = ["Business", "Sci/Tech"]


def compose(source: list[tuple[str, str]], labels: list[str], n: int,
            seed: int) -> list[tuple[str, str]]:
    """`n` rows alternating one topic and two, texts drawn from `source` by label."""
    rng = random.Random(seed)
    by_label = {label: [text for text, y in source if y == label] for label in labels}
    rows = []
    for i in range(n):
        chosen = sorted(rng.sample(labels, 1 + i % 2))
        rows.append((" ".join(rng.choice(by_label[label]) for label in chosen),
                     "|".join(chosen)))
    return rows


def micro_f1(fn: funcformer.Function, rows: list[tuple[str, str]], keep: set[str]) -> float:
    """micro-F1 of `fn` on `rows`, counting only the labels in `keep`."""
    predicted = [set(result.labels) & keep for result in fn([text for text, _ in rows])]
    gold = [set(label.split("|")) & keep for _, label in rows]
    hits = sum(len(g & p) for g, p in zip(gold, predicted, strict=True))
    total = sum(len(g) + len(p) for g, p in zip(gold, predicted, strict=True))
    return 2 * hits / total if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=400, help="training rows, v1 and update each")
    parser.add_argument("--memory", type=int, default=20)
    args = parser.parse_args()
    print_header()
    train = read_tsv(DATA / "ag_news/train_subset_description_only.tsv")
    test = read_tsv(DATA / "ag_news/test_description_only.tsv")
    half = len(test) // 2  # the eval set and the scored rows come from different halves
    cache = MemoryCache()
    print("| seed | v1 old labels | updated: old labels | updated: all | all at once: all |")
    print("|---|---|---|---|---|")
    results: dict[str, list[float]] = {"before": [], "old": [], "all": [], "once": []}
    for seed in range(args.seeds):
        first = compose(train, OLD, args.rows, 10 * seed)
        second = compose(train, NEW, args.rows, 10 * seed + 1)
        check = compose(test[:half], OLD + NEW, 600, 10 * seed + 2)
        scored = compose(test[half:], OLD + NEW, 600, 10 * seed + 3)
        v1 = funcformer.train("classify", first, method="head", memory=args.memory, seed=seed,
                              cache=cache, progress=False)
        v2 = v1.update(second, eval_data=check, progress=False)
        once = funcformer.train("classify", first + second, eval_data=check, method="head",
                                seed=seed, cache=cache, progress=False)
        everything = set(OLD + NEW)
        row = {"before": micro_f1(v1, scored, set(OLD)), "old": micro_f1(v2, scored, set(OLD)),
               "all": micro_f1(v2, scored, everything), "once": micro_f1(once, scored, everything)}
        for key, value in row.items():
            results[key].append(value)
        print(f"| {seed} | {row['before']:.4f} | {row['old']:.4f} | {row['all']:.4f} | "
              f"{row['once']:.4f} |", flush=True)
    means = {key: statistics.mean(values) for key, values in results.items()}
    print(f"| mean | {means['before']:.4f} | {means['old']:.4f} | {means['all']:.4f} | "
          f"{means['once']:.4f} |")
    print(f"\nupdated vs all at once: {100 * (means['all'] - means['once']):+.2f} points of "
          f"micro-F1; old labels {100 * (means['old'] - means['before']):+.2f} after the update")


if __name__ == "__main__":
    main()
