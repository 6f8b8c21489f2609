"""GPU check and benchmark (not run in CI; needs a CUDA machine).

    python bench/gpu_check.py [--backbone DIR] [--texts 8192]

On all-MiniLM-L6-v2 (or `--backbone`), in one run:

1. features on cuda in float32 / float16 / bfloat16 against the CPU's float32 (max |diff|);
2. embedding throughput on the GPU, funcformer (`Backbone.embed`) against sentence-transformers
   (`SentenceTransformer.encode`, the anchor) on the same SST-2 train texts, for each dtype,
   at each library's default batch and at a large one;
3. fine-tuning on cuda: `full` (float32 and bf16 autocast) and `lora`, 2,000 SST-2 examples,
   one epoch, each after a 64-row warm-up run: wall time and SST-2 dev accuracy;
4. scoring pairs and tagging on the GPU against sentence-transformers' CrossEncoder and
   transformers' token-classification pipeline (texts/s, float32).

`FUNCFORMER_BENCH_DATA` points at the shared data directory where it is not beside the repo;
`--device cpu --texts 64` runs the script's code paths on a machine without a GPU (slowly).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from typing import Any

import numpy as np
import torch
from _common import DATA, print_header, read_tsv

import funcformer
from funcformer import _backbone


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(call: Any, repeats: int = 3) -> float:
    """Best wall time of `repeats` calls (after one warm-up), GPU work included."""
    call()
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        call()
        synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def rate(embed: Any, texts: list[str], **options: Any) -> float:
    """Texts a second through `embed(texts, **options)`."""
    return len(texts) / timed(lambda: embed(texts, **options))


def sentence_transformer(path: str, dtype: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    # float32 weights whatever the checkpoint holds, then cast: as funcformer does.
    model = SentenceTransformer(path, device=device, model_kwargs={"dtype": torch.float32})
    return model.to(getattr(torch, dtype))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--texts", type=int, default=8192)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    print_header()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    print(f"device: {name}, backbone: {args.backbone}\n")
    dev = read_tsv(DATA / "sst2/dev.tsv")
    train = read_tsv(DATA / "sst2/train.tsv")
    texts = list(dict.fromkeys(t for t, _ in train))[:args.texts]
    where = str(_backbone.load(args.backbone).path)
    reference, _ = _backbone.load(args.backbone).embed(texts[:256])

    print("| dtype | max abs diff vs CPU fp32 | funcformer texts/s (16,384 tokens a batch, "
          "the GPU default / 65,536) | sentence-transformers texts/s (batch 32, its default / "
          "256 / 1024) | ratio (defaults / each at its best) |")
    print("| --- | --- | --- | --- | --- |")
    for dtype in ("float32", "float16", "bfloat16"):
        backbone = _backbone.load(args.backbone, device=args.device, dtype=dtype)
        features, _ = backbone.embed(texts[:256])
        error = float(np.abs(features - reference).max())
        ours = [rate(backbone.embed, texts, batch_tokens=budget) for budget in (16384, 65536)]
        anchor = sentence_transformer(where, dtype, args.device).encode
        theirs = [rate(anchor, texts, batch_size=batch, convert_to_numpy=True)
                  for batch in (32, 256, 1024)]
        print(f"| {dtype} | {error:.4f} | {ours[0]:.0f} / {ours[1]:.0f} | "
              f"{' / '.join(f'{x:.0f}' for x in theirs)} | {ours[0] / theirs[0]:.2f} / "
              f"{max(ours) / max(theirs):.2f} |")

    sample = random.Random(0).sample(train, min(2000, args.texts))
    gold = [label for _, label in dev]
    print(f"\n| training on {args.device} ({len(sample):,} SST-2 rows, 1 epoch) | seconds | "
          "SST-2 dev accuracy |")
    print("| --- | --- | --- |")
    settings = (("full, fp32", {"method": "full"}),
                ("full, bf16 autocast", {"method": "full", "precision": "bf16"}),
                ("lora", {"method": "lora"}))
    for _, options in settings:  # warm-up: a first bf16 run on an H200 paid about 16 s once
        funcformer.train("classify", sample[:64], backbone=args.backbone, epochs=1,
                         device=args.device, progress=False, **options)
    for name, options in settings:
        synchronize()
        started = time.perf_counter()
        fn = funcformer.train("classify", sample, backbone=args.backbone, epochs=1,
                              device=args.device, progress=False, **options)
        synchronize()
        seconds = time.perf_counter() - started
        accuracy = np.mean([p.label == g for p, g in zip(fn([t for t, _ in dev]), gold,
                                                         strict=True)])
        print(f"| {name} | {seconds:.1f} | {accuracy:.4f} |")
    inference_of_pair_and_tag(args, texts, sample)
    return 0


def inference_of_pair_and_tag(args: argparse.Namespace, texts: list[str],
                              sample: list[tuple[str, str]]) -> None:
    """Scoring pairs and tagging on the device, against sentence-transformers' CrossEncoder
    and transformers' token-classification pipeline on the same weights. The functions are
    trained one epoch on SST-2-made rows (two texts of one sentiment score 5, else 0; "not",
    "no" and "never" tagged NEG), which only their speed needs."""
    import tempfile
    from pathlib import Path

    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertForTokenClassification, pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rows = [(a, b, 5.0 * (x == y)) for (a, x), (b, y) in itertools.pairwise(sample[:257])]
    scorer = funcformer.train("pair", rows, backbone=args.backbone, epochs=1,
                              device=args.device, progress=False)
    pairs = list(itertools.pairwise(texts[:4097]))
    ours = rate(scorer, pairs)
    anchor = CrossEncoder(str(scorer.backbone.path), num_labels=1, device=args.device)
    theirs = [rate(anchor.predict, pairs, batch_size=batch) for batch in (32, 256)]
    print(f"\n| inference on {args.device} | funcformer texts/s (its default batches) | "
          "anchor texts/s (batch 32 / 256) | ratio (anchor's default / its best) |")
    print("| --- | --- | --- | --- |")
    print(f"| pair: {len(pairs):,} SST-2 pairs, CrossEncoder.predict | {ours:.0f} | "
          f"{theirs[0]:.0f} / {theirs[1]:.0f} | {ours / theirs[0]:.2f} / "
          f"{ours / max(theirs):.2f} |")

    negations = {"not", "no", "never"}
    tag_rows = [{"tokens": t.split(), "tags": ["B-NEG" if w in negations else "O"
                                               for w in t.split()]}
                for t, _ in sample[:256] if t.split()]
    tagger = funcformer.train("tag", tag_rows, backbone=args.backbone, epochs=1,
                              device=args.device, progress=False)
    sentences = texts[:4096]
    ours = rate(tagger, sentences)
    path = tagger.save(Path(tempfile.mkdtemp(prefix="ff-gpu-tag-")) / "tag")
    tags = tagger.coder.tags
    model = BertForTokenClassification.from_pretrained(
        str(path / "encoder"), num_labels=len(tags), id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)})
    tokenizer = AutoTokenizer.from_pretrained(str(path / "encoder"))
    anchor = pipeline("token-classification", model=model, tokenizer=tokenizer,
                      aggregation_strategy="first", device=args.device)
    theirs = [rate(anchor, sentences, batch_size=batch) for batch in (32, 256)]
    print(f"| tag: {len(sentences):,} SST-2 texts, token-classification pipeline | {ours:.0f} "
          f"| {theirs[0]:.0f} / {theirs[1]:.0f} | {ours / theirs[0]:.2f} / "
          f"{ours / max(theirs):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
