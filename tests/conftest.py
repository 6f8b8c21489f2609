"""Shared fixtures: tiny random-init BERT backbones written to temp dirs, and small datasets.

Most tests run on `tiny_backbone` (2 layers, hidden 32, a WordPiece vocabulary of a few
hundred words) and take milliseconds; tests marked `integration` use all-MiniLM-L6-v2.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["great", "excellent", "wonderful", "lovely", "fantastic", "superb", "friendly",
            "delicious", "perfect", "amazing"]
NEGATIVE = ["terrible", "awful", "horrible", "rude", "broken", "cold", "dirty", "slow",
            "disappointing", "useless"]
NOUNS = ["food", "staff", "hotel", "phone", "service", "room", "delivery", "app", "screen",
         "battery"]
CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自可好坏很服务菜"


def _write_backbone(directory: Path, vocab: list[str], seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)},
                              do_lower_case=True)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory)
    return directory


def english_vocab() -> list[str]:
    sample = Path(__file__).parents[1] / "src/funcformer/_data_files/reviews.csv"
    words = set(re.findall(r"[a-z]+", sample.read_text("utf-8").lower()))
    words |= set(POSITIVE + NEGATIVE + NOUNS + ["the", "was", "is", "very", "not"])
    pieces = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    return SPECIAL + list(".,!?'-0123456789") + pieces + sorted(words)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a random-init 2-layer BERT (hidden 32) and its WordPiece tokenizer."""
    return _write_backbone(tmp_path_factory.mktemp("tiny-bert"), english_vocab())


@pytest.fixture(scope="session")
def tiny_chinese_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT whose vocabulary is single Chinese characters (as bert-base-chinese)."""
    return _write_backbone(tmp_path_factory.mktemp("tiny-bert-zh"), SPECIAL + list(CJK), seed=1)


def make_reviews(n_per_class: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    """Separable two-class toy data: positive and negative words about a noun."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_per_class):
        rows.append((f"the {rng.choice(NOUNS)} was {rng.choice(POSITIVE)}", "positive"))
        rows.append((f"the {rng.choice(NOUNS)} was {rng.choice(NEGATIVE)}", "negative"))
    rng.shuffle(rows)
    return rows


@pytest.fixture()
def reviews() -> list[tuple[str, str]]:
    return make_reviews()


@pytest.fixture()
def reviews_csv(tmp_path: Path, reviews: list[tuple[str, str]]) -> Path:
    import csv

    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(reviews)
    return path


def run_cli(*args: object) -> int:
    """Run the `funcformer` command in-process (arguments as given, str() applied); returns
    its exit code. Output stays in pytest's capsys."""
    from funcformer._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return int(exit_info.value.code)
