"""Every training method on every trainable task: it trains, or a TaskError says why it makes no
sense there (issue 4). Tiny random-init models, one epoch each."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import funcformer
from funcformer import TaskError

METHODS = ["head", "full", "lora", "contrastive", "auto"]
TASKS = ["classify", "multi_label", "embed", "search", "tag", "pair", "generate"]
REFUSED = {
    ("multi_label", "contrastive"): r"contrastive needs one label per text; for multi-label "
                                    r"data use method 'head', 'lora' or 'full'\.",
    **{(task, "head"): rf"{task} trains with method .*, not 'head' \({task} has no head on "
                       r"frozen features: its output is the encoder's own" for task in
       ("embed", "search")},
    ("generate", "head"): r"not 'head' \(a language model has no separate head to train",
    **{(task, "contrastive"): r"not 'contrastive' \(contrastive tunes a classifier's encoder"
       for task in ("embed", "search", "tag", "pair", "generate")},
}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_generate import write_tiny_lm

    return write_tiny_lm(tmp_path_factory.mktemp("tiny-gpt2"))


def _data(task: str, backbone: Path, lm: Path) -> tuple[Any, dict[str, Any]]:
    """(data, extra options) of a small training set for `task`."""
    from conftest import make_reviews
    from test_embed_task import paraphrases
    from test_generate import PAIRS
    from test_pair import make_pairs
    from test_search import FAQ
    from test_tag import toy_rows

    if task == "multi_label":
        rng = random.Random(0)
        rows = [(text, label + ("|food" if rng.random() < 0.5 else ""))
                for text, label in make_reviews(8)]
        return rows, {"backbone": backbone, "multi_label": True}
    queries = [{"text": "great food", "id": "food"}, {"text": "dirty room", "id": "room"}] * 3
    data = {"classify": make_reviews(8), "embed": paraphrases(12), "search": FAQ,
            "tag": toy_rows(12), "pair": make_pairs(12), "generate": PAIRS * 3}[task]
    extra = {"pairs": queries} if task == "search" else {}
    return data, {"backbone": lm if task == "generate" else backbone, **extra}


@pytest.mark.parametrize("task", TASKS)
def test_every_method_trains_or_says_why_not(task: str, tiny_backbone: Path,
                                             tiny_lm: Path) -> None:
    data, options = _data(task, tiny_backbone, tiny_lm)
    for method in METHODS:
        call = ("classify" if task == "multi_label" else task, data)
        kwargs = {**options, "method": method, "epochs": 1, "batch_size": 8, "progress": False}
        refused = REFUSED.get((task, method))
        if refused is not None:
            with pytest.raises(TaskError, match=refused):
                funcformer.train(*call, **kwargs)
        else:
            assert funcformer.train(*call, **kwargs) is not None, (task, method)
