"""Benchmark: calling LoRA functions on a CPU, funcformer's fused layers vs transformers + PEFT.

    python bench/lora_inference.py                 # LoRA(r=8) and LoRA(r=16, feed_forward=True)
    python bench/lora_inference.py --repeats 5     # more rounds (the median is reported)

Each LoRA function (trained for one epoch on 200 SST-2 rows: the weights do not matter for
speed) is saved and loaded back, as a server would, and called on one text at a time (200
calls) and on 512 SST-2 dev texts in one call. funcformer adds the adapters' terms inside its
fused oneDNN layers, with the shared backbone's weights; the anchor is the same function
through transformers' layers with PEFT's LoRA layers in them (`FUNCFORMER_FUSED=0`, which is
what a transformers + PEFT model computes), in the same process, the two alternating. Also
shown: the adapter merged into private weights (`merge_adapter=True`) and a `head` function
on the bare backbone, the floor for any adapter.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DATA, print_header, print_table, read_tsv

ADAPTERS = {"LoRA(r=8)": {"r": 8}, "LoRA(r=16, feed_forward=True)": {"r": 16,
                                                                       "feed_forward": True}}


def timed(fn: Any, texts: list[str], singles: int) -> tuple[float, float]:
    """Milliseconds a call on one text (mean of `singles` calls), seconds for all `texts`."""
    fn.predict(texts[:8])  # warm: the fused weights are made on the first call
    started = time.perf_counter()
    for text in texts[:singles]:
        fn.predict([text])
    one = (time.perf_counter() - started) / singles * 1000
    started = time.perf_counter()
    fn.predict(texts)
    return one, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--singles", type=int, default=200)
    args = parser.parse_args()
    print_header()
    import funcformer
    from funcformer import _fused

    rows = random.Random(0).sample(read_tsv(DATA / "sst2/train.tsv"), 200)
    texts = [text for text, _ in read_tsv(DATA / "sst2/dev.tsv")][:512]
    scratch = Path(tempfile.mkdtemp(prefix="ff-lora-inference-"))
    functions: dict[str, Any] = {}
    for name, options in ADAPTERS.items():
        trained = funcformer.train("classify", rows, method="lora", lora=options, epochs=1,
                                   seed=0, progress=False)
        path = trained.save(scratch / name.replace(" ", ""))
        functions[name] = funcformer.load(path)
        functions[f"{name}, merged"] = funcformer.load(path, merge_adapter=True)
    head = funcformer.train("classify", rows, method="head", seed=0, progress=False)
    functions["head (no adapter)"] = funcformer.load(head.save(scratch / "head"))
    print(f"SST-2: LoRA functions trained on 200 rows (1 epoch), called on {args.singles} "
          f"single texts and on 512 dev texts; median of {args.repeats} rounds\n")

    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for name, fn in functions.items():
            times.setdefault((name, "funcformer"), []).append(timed(fn, texts, args.singles))
        _fused.ENABLED = False  # transformers' layers (PEFT's LoRA layers in them)
        try:
            for name in ADAPTERS:
                times.setdefault((name, "anchor"), []).append(
                    timed(functions[name], texts, args.singles))
        finally:
            _fused.ENABLED = True

    def median(key: tuple[str, str], index: int) -> float:
        return statistics.median(t[index] for t in times[key])

    table = []
    for name in ADAPTERS:
        anchor = (median((name, "anchor"), 0), median((name, "anchor"), 1))
        table.append((f"{name}: transformers + PEFT layers (anchor)", f"{anchor[0]:.2f}",
                      f"{anchor[1]:.2f}", "1.00", "1.00"))
        for variant in (name, f"{name}, merged"):
            one, many = median((variant, "funcformer"), 0), median((variant, "funcformer"), 1)
            label = "merged into private weights" if variant.endswith("merged") else \
                "fused layers, shared backbone"
            table.append((f"{name}: funcformer, {label}", f"{one:.2f}", f"{many:.2f}",
                          f"{one / anchor[0]:.2f}", f"{many / anchor[1]:.2f}"))
    one, many = median(("head (no adapter)", "funcformer"), 0), \
        median(("head (no adapter)", "funcformer"), 1)
    table.append(("head on the bare backbone (funcformer)", f"{one:.2f}", f"{many:.2f}", "", ""))
    print_table(["function", "one text (ms)", "512 texts (s)", "one text / anchor",
                 "512 / anchor"], table)


if __name__ == "__main__":
    main()
