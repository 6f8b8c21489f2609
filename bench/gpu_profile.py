"""Where a GPU fine-tune spends its time, float32 against bfloat16 autocast (not run in CI).

    python bench/gpu_profile.py [--backbone DIR] [--rows 500]

The one GPU run so far (docs/benchmarks.md, "On a GPU") took 5.7x longer to fine-tune under
`precision="bf16"` than in float32 on an H200. This script trains `full` for one epoch on
`--rows` SST-2 rows in each precision under torch.profiler and prints, per precision, the wall
time and the operators with the most self CPU and self CUDA time, so the two tables show what
bf16 adds (casts, synchronisations, slow kernels, per-shape set-up).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from _common import DATA, print_header, read_tsv

import funcformer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    print_header()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to profile")
        return 0
    from torch.profiler import ProfilerActivity, profile

    sample = random.Random(0).sample(read_tsv(DATA / "sst2/train.tsv"), args.rows)
    activities = [ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    # A first run of each precision warms kernels and caches; the second is profiled.
    for run, precision in enumerate(("fp32", "bf16", "fp32", "bf16")):
        options = dict(method="full", epochs=1, device=args.device, progress=False,
                       precision=precision, backbone=args.backbone)
        started = time.perf_counter()
        with profile(activities=activities) as profiler:
            funcformer.train("classify", sample, **options)
        seconds = time.perf_counter() - started
        print(f"{'warm' if run > 1 else 'first'} {precision}: {seconds:.1f} s for one epoch of "
              f"{len(sample)} rows (under the profiler)")
        if run < 2:
            continue
        events = profiler.key_averages()
        print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
        if args.device.startswith("cuda"):
            print(events.table(sort_by="self_cuda_time_total", row_limit=12,
                               max_name_column_width=50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
