"""Benchmark: a `generate` function's decoding speed vs transformers' own `generate`.

    python bench/generate.py            # about 6 minutes on 2 cores
    python bench/generate.py --quick    # one timed repeat

No pretrained causal LM can be had on this machine (no model hub), so the models are random
initialisations of two real shapes, and only speed is measured, which depends on the shape, not
on the weights:
- distilgpt2's (GPT-2, 6 layers of 768, 82M parameters with its 50,257-token vocabulary);
- SmolLM-135M's (Llama, 30 layers of 576, grouped-query attention, 49,152 tokens).
Their tokenizer is a byte-level BPE of 16,000 tokens learnt from the AG News descriptions; the
prompts are 16 AG News test descriptions (about 50 tokens each). The EOS token's embedding is
zero, as are those of the ids the tokenizer lacks (the vocabularies are the real models' sizes,
so the output layer costs what theirs does), so their logits are 0 and never the largest:
every generation runs its full length and decodes to text.

Same run, same weights, float32, greedy: `fn.predict(prompts, max_new_tokens=64)` against
`model.generate(..., do_sample=False, max_new_tokens=64, min_new_tokens=64)` on left-padded
batches (the anchor), for one prompt and for a batch of 8, and the time to the first piece
of `fn.stream` against `generate` with one new token. "same text" compares funcformer's text
with the anchor's tokens decoded the same way.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DATA, print_header, print_table, read_tsv
from throughput import best_of, speed_settings

NEW_TOKENS = 64
SHAPES = ("distilgpt2", "SmolLM-135M")


def write_model(directory: Path, shape: str, texts: list[str]) -> Path:
    """A random-init causal LM of `shape` with a BPE tokenizer learnt from `texts`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=16000, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    torch.manual_seed(0)
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if shape == "distilgpt2":
        model: Any = GPT2LMHeadModel(GPT2Config(n_layer=6, n_head=12, n_embd=768,
                                                n_positions=1024, vocab_size=50257, **ids))
        embeddings = model.transformer.wte.weight
    else:
        model = LlamaForCausalLM(LlamaConfig(
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
            max_position_embeddings=2048, tie_word_embeddings=True, **ids))
        embeddings = model.model.embed_tokens.weight
    with torch.no_grad():  # tied output layer: these logits are exactly 0, never the largest
        embeddings[0] = 0.0  # EOS: every generation runs its full length
        embeddings[len(tokenizer):] = 0.0  # ids past the tokenizer's, which decode to nothing
    path = directory / shape
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    repeats, _ = speed_settings(__doc__)
    print_header()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import funcformer

    texts = [t for t, _ in read_tsv(DATA / "ag_news/train_subset_description_only.tsv")]
    prompts = [t for t, _ in read_tsv(DATA / "ag_news/test_description_only.tsv")][:16]
    workdir = Path(tempfile.mkdtemp(prefix="ff-generate-"))
    rows, first = [], []
    for shape in SHAPES:
        path = write_model(workdir, shape, texts)
        fn = funcformer.generator(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"

        def anchor(batch: list[str], new: int = NEW_TOKENS) -> list[str]:
            encoded = tokenizer(batch, return_tensors="pt", padding=True)  # noqa: B023
            with torch.inference_mode():
                out = model.generate(**encoded, do_sample=False, max_new_tokens=new,  # noqa: B023
                                     min_new_tokens=new, pad_token_id=0)
            return tokenizer.batch_decode(  # noqa: B023
                out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True,
                clean_up_tokenization_spaces=False)

        def ours(batch: list[str]) -> list[str]:
            return [g.text for g in fn.predict(batch, max_new_tokens=NEW_TOKENS)]  # noqa: B023

        def first_piece() -> str:
            return next(iter(fn.stream(prompts[0], max_new_tokens=NEW_TOKENS)))  # noqa: B023

        anchor(prompts[:1]), ours(prompts[:1])  # warm-up
        for size in (1, 8):
            batch = prompts[:size]
            same = sum(a == b for a, b in zip(anchor(batch), ours(batch), strict=True))
            anchor_s = best_of(repeats, lambda: anchor(batch))  # noqa: B023
            ours_s = best_of(repeats, lambda: ours(batch))  # noqa: B023
            rows.append((shape, str(size), f"{same}/{size}",
                         f"{size * NEW_TOKENS / anchor_s:.1f}", f"{size * NEW_TOKENS / ours_s:.1f}",
                         f"{ours_s / anchor_s:.2f}x"))
        anchor_first = _median(lambda: anchor(prompts[:1], new=1), 5 * repeats)
        ours_first = _median(first_piece, 5 * repeats)
        first.append((shape, f"{anchor_first * 1e3:.0f} ms", f"{ours_first * 1e3:.0f} ms",
                      f"{ours_first / anchor_first:.2f}x"))
    print_table(["model shape (random init)", "prompts", "same text",
                 "transformers generate, tokens/s", "funcformer, tokens/s",
                 "funcformer time / anchor's"], rows)
    print("\nOne prompt, time to the first token (median):\n")
    print_table(["model shape (random init)", "transformers generate, 1 new token",
                 "funcformer stream, first piece", "funcformer / anchor"], first)


def _median(run: Any, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    main()
