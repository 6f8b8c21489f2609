"""Training methods: small strategies over the one loop in `_train`.

`head`: frozen backbone, features computed once, only the head trains.
`full`: the encoder (a private copy of the shared backbone) and the head train together.
`lora`: as `full`, but only a LoRA adapter on a view of the shared backbone trains.
`adalora`, `ia3`, `prompt`, `prefix`: as `lora`, with those PEFT methods (`_peft`).
`contrastive`: few-shot; the encoder learns from the pairs in each batch (SetFit's
objective), then a head.
`auto`: one of these, chosen from the data by `choose` (classify) or `choose_tuning` (the
tasks that tune an encoder or decoder: embed, search, tag, pair, generate).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._backbone import Backbone
from .._cache import Cache
from .._config import METHODS, TrainConfig
from .._data import Examples
from .._errors import TaskError
from .._train import History

MIN_HELD_OUT = 20
FEW_PER_CLASS = 64
"""`auto` picks `contrastive` while the smallest class has at most this many examples. At 64 per
class (bench/fewshot.py, 2-3 seeds) it beat `lora` by 3.9 points on SST-2, 5.6 on CR, 0.6 on
AG News and about 20 on Emotion, at 60-280 s of training on 2 CPU cores (was 32)."""
MEDIUM_EXAMPLES = 20_000
"""... and `lora` up to this many examples; beyond, `head` on CPU (full fine-tuning would
take hours on 2 cores) and `full` on a GPU."""
AUTO_LORA = {"r": 16, "feed_forward": True}
"""The adapter of the `lora` that `auto` picks for classify, and of `tune`'s lora trials, when
no LoRA settings are given (`method="lora"` by name keeps `LoRA()`). Against `full`
(bench/lora.py, docs/benchmarks.md): SST-2 with 8,000 examples, seeds 0-2, -0.69 points on
average where `LoRA()` (r=8, attention only) is -1.80; SST-2 with 2,000, -0.34 / -0.46 against
-2.29 / -1.61 (seeds 0-1); Emotion with 8,000, +0.60 against -0.65 (seed 0; seed 1, without
`full`: 1.10 points above `LoRA()`). The price: a 2.7 MB adapter against 0.6 MB, 1.1-1.2x
the training time, calls 1.1-1.2x slower unmerged."""
FEW_EXAMPLES = 64
"""`choose_tuning` keeps a task's default (`full`) below this many training examples."""


@dataclass
class Trained:
    """A method's result: the encoder (None: the shared frozen backbone) and the head."""

    encoder: torch.nn.Module | None
    head: torch.nn.Module
    history: History
    truncated: int
    eval_source: str
    """Where early stopping's eval data came from: 'given', 'held out N', or 'none'."""
    eval_data: Examples | None = None
    """The eval examples used (given or held out), e.g. to tune multi-label thresholds."""
    chosen: dict[str, Any] | None = None
    """Settings the method chose from the data where the config left them None (contrastive:
    epochs and learning rate), recorded in the training report."""


def fit(task: Any, backbone: Backbone, train: Examples, eval_data: Examples | None,
        config: TrainConfig, progress: bool = True, cache: Cache | None = None,
        source: str | None = None) -> Trained:
    """Train with `config.method`; holds out part of `train` when no eval data is given,
    unless `source` says where the eval data came from already ('held out N' or 'none':
    self-training holds out labelled rows once, then trains on them plus pseudo-labels)."""
    from . import contrastive, full, head

    if source is None:
        source = "given"
        if eval_data is None:
            share = config.eval_share
            if config.eval_fraction is None and config.method == "contrastive":
                share = 0.0  # few examples: each one tunes the encoder (TrainConfig.eval_fraction)
            train, eval_data = holdout(train, share, config.seed)
            source = f"held out {len(eval_data)}" if eval_data is not None else "none"
    if not getattr(task, "multi_label", False):  # label names as texts (held-out data: none)
        from .._function import say
        from .labels import with_label_texts

        train, note = with_label_texts(train, config)
        say(f"{config.method}: {note}", progress)
    # Every adapter method is `full`'s strategy with a view of the backbone as the encoder.
    method = {"head": head.fit, "contrastive": contrastive.fit}.get(config.method, full.fit)
    trained = method(task, backbone, train, eval_data, config, progress, source, cache)
    trained.eval_data = eval_data
    return trained


def holdout(examples: Examples, fraction: float,
            seed: int) -> tuple[Examples, Examples | None]:
    """A seeded, label-stratified split; none when fewer than `MIN_HELD_OUT` would be held out.

    Early stopping on a handful of examples is noise: on AG News with 8 examples per class,
    holding out 4 of 32 cost 2 points (random init) to 1.5 points (zero-shot init) of
    accuracy against training all the epochs on everything.
    """
    assert examples.labels is not None
    generator = torch.Generator().manual_seed(seed)
    held: list[int] = []
    for label in sorted(set(examples.labels)):
        rows = [i for i, y in enumerate(examples.labels) if y == label]
        take = round(len(rows) * fraction)
        if len(rows) >= 5 and take >= 1:
            picks = torch.randperm(len(rows), generator=generator)[:take].tolist()
            held += [rows[p] for p in picks]
    if len(held) < MIN_HELD_OUT:
        return examples, None
    kept = sorted(set(range(len(examples))) - set(held))
    return subset(examples, kept), subset(examples, sorted(held))


