"""`head`: the backbone stays frozen; its pooled features are computed once, then only the
head trains, for many cheap epochs. When the eval data was held out of the training data, the
best epoch count found on it is used to refit the head on all the data."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .._backbone import Backbone
from .._cache import Cache
from .._config import TrainConfig
from .._data import Examples
from .._train import History, Plan, run, shuffled_batches
from . import Trained


def fit(task: Any, backbone: Backbone, train: Examples, eval_data: Examples | None,
        config: TrainConfig, progress: bool, source: str, cache: Cache | None) -> Trained:
    refit = source.startswith("held out")
    if config.checkpoint_dir:
        from .._function import say

        say("head: a head on frozen features trains in seconds, so it writes no checkpoints "
            "(--checkpoint-dir and --resume do nothing here).", progress)
    head, history, truncated = probe(task, backbone, train, eval_data, config, progress, refit,
                                     cache)
    return Trained(None, head, history, truncated, source)


def probe(task: Any, backbone: Backbone, train: Examples, eval_data: Examples | None,
          config: TrainConfig, progress: bool, refit: bool = False,
          cache: Cache | None = None,
          encoder: torch.nn.Module | None = None) -> tuple[torch.nn.Module, History, int]:
    """Fit a head on frozen features; with `refit`, fit again on train + eval data for the
    number of epochs that was best on the eval data."""
    features, truncated = _features(backbone, train, config, cache, encoder)
    targets = task.targets(train)
    if eval_data is None:
        head, history = _train_head(task, features, targets, config, None, progress)
        return head, history, truncated
    eval_features, _ = _features(backbone, eval_data, config, cache, encoder)
    def evaluate(model: torch.nn.Module) -> tuple[float, float]:
        with torch.inference_mode():
            return task.judge(model(eval_features), eval_data, config.metric)

    head, history = _train_head(task, features, targets, config, evaluate, progress)
    if refit and history.best_epoch == 0:  # training never beat the informed start
        head = task.head(features.shape[1], config.dropout).eval()
    elif refit:
        again = dataclasses.replace(config, epochs=max(history.best_epoch, 1))
        head, _ = _train_head(task, torch.cat([features, eval_features]),
                              torch.cat([targets, task.targets(eval_data)]), again, None, False,
                              description="head refit")  # its own TensorBoard run
    return head, history, truncated


def _features(backbone: Backbone, examples: Examples, config: TrainConfig,
              cache: Cache | None, encoder: torch.nn.Module | None = None
              ) -> tuple[torch.Tensor, int]:
    """Pooled features of the backbone (cached) or of a tuned `encoder` (never cached)."""
    array, truncated = backbone.embed(examples.texts, encoder=encoder,
                                      max_length=config.max_length,
                                      cache=cache if encoder is None else None)
    return torch.from_numpy(array), truncated


def _train_head(task: Any, features: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
                evaluate: Any, progress: bool, description: str = "head"
                ) -> tuple[torch.nn.Module, History]:
    # Heads train in seconds (and `head` trains twice when it refits): never checkpointed.
    config = dataclasses.replace(config, checkpoint_dir=None, checkpoint_steps=None,
                                 resume=False)
    torch.manual_seed(config.seed)
    head = task.head(features.shape[1], config.dropout)
    batch_size = int(config.batch_size or 32)

    def batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(features[idx], targets[idx])
                for idx in shuffled_batches(len(targets), batch_size, config.seed + epoch)]

    plan = Plan(model=head, batches=batches, forward=lambda model, x: model(x),
                loss=task.loss, evaluate=evaluate, baseline=task.init is not None)
    return head, run(plan, config, progress=progress, description=description)
