"""Benchmark: training in bfloat16 autocast (`precision="bf16"`) against float32, same run.

    python -u bench/precision.py                      # SST-2 full and lora, CR contrastive
    python -u bench/precision.py --cases cr-contrastive --seeds 0 1 2
    python -u bench/precision.py --cases ag-full --seeds 0      # longer texts

Each case trains the same data with the same seed twice, `precision="fp32"` (the default) and
`precision="bf16"` (forward passes under bfloat16 autocast; weights, optimizer and loss in
float32), and reports accuracy and training seconds. bfloat16 pays only on hardware with
native support (this machine's Xeon has AMX and AVX512-BF16); elsewhere the library warns.
The anchor is float32 training of the same library: the question is what bf16 costs in
accuracy and gains in time.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import DATA, fewshot_indices, print_header, read_tsv

import funcformer
from funcformer import _backbone

CASES = {
    # name: (train file, test file, rows or few-shot sample, method)
    "sst2-full": ("sst2/train.tsv", "sst2/dev.tsv", 2000, "full"),
    "sst2-lora": ("sst2/train.tsv", "sst2/dev.tsv", 2000, "lora"),
    "cr-contrastive": ("cr/train.tsv", "cr/test.tsv", "cr_N64", "contrastive"),
    # Longer texts (news descriptions, about 40 tokens against SST-2's 10-20): larger matrices.
    "ag-full": ("ag_news/train_subset_description_only.tsv",
                "ag_news/test_description_only.tsv", 2000, "full"),
}


def rows_for(spec: int | str, train: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    if isinstance(spec, int):
        return train[:spec]
    name, _, n = spec.partition("_N")
    return [train[i] for i in fewshot_indices(name, int(n), seed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["sst2-full", "sst2-lora", "cr-contrastive"],
                        choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    print_header()
    _backbone.load()  # loaded once, before any timing
    print("| case | precision | accuracy: mean (seeds) | train s (mean) | bf16 time / fp32's | "
          "accuracy vs fp32 (points) |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        train_file, test_file, spec, method = CASES[case]
        train, test = read_tsv(DATA / train_file), read_tsv(DATA / test_file)[:2000]
        results: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
        for seed in args.seeds:
            rows = rows_for(spec, train, seed)
            for precision in results:
                started = time.perf_counter()
                fn = funcformer.train("classify", rows, method=method, seed=seed,
                                      precision=precision, progress=False)
                seconds = time.perf_counter() - started
                results[precision].append((fn.evaluate(test)["accuracy"], seconds))
        base_acc = statistics.mean(a for a, _ in results["fp32"])
        base_s = statistics.mean(s for _, s in results["fp32"])
        for precision, runs in results.items():
            accuracy = statistics.mean(a for a, _ in runs)
            seconds = statistics.mean(s for _, s in runs)
            print(f"| {case} | {precision} | {accuracy:.4f} "
                  f"({', '.join(f'{a:.4f}' for a, _ in runs)}) | {seconds:.1f} | "
                  f"{seconds / base_s:.2f} | {100 * (accuracy - base_acc):+.2f} |", flush=True)


if __name__ == "__main__":
    main()
