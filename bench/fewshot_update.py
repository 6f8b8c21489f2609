"""Benchmark: few-shot continual updates — `contrastive` on some labels, `update` with the rest.

    python bench/fewshot_update.py                           # N = 8, AG News and Emotion
    python bench/fewshot_update.py --n 64 --rates 5e-5 1e-4

Version 1 trains `contrastive` (memory 8 per label) on bench/fewshot.py's samples without the
new labels (AG News: Sci/Tech; Emotion: love and surprise); `update` then adds the samples'
rows of the new labels. Each encoder learning rate given runs on the same samples, so the
table compares them in the same run: old-label test accuracy of version 1, and after the
update old-label, new-label and all-label accuracy (test: the first 2,000 rows; the update's
eval data: the next 600 test rows, or Emotion's validation split).
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import DATA, accuracy, fewshot_indices, print_header, read_tsv
from fewshot import SPLITS

import funcformer
from funcformer import _backbone

NEW = {"ag_news": ["Sci/Tech"], "emotion": ["love", "surprise"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(NEW), choices=list(NEW))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rates", nargs="+", type=float, default=[5e-5, 1e-4])
    parser.add_argument("--memory", type=int, default=8)
    args = parser.parse_args()
    print_header()
    print("| dataset | N | learning rate | v1 old labels | v2 old labels | v2 new labels | "
          "v2 all labels | seeds (v2 all) |")
    print("|---|---|---|---|---|---|---|---|")
    _backbone.load()
    for name in args.datasets:
        new = NEW[name]
        train = read_tsv(DATA / SPLITS[name][0])
        everything = read_tsv(DATA / SPLITS[name][1])
        test, dev = everything[:2000], everything[2000:2600]
        if not dev:
            dev = read_tsv(DATA / name / "validation.tsv")[:600]
        old_test = [r for r in test if r[1] not in new]
        new_test = [r for r in test if r[1] in new]
        for rate in args.rates:
            results = []
            for seed in range(args.seeds):
                sample = [train[i] for i in fewshot_indices(name, args.n, seed)]
                first = funcformer.train("classify", [r for r in sample if r[1] not in new],
                                         method="contrastive", seed=seed, learning_rate=rate,
                                         memory=args.memory, progress=False)
                second = first.update([r for r in sample if r[1] in new], eval_data=dev,
                                      progress=False)
                results.append((accuracy(first, old_test), accuracy(second, old_test),
                                accuracy(second, new_test), accuracy(second, test)))
            mean = np.mean(results, axis=0)
            print(f"| {name} | {args.n} | {rate:g} | {mean[0]:.4f} | {mean[1]:.4f} | "
                  f"{mean[2]:.4f} | {mean[3]:.4f} | "
                  f"{', '.join(f'{r[3]:.3f}' for r in results)} |", flush=True)


if __name__ == "__main__":
    main()
