"""Benchmark: the PEFT methods (`lora`, `adalora`, `ia3`, `prompt`, `prefix`) on SST-2.

    python -u bench/peft_methods.py                 # 1,000 training rows, dev 872, seed 0
    python -u bench/peft_methods.py --train 500     # a shorter run

Each method trains in its own subprocess (bench/lora.py's recipe: a seeded sample of SST-2
train, dev as eval data for early stopping, each method's default settings), so its peak
memory is its own. Reported: dev accuracy and its gap to `lora` (the baseline, same run),
training seconds, the adapter's size and the whole artifact's. About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import print_header

LORA_SCRIPT = Path(__file__).with_name("lora.py")


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n > 1e6 else f"{n / 1e3:.1f} kB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--methods", nargs="+",
                        default=["lora", "adalora", "ia3", "prompt", "prefix"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_header()
    print(f"SST-2: {args.train} training rows (seeded sample, seed {args.seed}), dev 872 rows; "
          "each method in its own process, default settings\n")
    print("| method | dev accuracy | vs lora (points) | best epoch | train s | adapter | "
          "artifact | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for method in args.methods:
        out = subprocess.run([sys.executable, str(LORA_SCRIPT), "--one", method, "--train",
                              str(args.train), "--seed", str(args.seed)],
                             capture_output=True, text=True, check=True)
        row = results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        gap = (f"{100 * (row['accuracy'] - results['lora']['accuracy']):+.2f}"
               if "lora" in results else "-")
        print(f"| {method} | {row['accuracy']:.4f} | {gap} | {row['epochs']} | "
              f"{row['seconds']:.0f} | {size(row['adapter_bytes'])} | {size(row['bytes'])} | "
              f"{row['peak_rss_mb']:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
