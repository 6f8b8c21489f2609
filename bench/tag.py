"""Benchmark: funcformer `tag` on CoNLL-2003 (English NER): train time and entity F1.

Fine-tunes all-MiniLM-L6-v2 (`full`, by default) on the training split, early-stops on the
dev split (entity F1, seqeval-style exact span + type), then reports test entity F1, per type,
and the training and prediction time. all-MiniLM-L6-v2 is uncased, which costs NER some F1.

    python bench/tag.py                                   # all 14,041 sentences, 3 epochs
    python bench/tag.py --max-train 2000 --epochs 1 --max-dev 500 --max-test 500  # quick
"""

from __future__ import annotations

import argparse
import json
import random
import time

from _common import DATA, print_header


def read_jsonl(name: str, limit: int | None, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "conll2003" / name).read_text("utf-8")
            .splitlines() if line.strip()]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--method", default="full", choices=["full", "head"])
    parser.add_argument("--max-train", type=int, default=None, help="sample this many sentences")
    parser.add_argument("--max-dev", type=int, default=None,
                        help="sample this many dev sentences (early stopping)")
    parser.add_argument("--max-test", type=int, default=None,
                        help="sample this many test sentences")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--alignment", default="all", choices=["first", "all"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    print_header()

    import funcformer
    from funcformer import _backbone

    train = read_jsonl("train.jsonl", args.max_train, args.seed)
    dev = read_jsonl("dev.jsonl", args.max_dev, args.seed)
    test = read_jsonl("test.jsonl", args.max_test, args.seed)
    _backbone.load(args.backbone)  # loading the model is outside the timing
    started = time.perf_counter()
    fn = funcformer.train("tag", train, eval_data=dev, backbone=args.backbone,
                          method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, max_length=args.max_length,
                          alignment=args.alignment, seed=args.seed)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = fn.evaluate(test)
    test_s = time.perf_counter() - started
    history = fn.manifest.training["history"]
    print(f"\ntrain: {len(train)} sentences ({fn.manifest.training['windows']} windows), "
          f"dev: {len(dev)}, test: {len(test)}")
    print(f"config: {json.dumps(fn.manifest.config)}")
    print(f"alignment: {args.alignment}")
    for epoch in history["epochs"]:
        print(f"  epoch {epoch['epoch']:.0f}: loss {epoch.get('loss', float('nan')):.4f}, "
              f"dev F1 {epoch.get('eval', float('nan')):.4f}")
    print(f"best epoch {history['best_epoch']} (dev F1 {history['best_metric']:.4f})")
    print(f"training time: {train_s:.0f} s (includes the dev evaluation after each epoch)")
    print(f"test: {len(test)} sentences in {test_s:.1f} s ({len(test) / test_s:.0f}/s)\n")
    print("| split | precision | recall | F1 |")
    print("|---|---|---|---|")
    print(f"| test (micro) | {metrics['precision']:.4f} | {metrics['recall']:.4f} | "
          f"{metrics['f1']:.4f} |")
    for name, row in metrics["per_type"].items():
        print(f"| test {name} ({row['support']}) | {row['precision']:.4f} | "
              f"{row['recall']:.4f} | {row['f1']:.4f} |")


if __name__ == "__main__":
    main()
