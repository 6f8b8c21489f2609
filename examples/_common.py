"""What the example scripts share: their command-line flags and reading the public data sets.

The examples run on the small files in `examples/data/`. Run from a checkout of the
funcformer repository that has `../shared/data` beside it, `--shared` runs them on the public
data sets there instead (BANKING77, StackFAQ, SST-2, AG News); they are read in place, never
copied.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
"""`../shared/data`, seen from the repository root."""


def arguments(description: str, shared: bool = True) -> argparse.Namespace:
    """`--quick` (less data, fewer epochs: a smoke test), `--shared` and `--out DIR`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="less data and fewer epochs: checks the script runs, in seconds")
    if shared:
        parser.add_argument("--shared", action="store_true",
                            help=f"use the public data sets in {SHARED}")
    parser.add_argument("--out", type=Path, default=Path("functions"),
                        help="directory the trained functions are saved under (default: functions)")
    args = parser.parse_args()
    if getattr(args, "shared", False) and not SHARED.is_dir():
        parser.error(f"--shared needs the public data sets in {SHARED}, which is not there.")
    args.started = time.perf_counter()
    return args


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of one of the examples' CSV files."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_shared(name: str) -> list[dict[str, str]]:
    """Rows of a TSV file under ../shared/data (a header, tabs, no quoting: a `"` is text)."""
    with open(SHARED / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def per_label(rows: list[dict[str, Any]], n: int, key: str = "label",
              seed: int = 0) -> list[dict[str, Any]]:
    """At most `n` rows of each value of `key`, picked at random (seeded), shuffled."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    rng = random.Random(seed)
    picked = [row for value in sorted(groups) for row in
              rng.sample(groups[value], min(n, len(groups[value])))]
    rng.shuffle(picked)
    return picked


def done(args: argparse.Namespace) -> None:
    print(f"\nDone in {time.perf_counter() - args.started:.0f} s.")
