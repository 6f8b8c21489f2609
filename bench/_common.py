"""Shared helpers of the benchmark scripts: data reading and the run header."""

from __future__ import annotations

import csv
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATA = Path(os.environ.get("FUNCFORMER_BENCH_DATA")
            or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """(text, label) rows of a shared-data TSV (header row, no quoting)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["text"], row["label"]) for row in rows]


def accuracy(fn: Any, rows: list[tuple[str, str]]) -> float:
    """`fn`'s accuracy on (text, label) rows; NaN for none."""
    if not rows:
        return float("nan")
    predicted = [p.label for p in fn([t for t, _ in rows])]
    return sum(p == y for p, (_, y) in zip(predicted, rows, strict=True)) / len(rows)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def print_header() -> None:
    """Date, command and machine (with OpenMP's wait policy), as docs/benchmarks.md records
    them."""
    import torch

    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"command: python {' '.join(sys.argv)}")
    # OpenMP's wait policy moves training times by up to a quarter (docs/benchmarks.md, few-shot)
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), OMP_WAIT_POLICY {policy}\n")


def exported(fn: Any, name: str) -> tuple[Path, Any]:
    """The runtime benchmarks' setup: `fn` saved in a temporary directory, loaded back on
    torch, and exported there in float32 and int8. Returns the directory and the torch load."""
    import funcformer

    path = fn.save(Path(tempfile.mkdtemp(prefix=f"ff-{name}-")) / name)
    loaded = funcformer.load(path)
    loaded.export_onnx(path)
    loaded.export_onnx(path, int8=True)
    return path, loaded


def print_table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    """A markdown table, as docs/benchmarks.md shows it."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def pool(rows: list[tuple[str, str]], n: int, seed: int,
         exclude: set[int] | frozenset[int] = frozenset()) -> list[tuple[str, str]]:
    """`n` rows drawn at random (seeded) from `rows`, none of the indices in `exclude`, and no
    text twice (SST-2's train split repeats phrases)."""
    import random

    order = [i for i in range(len(rows)) if i not in exclude]
    random.Random(seed).shuffle(order)
    seen: set[str] = {rows[i][0] for i in exclude}
    out = []
    for i in order:
        if rows[i][0] not in seen:
            seen.add(rows[i][0])
            out.append(rows[i])
        if len(out) == n:
            break
    return out


def fewshot_indices(name: str, n: int, seed: int) -> list[int]:
    """Train-split row indices of the shared few-shot sample `name`, N = n per class, `seed`
    (`../shared/data/fewshot_samples/{name}_N{n}_seed{seed}.json`)."""
    import json

    path = DATA / f"fewshot_samples/{name}_N{n}_seed{seed}.json"
    return json.loads(path.read_text())["indices"]
