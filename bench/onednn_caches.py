"""Benchmark: oneDNN's and ideep's cache sizes, for training memory and inference time.

    python bench/onednn_caches.py                  # 2,000 SST-2 rows, three cache settings
    python bench/onednn_caches.py --train 500      # a shorter run

Each setting runs in its own process (the caches are sized when oneDNN is first used, and a
peak RSS is a process's own): `full` fine-tuning on a seeded sample of SST-2 (training seconds,
dev accuracy, peak RSS), then the fused inference layers on 96 batch shapes in turn (the worst
case for a cache smaller than the shapes) and on one shape repeated. The anchor is the library
default before `import funcformer` capped the caches: 1,024 entries each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

from _common import DATA, print_header, read_tsv

SETTINGS = {"1,024 entries each (before)": "1024", "64 each (funcformer's default)": None,
            "16 each": "16"}


def one(rows: int) -> None:
    """Train and time in this process; print the numbers as JSON."""
    import torch

    import funcformer  # sets the caches unless the environment did (before oneDNN runs)
    from funcformer import _backbone, _fused

    train = random.Random(0).sample(read_tsv(DATA / "sst2/train.tsv"), rows)
    dev = read_tsv(DATA / "sst2/dev.tsv")
    started = time.perf_counter()
    fn = funcformer.train("classify", train, method="full", seed=0, progress=False)
    seconds = time.perf_counter() - started
    accuracy = fn.evaluate(dev)["accuracy"]
    encoder = _backbone.load().model.eval()
    generator = torch.Generator().manual_seed(0)
    shapes = [(b, t) for b in (1, 2, 4, 8, 16, 32) for t in range(8, 72, 4)]
    random.Random(0).shuffle(shapes)

    def forward(b: int, t: int) -> None:
        ids = torch.randint(1000, 2000, (b, t), generator=generator)
        with torch.inference_mode():
            _fused.last_hidden_state(encoder, input_ids=ids,
                                     attention_mask=torch.ones(b, t, dtype=torch.long))

    for shape in shapes:  # every shape once before timing
        forward(*shape)
    started = time.perf_counter()
    for _ in range(3):
        for shape in shapes:
            forward(*shape)
    cycling = (time.perf_counter() - started) / (3 * len(shapes))
    started = time.perf_counter()
    for _ in range(50):
        forward(8, 32)
    repeated = (time.perf_counter() - started) / 50
    print(json.dumps({
        "seconds": seconds, "accuracy": accuracy, "cycling_ms": 1000 * cycling,
        "repeated_ms": 1000 * repeated,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.train)
        return
    print_header()
    print(f"SST-2: {args.train} training rows (seeded sample), `full`, dev 872 rows; then the "
          "fused inference layers on 96 batch shapes in turn and on one (8 x 32) repeated\n")
    print("| caches | dev accuracy | train s | peak RSS | inference, 96 shapes in turn | "
          "one shape |")
    print("|---|---|---|---|---|---|")
    for name, entries in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in (
            "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY",
            "LRU_CACHE_CAPACITY")}
        if entries is not None:
            env.update(ONEDNN_PRIMITIVE_CACHE_CAPACITY=entries, LRU_CACHE_CAPACITY=entries)
        done = subprocess.run([sys.executable, __file__, "--one", "--train", str(args.train)],
                              env=env, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['accuracy']:.4f} | {r['seconds']:.0f} | {r['peak_mb']:.0f} MB | "
              f"{r['cycling_ms']:.1f} ms | {r['repeated_ms']:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
