"""Benchmark: active learning with `funcformer.suggest` vs labels chosen at random.

    python -u bench/active.py                                  # SST-2 and Emotion, 3 seeds
    python -u bench/active.py --datasets sst2 --seeds 1        # a reduced run
    python -u bench/active.py --seeds 10 --cache /tmp/f.sqlite  # gains with standard errors
    python -u bench/active.py --datasets cr ag_news trec --held-out --seeds 10  # more datasets

From a pool of 2,000 rows of each train split (labels hidden), both arms start from the same
`--start` random rows; then the random arm adds random rows and the active arm adds the rows
`suggest` picks for the function trained so far (given the labelled texts, `labelled=`; not
with --hide-labelled), up to 16, 32, 64 and 128 labels. The function
is a `head` on frozen all-MiniLM-L6-v2 features (computed once, cached), trained with the
library's defaults. Accuracy on SST-2 dev and Emotion test. Prints a table and draws the curve
(docs/images/active_learning.png). About 5 minutes on 2 CPUs (most of it computing features).

The gain column is the mean over seeds of active minus random (the arms of one seed share
their start, so the difference is paired), +- its standard error (sample standard deviation of
the per-seed differences / sqrt(seeds)), and in how many seeds active was ahead.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from _common import DATA, pool, print_header, read_tsv

import funcformer
from funcformer._cache import open_cache

SPLITS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"),
          "emotion": ("emotion/train.tsv", "emotion/test.tsv"),
          # Not in the default run; for choosing settings on more than two datasets.
          "cr": ("cr/train.tsv", "cr/test.tsv"),
          "ag_news": ("ag_news/train_subset_description_only.tsv",
                      "ag_news/test_description_only.tsv"),
          "trec": ("trec/train.tsv", "trec/test.tsv")}
DEFAULT_DATASETS = ("sst2", "emotion")
BUDGETS = (16, 32, 64, 128)
IMAGE = Path(__file__).resolve().parents[1] / "docs/images/active_learning.png"


def accuracy(fn: funcformer.Function, features: torch.Tensor, gold: list[str]) -> float:
    """Accuracy from the test set's cached features (the head alone runs)."""
    predicted = fn.task.predicted_labels(fn.apply_head(features))
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def curve(rows: list[tuple[str, str]], test_features: torch.Tensor, gold: list[str],
          seed: int, active: bool, args: argparse.Namespace, cache: object) -> list[float]:
    """Accuracy at each budget for one arm: `active` grows the labelled set with `suggest`."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    labelled = order[: args.start]
    out = []
    for budget in BUDGETS:
        while len(labelled) < budget:
            fn = funcformer.train("classify", [rows[i] for i in labelled], method="head",
                                  seed=seed, cache=cache, progress=False)
            want = min(budget - len(labelled), args.step)
            if active:
                taken = set(labelled)
                unlabelled = [i for i in range(len(rows)) if i not in taken]
                picks = funcformer.suggest(fn, [rows[i][0] for i in unlabelled], n=want,
                                           measure=args.measure, cache=cache, seed=seed,
                                           labelled=None if args.hide_labelled else
                                           [rows[i][0] for i in labelled], **args.options)
                labelled += [unlabelled[p.index] for p in picks]
            else:
                labelled += order[len(labelled): len(labelled) + want]
        fn = funcformer.train("classify", [rows[i] for i in labelled], method="head",
                              seed=seed, cache=cache, progress=False)
        out.append(accuracy(fn, test_features, gold))
    return out


def gain_cells(arms: dict[str, list[list[float]]], k: int) -> str:
    """'+1.23 | +1.23 +- 0.45, 7/10': mean gain in points, its standard error over the seeds
    (paired: both arms of a seed share the start) and how many seeds active won."""
    gains = [100 * (a[k] - r[k]) for a, r in zip(arms["active"], arms["random"], strict=True)]
    mean = statistics.mean(gains)
    error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    return f"{mean:+.2f} | {mean:+.2f} +- {error:.2f}, {sum(g > 0 for g in gains)}/{len(gains)}"


def _option(text: str) -> tuple[str, object]:
    import json

    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def draw(results: dict[str, dict[str, list[list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8))
    for axis, (name, arms) in zip(list(getattr(axes, "flat", [axes])), results.items(),
                                  strict=True):
        for arm, style in (("random", "o--"), ("active", "s-")):
            runs = arms[arm]
            means = [statistics.mean(r[k] for r in runs) for k in range(len(BUDGETS))]
            spread = [statistics.pstdev(r[k] for r in runs) for k in range(len(BUDGETS))]
            axis.errorbar(BUDGETS, means, yerr=spread, fmt=style, capsize=3,
                          label=f"{arm} ({len(runs)} seeds)")
        axis.set_xscale("log", base=2)
        axis.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
        axis.set_xlabel("labels")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{name}: suggest vs random (head on MiniLM)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--start", type=int, default=8, help="random labels both arms share")
    parser.add_argument("--step", type=int, default=16,
                        help="most labels suggested at once (then the function is retrained)")
    parser.add_argument("--measure", default="margin")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="another keyword of suggest (VALUE as JSON), e.g. start=16")
    parser.add_argument("--hide-labelled", action="store_true",
                        help="do not pass the labelled texts to suggest (labelled=)")
    parser.add_argument("--held-out", action="store_true",
                        help="score on 2,000 other train rows (not in the pool) instead of the "
                             "test split: for choosing settings without looking at the test set")
    parser.add_argument("--cache", default="memory", help="'memory' or an SQLite file")
    parser.add_argument("--image", type=Path, default=IMAGE)
    args = parser.parse_args()
    args.options = dict(_option(text) for text in args.option)
    print_header()
    cache = open_cache(args.cache)
    results: dict[str, dict[str, list[list[float]]]] = {}
    print("| dataset | labels | random: mean (seeds) | active: mean (seeds) | gain (points) "
          "| gain +- SE, active ahead |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        started = time.perf_counter()
        train_file, test_file = SPLITS[name]
        train_rows = read_tsv(DATA / train_file)
        rows = pool(train_rows, args.pool, seed=0)
        test = read_tsv(DATA / test_file)
        if args.held_out:
            taken = {text for text, _ in rows}
            test = pool(train_rows, 2000, seed=1,
                        exclude={i for i, (text, _) in enumerate(train_rows) if text in taken})
        # A throwaway function gives the frozen backbone's test features, cached once.
        probe = funcformer.train("classify", rows[:50], method="head", cache=cache,
                                 progress=False)
        test_features = probe.features([t for t, _ in test], cache)
        gold = [y for _, y in test]
        arms = {arm: [curve(rows, test_features, gold, seed, arm == "active", args, cache)
                      for seed in range(args.seeds)] for arm in ("random", "active")}
        results[name] = arms
        for k, budget in enumerate(BUDGETS):
            cells = []
            for arm in ("random", "active"):
                values = [run[k] for run in arms[arm]]
                cells.append(f"{statistics.mean(values):.4f} "
                             f"({', '.join(f'{v:.3f}' for v in values)})")
            print(f"| {name} | {budget} | {cells[0]} | {cells[1]} | "
                  f"{gain_cells(arms, k)} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - started:.0f}s -->", flush=True)
    draw(results, args.image)
    print(f"\ncurve: {args.image}")


if __name__ == "__main__":
    main()
