"""Benchmark: `funcformer map` rows/s, the local engine vs Ray Data, on this one machine.

    python bench/map.py                   # 4,000 AG News test rows, 2 repeats (~10 min, 2 cores)
    python bench/map.py --rows 300 --repeats 1   # a quick check (~2 min)

A `head` classifier is trained here on 500 AG News training rows (real all-MiniLM-L6-v2
backbone); each engine then runs in its own subprocess over the same Parquet file of AG News
test texts (title + description, ~50 tokens): the local engine (one process, torch on every
core) and Ray (a local Ray with every CPU: one actor per CPU, one torch thread each, each
actor loading the function once). Both times include loading the function; Ray's start-up
(`ray.init`) is reported apart. Runs alternate and the best of the repeats counts (the least
disturbed by neighbours). Goal (issue 7): Ray at most 30% slower than local on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, print_header, read_tsv


def one(engine: str, function: str, source: str, target: str) -> dict[str, float]:
    """Run one engine in this process; its numbers as a dict."""
    from funcformer._map import map as run_map

    started = time.perf_counter()
    if engine == "ray":
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    stats = run_map(function, source, target, engine=engine, progress=False)
    return {"seconds": stats["seconds"], "rows": stats["rows"], "startup": startup}


def in_subprocess(engine: str, function: Path, source: Path, target: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--one", engine, "--function", str(function),
               "--input", str(source), "--output", str(target)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(scratch: Path, rows: int, train_rows: int, seed: int) -> tuple[Path, Path]:
    """A trained head function and a Parquet file of `rows` test texts (with gold labels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import funcformer

    train = random.Random(seed).sample(read_tsv(DATA / "ag_news/train_subset_description_only"
                                                ".tsv"), train_rows)
    fn = funcformer.train("classify", train, method="head", seed=seed, progress=False)
    test = read_tsv(DATA / "ag_news/test.tsv")[:rows]
    source = scratch / "input.parquet"
    pq.write_table(pa.table({"text": [t for t, _ in test], "label": [g for _, g in test]}),
                   source)
    return fn.save(scratch / "fn"), source


def agreement(a: Path, b: Path) -> float:
    import pyarrow.parquet as pq

    left = pq.read_table(a, columns=["predicted_label"]).column(0).to_pylist()
    right = pq.read_table(b, columns=["predicted_label"]).column(0).to_pylist()
    return sum(x == y for x, y in zip(left, right, strict=True)) / len(left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--function", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.function, args.input, args.output)))
        return
    print_header()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        function, source = prepare(scratch, args.rows, args.train_rows, args.seed)
        runs: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        for repeat in range(args.repeats):
            for engine in ("local", "ray") if repeat % 2 == 0 else ("ray", "local"):
                target = scratch / f"{engine}-{repeat}.parquet"
                runs[engine].append(in_subprocess(engine, function, source, target))
                print(f"  {engine} run {repeat + 1}: {runs[engine][-1]}", file=sys.stderr)
        report(runs, args.rows, agreement(scratch / "local-0.parquet", scratch / "ray-0.parquet"))
    print(f"Load average (1 min) before and after: {load:.1f}, {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (above the CPU count, neighbours slow both engines).")


def report(runs: dict[str, list[dict[str, float]]], rows: int, agree: float) -> None:
    best = {engine: min(r["seconds"] for r in results) for engine, results in runs.items()}
    startup = min(r["startup"] for r in runs["ray"])
    print(f"AG News test, first {rows:,} rows (title + description), head classifier, "
          f"Parquet in and out; best of {len(runs['local'])}.\n")
    print("| engine | seconds | rows/s |")
    print("|---|---|---|")
    for engine in ("local", "ray"):
        print(f"| {engine} | {best[engine]:.1f} | {rows / best[engine]:.1f} |")
    overhead = best["ray"] / best["local"] - 1
    print(f"\nRay overhead on one machine: {overhead:+.0%} (goal: at most +30%); "
          f"ray.init took {startup:.1f}s more (with it: "
          f"{(best['ray'] + startup) / best['local'] - 1:+.0%}).")
    print(f"Same predicted label for {agree:.2%} of rows (local vs Ray).")


if __name__ == "__main__":
    main()
