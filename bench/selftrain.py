"""Benchmark: self-training (`train(..., unlabeled=)`) vs the labelled data alone.

    python -u bench/selftrain.py                                  # SST-2 and CR, 3 seeds, head
    python -u bench/selftrain.py --methods head contrastive --seeds 1

N=8 examples per class (the few-shot samples in ../shared/data/fewshot_samples, as
bench/fewshot.py uses) plus 2,000 unlabelled rows of the same train split (labels dropped,
none of the samples). Both arms train on the same samples with the same seed in the same run;
self-training uses the library defaults (3 rounds, threshold 0.9, label-balanced) and no eval
data, so the last round is kept. Accuracy on SST-2 dev and CR test. About 3 minutes with
`head` on 2 CPUs (features are computed once and cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _common import DATA, pool, print_header, read_tsv

import funcformer
from funcformer._cache import open_cache

SPLITS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"), "cr": ("cr/train.tsv", "cr/test.tsv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SPLITS))
    parser.add_argument("--methods", nargs="+", default=["head"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--unlabeled", type=int, default=2000)
    parser.add_argument("--cache", default="memory", help="'memory' or an SQLite file")
    args = parser.parse_args()
    print_header()
    cache = open_cache(args.cache)
    print("| dataset | method | labelled only: mean (seeds) | self-training: mean (seeds) | "
          "gain (points) | pseudo-labels per round (mean) | seconds (mean, both arms) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        train_file, test_file = SPLITS[name]
        train, test = read_tsv(DATA / train_file), read_tsv(DATA / test_file)
        samples = [json.loads((DATA / f"fewshot_samples/{name}_N8_seed{s}.json").read_text())
                   ["indices"] for s in range(args.seeds)]
        excluded = {i for sample in samples for i in sample}
        unlabeled = [text for text, _ in pool(train, args.unlabeled, 0, excluded)]
        for method in args.methods:
            base, selftrained, added, seconds = [], [], [], []
            for seed, sample in enumerate(samples):
                rows = [train[i] for i in sample]
                started = time.perf_counter()
                fn = funcformer.train("classify", rows, method=method, seed=seed, cache=cache,
                                      progress=False)
                base.append(fn.evaluate(test)["accuracy"])
                st = funcformer.train("classify", rows, method=method, seed=seed, cache=cache,
                                      unlabeled=unlabeled, progress=False)
                selftrained.append(st.evaluate(test)["accuracy"])
                seconds.append(time.perf_counter() - started)
                added.append([r["pseudo_labels"] for r in
                              st.manifest.training["self_training"]["rounds"]])
            per_round = [round(statistics.mean(a[k] for a in added if k < len(a)))
                         for k in range(max(map(len, added)))]
            gain = statistics.mean(selftrained) - statistics.mean(base)
            print(f"| {name} | {method} | {statistics.mean(base):.4f} "
                  f"({', '.join(f'{a:.3f}' for a in base)}) | {statistics.mean(selftrained):.4f} "
                  f"({', '.join(f'{a:.3f}' for a in selftrained)}) | {100 * gain:+.2f} | "
                  f"{', '.join(map(str, per_round))} | {statistics.mean(seconds):.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
