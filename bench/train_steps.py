"""Benchmark: training on the real tokens only (`_packed`) with row-wise embedding tables
(`_rows`), against transformers' layers on the padded batch with dense tables.

    python bench/train_steps.py                              # contrastive, N = 8, SST-2 and CR
    python bench/train_steps.py --n 64 --seeds 1 --datasets sst2 cr emotion ag_news

The anchor is the same training through transformers' modules (`FUNCFORMER_PACKED=0` and
dense embedding gradients), in the same process, on bench/fewshot.py's samples; the two take
turns going first (the anchor on even seeds), so the process's first run, which pays for
warming up, falls on each in turn, and one untimed run warms up before them. Both compute the
same thing (the same dropout masks), so the accuracies should agree; the table says whether
they did, and the time ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import DATA, fewshot_indices, print_header, read_tsv
from fewshot import SPLITS

import funcformer
from funcformer import _backbone, _packed, _rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["sst2", "cr"])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--method", default="contrastive")
    parser.add_argument("--max-test", type=int, default=2000)
    args = parser.parse_args()
    print_header()
    print("| dataset | N | method | accuracy: transformers' layers | accuracy: packed | same "
          "predictions | train s: transformers' layers | train s: packed | time / anchor's |")
    print("|---|---|---|---|---|---|---|---|---|")
    _backbone.load()  # loaded once, before any timing
    tables, packed_before = _rows.tables, _packed.ENABLED
    for name in args.datasets:
        train_file, test_file = SPLITS[name]
        train, test = read_tsv(DATA / train_file), read_tsv(DATA / test_file)[: args.max_test]
        runs: dict[bool, list[tuple[float, float, list[str]]]] = {False: [], True: []}
        warm = [train[i] for i in fewshot_indices(name, args.n, 0)][:32]
        funcformer.train("classify", warm, method=args.method, seed=0, epochs=1,
                         progress=False)  # untimed: the first run in a process warms up
        for seed in range(args.seeds):
            sample = [train[i] for i in fewshot_indices(name, args.n, seed)]
            for packed in ((False, True) if seed % 2 == 0 else (True, False)):
                _packed.ENABLED = packed
                _rows.tables = tables if packed else (lambda model: [])
                try:
                    started = time.perf_counter()
                    fn = funcformer.train("classify", sample, method=args.method, seed=seed,
                                          progress=False)
                    seconds = time.perf_counter() - started
                finally:
                    _packed.ENABLED, _rows.tables = packed_before, tables
                labels = [p.label for p in fn([t for t, _ in test])]
                accuracy = float(np.mean([p == y for p, (_, y) in zip(labels, test,
                                                                         strict=True)]))
                runs[packed].append((accuracy, seconds, labels))
        anchor, ours = runs[False], runs[True]
        same = all(a[2] == b[2] for a, b in zip(anchor, ours, strict=True))
        anchor_s, ours_s = np.mean([s for _, s, _ in anchor]), np.mean([s for _, s, _ in ours])
        print(f"| {name} | {args.n} | {args.method} | {np.mean([a for a, _, _ in anchor]):.4f} | "
              f"{np.mean([a for a, _, _ in ours]):.4f} | {'yes' if same else 'no'} | "
              f"{anchor_s:.1f} | {ours_s:.1f} | {ours_s / anchor_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
