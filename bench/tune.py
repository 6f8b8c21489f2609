"""Benchmark: hyperparameter search (`funcformer.tune`) vs the defaults on SST-2, 1,000 rows.

    python -u bench/tune.py                       # 10 trials, search bounded to 15 min
    python -u bench/tune.py --quick               # 3 head trials, to check the script

1,000 training rows and 500 tuning rows, disjoint, from a seeded shuffle of SST-2 train: every
trial trains on the 1,000 and is scored (and early-stopped) on the 500. The default function
is `funcformer.train` on the same rows with the same eval data and nothing else set (`auto`
picks `lora` for 1,000 examples). Both are then scored once on SST-2 dev (872), which the
search never sees. Features of the frozen backbone are cached across trials.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import DATA, print_header, read_tsv

import funcformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--tune-eval", type=int, default=500)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the search")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="methods to search; default: the library's (head, lora, full)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.train, args.tune_eval, args.trials, args.methods = 300, 100, 3, ["head"]
    print_header()
    rows = read_tsv(DATA / "sst2/train.tsv")
    random.Random(args.seed).shuffle(rows)
    train, held = rows[:args.train], rows[args.train:args.train + args.tune_eval]
    dev = read_tsv(DATA / "sst2/dev.tsv")

    started = time.perf_counter()
    # The same training seed as the trials (tune's `seed` seeds both the sampler and every
    # trial's training), so the comparison is about settings, not seeds.
    default = funcformer.train("classify", train, eval_data=held, seed=args.seed,
                               progress=False)
    default_seconds = time.perf_counter() - started
    print(f"defaults: {default.manifest.method}, {default_seconds:.0f}s", flush=True)
    started = time.perf_counter()
    result = funcformer.tune("classify", train, eval_data=held, trials=args.trials,
                             timeout=args.timeout, methods=args.methods, seed=args.seed)
    search_seconds = time.perf_counter() - started
    print(f"\nsearch: {len(result.trials)} trials in {search_seconds:.0f}s\n")
    print(result.table())
    rows_out = []
    for name, fn, seconds in (("defaults", default, default_seconds),
                              ("best trial", result.best, search_seconds)):
        rows_out.append((name, fn.manifest.method, fn.metrics["accuracy"],
                         fn.evaluate(dev)["accuracy"], seconds))
    print(f"best settings: {result.best_settings}\n")
    print("| function | method | tuning-eval accuracy (500 of train) | dev accuracy (872) | "
          "seconds |")
    print("|---|---|---|---|---|")
    for name, method, held_acc, dev_acc, seconds in rows_out:
        print(f"| {name} | {method} | {held_acc:.4f} | {dev_acc:.4f} | {seconds:.0f} |")
    gain = 100 * (rows_out[1][3] - rows_out[0][3])
    print(f"\ndev accuracy, best trial - defaults: {gain:+.2f} points; the search took "
          f"{search_seconds / 60:.1f} min ({search_seconds / default_seconds:.1f}x one default "
          "training)")


if __name__ == "__main__":
    main()
