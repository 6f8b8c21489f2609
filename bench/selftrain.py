"""Benchmark: self-training (`train(..., unlabeled=)`) vs the labelled data alone.

    python -u bench/selftrain.py                                  # SST-2 and CR, 3 seeds, head
    python -u bench/selftrain.py --methods head contrastive --seeds 1
    python -u bench/selftrain.py --datasets emotion ag_news --threshold 0.9 -1  # -1: default

N=8 examples per class (the few-shot samples in ../shared/data/fewshot_samples, as
bench/fewshot.py uses) plus 2,000 unlabelled rows of the same train split (labels dropped,
none of the samples). Both arms train on the same samples with the same seed in the same run;
self-training uses the library defaults (3 rounds, a threshold 0.8 of the way from chance to
certainty: 0.9 for two labels, label-balanced) unless --threshold says otherwise, and no eval
data, so the last round is kept. Accuracy on SST-2 dev and the others' test split (at most
2,000 rows). About 3 minutes with `head` on 2 CPUs (features are computed once and cached).
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import DATA, fewshot_indices, pool, print_header, read_tsv

import funcformer
from funcformer._cache import open_cache

SPLITS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"), "cr": ("cr/train.tsv", "cr/test.tsv"),
          # Not in the default run (the two): more labels, where the threshold matters.
          "emotion": ("emotion/train.tsv", "emotion/test.tsv"),
          "ag_news": ("ag_news/train_subset_description_only.tsv",
                      "ag_news/test_description_only.tsv")}
DEFAULT_DATASETS = ("sst2", "cr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--methods", nargs="+", default=["head"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--unlabeled", type=int, default=2000)
    parser.add_argument("--cache", default="memory", help="'memory' or an SQLite file")
    parser.add_argument("--threshold", type=float, nargs="+", default=[-1.0],
                        help="self-training thresholds to run, each against the same "
                        "labelled-only function; -1: the library's default (chance-normalised)")
    args = parser.parse_args()
    print_header()
    cache = open_cache(args.cache)
    print("| dataset | method | threshold | labelled only: mean (seeds) | self-training: mean "
          "(seeds) | gain (points) | pseudo-labels per round (mean) | seconds (mean, both arms) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        train_file, test_file = SPLITS[name]
        train, test = read_tsv(DATA / train_file), read_tsv(DATA / test_file)[:2000]
        samples = [fewshot_indices(name, 8, s) for s in range(args.seeds)]
        excluded = {i for sample in samples for i in sample}
        unlabeled = [text for text, _ in pool(train, args.unlabeled, 0, excluded)]
        for method in args.methods:
            base: list[float] = []
            arms: dict[float, dict[str, list]] = {
                t: {"accuracy": [], "added": [], "seconds": [], "used": []}
                for t in args.threshold}
            for seed, sample in enumerate(samples):
                rows = [train[i] for i in sample]
                started = time.perf_counter()
                fn = funcformer.train("classify", rows, method=method, seed=seed, cache=cache,
                                      progress=False)
                base.append(fn.evaluate(test)["accuracy"])
                base_seconds = time.perf_counter() - started
                for threshold, arm in arms.items():
                    started = time.perf_counter()
                    st = funcformer.train("classify", rows, method=method, seed=seed,
                                          cache=cache, unlabeled=unlabeled, progress=False,
                                          self_training={"threshold": None if threshold < 0
                                                         else threshold})
                    arm["accuracy"].append(st.evaluate(test)["accuracy"])
                    arm["seconds"].append(base_seconds + time.perf_counter() - started)
                    report = st.manifest.training["self_training"]
                    arm["added"].append([r["pseudo_labels"] for r in report["rounds"]])
                    arm["used"].append(report["threshold"])
            for arm in arms.values():
                added = arm["added"]
                per_round = [round(statistics.mean(a[k] for a in added if k < len(a)))
                             for k in range(max(map(len, added)))]
                gain = statistics.mean(arm["accuracy"]) - statistics.mean(base)
                print(f"| {name} | {method} | {arm['used'][0]:.3f} | {statistics.mean(base):.4f} "
                      f"({', '.join(f'{a:.3f}' for a in base)}) | "
                      f"{statistics.mean(arm['accuracy']):.4f} "
                      f"({', '.join(f'{a:.3f}' for a in arm['accuracy'])}) | {100 * gain:+.2f} | "
                      f"{', '.join(map(str, per_round))} | {statistics.mean(arm['seconds']):.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
