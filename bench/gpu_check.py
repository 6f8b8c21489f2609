"""Device check for a GPU machine (not run in CI; this machine has no GPU).

    python bench/gpu_check.py            # about a minute on one GPU

Checks, on all-MiniLM-L6-v2: features on cuda in float32 / float16 / bfloat16 agree with the
CPU's (max abs difference printed), and a `full` fine-tune of one epoch runs on cuda. Prints
texts/s for each dtype on SST-2 dev.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import torch
from _common import DATA, print_header, read_tsv

import funcformer
from funcformer import _backbone


def main() -> int:
    print_header()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}")
    texts = [t for t, _ in read_tsv(DATA / "sst2/dev.tsv")]
    reference, _ = _backbone.load().embed(texts[:64])
    for dtype in ("float32", "float16", "bfloat16"):
        backbone = _backbone.load(device="cuda", dtype=dtype)
        features, _ = backbone.embed(texts[:64])
        error = float(np.abs(features - reference).max())
        backbone.embed(texts)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        backbone.embed(texts, batch_tokens=16384)
        torch.cuda.synchronize()
        rate = len(texts) / (time.perf_counter() - started)
        print(f"cuda {dtype}: max |feature - cpu fp32| = {error:.4f}, {rate:.0f} texts/s")
    sample = random.Random(0).sample(read_tsv(DATA / "sst2/train.tsv"), 256)
    started = time.perf_counter()
    fn = funcformer.train("classify", sample, method="full", epochs=1, device="cuda",
                          progress=False)
    print(f"full fine-tune on cuda, 256 examples, 1 epoch: {time.perf_counter() - started:.1f}s,"
          f" held-out metrics {fn.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