def subset(examples: Examples, rows: list[int]) -> Examples:
    labels = [examples.labels[i] for i in rows] if examples.labels is not None else None
    return Examples(texts=[examples.texts[i] for i in rows], labels=labels,
                    source=examples.source, places=[examples.places[i] for i in rows])


def choose(labels: list[Any], device: str = "cpu", multi_label: bool = False,
           init: bool = False) -> tuple[str, str]:
    """`auto`: the method for this labelled data, and why (printed by `train`).

    Few examples per class -> `contrastive` (it gains most where a head alone has little to
    go on); a medium amount -> `lora` (near `full` accuracy, a small artifact, a shared
    backbone); many -> `full` on a GPU, `head` on CPU where fine-tuning would take hours.
    A head started from label embeddings (`init`) needs the backbone's own features: `head`.
    """
    if init:
        return "head", "the head starts from the label embeddings, which fit the frozen backbone"
    n = len(labels)
    if multi_label:
        counts: Counter[Any] = Counter(y for row in labels for y in row)
    else:
        counts = Counter(labels)
    smallest = min(counts.values()) if counts else 0
    if smallest <= FEW_PER_CLASS and not multi_label:
        return "contrastive", (f"the smallest class has {smallest} examples (<= {FEW_PER_CLASS}):"
                               " few-shot contrastive tuning")
    if n <= MEDIUM_EXAMPLES:
        return "lora", f"{n} examples: a LoRA adapter (small artifact, shared backbone)"
    if str(device).startswith("cuda"):  # (a torch.device too)
        return "full", f"{n} examples on {device}: full fine-tuning"
    return "head", (f"{n} examples on CPU: a head on the frozen backbone (fine-tuning would take "
                    "hours here; pass method='lora' or 'full' to do it anyway)")


def task_method(task: str, method: Any, config: TrainConfig | None, allowed: Sequence[str],
                options: dict[str, Any]) -> str | None:
    """The method asked of a task that tunes an encoder or decoder (`allowed[0]` is its
    default): None (not given), "auto", or one of `allowed`; a TaskError names what works.
    LoRA settings (`lora={...}`) without a method, or with "auto", mean `lora`."""
    asked = (config.method if config is not None else None) or method
    if asked in (None, "auto") and "lora" in allowed and (
            options.get("lora") is not None or (config is not None and config.lora is not None)):
        return "lora"
    if asked in (None, "auto", *allowed):
        return asked
    names = [f"'{allowed[0]}' (the default)", *(f"'{m}'" for m in allowed[1:]), "'auto'"]
    works = f"{task} trains with method {', '.join(names[:-1])} or {names[-1]}"
    if asked not in METHODS:
        raise TaskError(f"Unknown training method '{asked}'. {works}.")
    why = {"contrastive": " (contrastive tunes a classifier's encoder from its labels)",
           "head": " (a language model has no separate head to train on frozen features)"
                   if task == "generate" else f" ({task} has no head on frozen features: its "
                   "output is the encoder's own, so the encoder is what trains)",
           **dict.fromkeys(("adalora", "ia3", "prompt", "prefix"),
                           " (AdaLoRA, IA³, prompt and prefix tuning train classify functions)"),
           }.get(asked, "")
    raise TaskError(f"{works}, not '{asked}'{why}.")


def choose_tuning(asked: str | None, default: str, examples: int,
                  device: str = "cpu") -> tuple[str, str | None]:
    """The method for a task that tunes an encoder or decoder, and why when `auto` chose it
    (None: not chosen, nothing to say). Not given: the task's `default`. `auto`: few examples
    -> `default` (tuning every weight costs little, as classify's few-shot `contrastive` does);
    a medium amount -> `lora` (small artifact, shared backbone); many -> `full` on a GPU,
    `lora` on CPU (frozen base weights need no gradients or optimizer state)."""
    if asked != "auto":
        return asked or default, None
    if examples < FEW_EXAMPLES:
        return default, f"{examples} examples (< {FEW_EXAMPLES}): '{default}', the task's default"
    if examples <= MEDIUM_EXAMPLES:
        return "lora", f"{examples} examples: a LoRA adapter (small artifact, shared backbone)"
    if str(device).startswith("cuda"):  # (a torch.device too)
        return "full", f"{examples} examples on {device}: full fine-tuning"
    return "lora", (f"{examples} examples on CPU: a LoRA adapter (no gradients or optimizer "
                    "state for the base weights; pass method='full' to tune them all anyway)")


def trainable_encoder(model: torch.nn.Module, config: TrainConfig,
                      steps: int = 0) -> torch.nn.Module:
    """What a method trains of the shared backbone's `model`: a LoRA view (`lora`, or
    `contrastive` given `config.lora`), an AdaLoRA, IA³, prompt or prefix view (`steps`: the
    optimizer steps planned, for AdaLoRA's schedule), or a private full copy (`full`,
    `contrastive`)."""
    from .._peft import PEFT_METHODS

    if config.method in PEFT_METHODS:
        from .. import _peft

        if config.method == "adalora" and config.resume:
            raise TaskError("resume cannot restore AdaLoRA's rank allocator (its importance "
                            "scores are not checkpointed). Fix: train again without resume, "
                            "or use method 'lora' or 'ia3', which resume exactly.")
        return _peft.view(model, config.method, config.peft, steps).train()
    if config.method == "lora" or config.lora is not None:
        from .. import _lora

        return _lora.view(model, _lora.LoRA.from_value(config.lora)).train()
    return copy.deepcopy(model).train().requires_grad_(True)
