"""`full`: fine-tune a private copy of the encoder together with the head (AdamW, warm-up and
linear decay, clipping, early stopping on the eval metric). The shared backbone is untouched.
`lora`, `adalora`, `ia3`, `prompt` and `prefix` are the same strategy with a view of the
backbone carrying that adapter as the encoder."""

from __future__ import annotations

from typing import Any

import torch

from .. import _peft
from .._backbone import Backbone
from .._cache import Cache
from .._config import TrainConfig
from .._data import Examples
from .._model import FunctionModel
from .._train import Plan, content_digest, length_grouped_batches, run
from . import Trained, trainable_encoder
from .head import probe


def fit(task: Any, backbone: Backbone, train: Examples, eval_data: Examples | None,
        config: TrainConfig, progress: bool, source: str, cache: Cache | None) -> Trained:
    # Linear probing first (Kumar et al. 2022, "LP-FT"): a head fit on frozen features gives
    # the fine-tuning a sensible start instead of gradients from a random head.
    probe_config = TrainConfig(method="head", seed=config.seed, max_length=config.max_length,
                               dropout=config.dropout, metric=config.metric).resolved()
    head, _, _ = probe(task, backbone, train, eval_data, probe_config, progress, cache=cache)
    encoded = backbone.tokenize(train.texts, config.max_length)
    targets = task.targets(train)
    rows = encoded.input_ids
    lengths = [len(r) for r in rows]
    batch_size = int(config.batch_size or 16)
    steps = len(length_grouped_batches(lengths, batch_size, config.seed)) * int(config.epochs or 1)
    torch.manual_seed(config.seed)
    encoder = trainable_encoder(backbone.model, config, steps)
    model = FunctionModel(encoder, head.to(backbone.device), backbone.pooling)

    def batches(epoch: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        order = length_grouped_batches(lengths, batch_size, config.seed + epoch)
        return [(backbone.pad([rows[i] for i in idx]), targets[idx].to(backbone.device))
                for idx in order]

    plan = Plan(model=model, batches=batches, forward=lambda m, batch: m(**batch),
                loss=_peft.regularized(task.loss, encoder),
                evaluate=_evaluator(task, backbone, eval_data, config), head=head,
                baseline=True, after_step=_peft.after_step(encoder),
                eval_key=content_digest(eval_data))
    history = run(plan, config, progress=progress,
                  description="fine-tune" if config.method == "full" else config.method)
    _peft.settle(encoder)
    encoder.eval()
    return Trained(encoder, model.head.cpu(), history, encoded.truncated, source)


def _evaluator(task: Any, backbone: Backbone, eval_data: Examples | None,
               config: TrainConfig) -> Any:
    if eval_data is None:
        return None
    def evaluate(model: torch.nn.Module) -> tuple[float, float]:
        features, _ = backbone.embed(eval_data.texts, encoder=model.encoder,
                                     max_length=config.max_length)
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(features).to(backbone.device))
            return task.judge(logits, eval_data, config.metric)

    return evaluate
