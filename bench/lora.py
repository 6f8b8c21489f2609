"""Benchmark: `lora` vs `full` (and `head`) on SST-2 with 8,000 training examples.

    python bench/lora.py                     # 8,000 rows, evaluated on dev (872)
    python bench/lora.py --train 2000        # a shorter run
    python bench/lora.py --data emotion      # Emotion: 8,000 of its 16,000 training rows;
                                             # validation for early stopping, test scored

Each method trains in its own subprocess, so its peak memory (max RSS) is its own. Reported:
dev accuracy, training seconds, artifact size on disk, peak RSS. Goal (issue 4): `lora` within
1.5 points of `full` accuracy, with an artifact of under 3 MB against ~90 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DATA, print_header, read_tsv

SPLITS = {"sst2": ("train", "dev", "dev"), "emotion": ("train", "validation", "test")}
"""Per dataset: the file sampled for training, the one for early stopping, the one scored."""


def one(method: str, data: str, rows: int, seed: int,
        options: dict[str, Any]) -> dict[str, float]:
    """Train, save and evaluate one method in this process; print its numbers as JSON."""
    import funcformer

    train_file, eval_file, test_file = SPLITS[data]
    train = random.Random(seed).sample(read_tsv(DATA / data / f"{train_file}.tsv"), rows)
    dev = read_tsv(DATA / data / f"{eval_file}.tsv")
    test = read_tsv(DATA / data / f"{test_file}.tsv")
    started = time.perf_counter()
    fn = funcformer.train("classify", train, eval_data=dev, method=method, seed=seed,
                          progress=False, **(options if method == "lora" else {}))
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        path = fn.save(Path(scratch) / "fn")
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        adapter = sum(f.stat().st_size for f in path.glob("adapter/*") if f.is_file())
    return {"accuracy": fn.evaluate(test)["accuracy"], "seconds": seconds, "bytes": size,
            "adapter_bytes": adapter, "epochs": fn.manifest.training["history"]["best_epoch"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(SPLITS), default="sst2")
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--methods", nargs="+", default=["full", "lora", "head"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-options", default="{}", help="JSON of training options for "
                        "lora only, e.g. '{\"lora\": {\"r\": 16, \"feed_forward\": true}}'")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.data, args.train, args.seed,
                             json.loads(args.lora_options))))
        return
    print_header()
    train_file, eval_file, test_file = SPLITS[args.data]
    print(f"{args.data}: {args.train} {train_file} rows (seeded sample, seed {args.seed}), "
          f"early stopping on {eval_file}, scored on {test_file}; each method in its own "
          f"process; lora options: {args.lora_options}\n")
    print(f"| method | {test_file} accuracy | vs full (points) | train s | artifact | peak RSS |")
    print("|---|---|---|---|---|---|")
    results = {}
    for method in args.methods:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--data", args.data,
                              "--train", str(args.train), "--seed", str(args.seed),
                              "--lora-options", args.lora_options],
                             capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        row = results[method]
        gap = (f"{100 * (row['accuracy'] - results['full']['accuracy']):+.2f}"
               if "full" in results else "-")
        size = row["bytes"]
        shown = f"{size / 1e6:.1f} MB" if size > 1e6 else f"{size / 1e3:.0f} kB"
        print(f"| {method} | {row['accuracy']:.4f} | {gap} | {row['seconds']:.0f} | {shown} | "
              f"{row['peak_rss_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
