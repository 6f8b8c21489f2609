"""Training configuration: one dataclass used from Python, the CLI and artifacts alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ._errors import TaskError

METHODS = ("auto", "head", "full", "lora", "contrastive")
METRICS = ("accuracy", "macro_f1", "micro_f1")
"""Early-stopping metrics a user can choose for `classify`; other tasks use their own
(Spearman for `embed` and `pair`, entity F1 for `tag`, MRR for `search`, loss for `generate`)."""
# Defaults that differ by method: the head trains on cached features, so it can afford many
# cheap epochs at a high learning rate; full fine-tuning takes few epochs at a small one.
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "head": {"epochs": 30, "learning_rate": 5e-2, "batch_size": 32, "patience": 5},
    "full": {"epochs": 4, "learning_rate": 5e-5, "batch_size": 16, "patience": 2,
             "head_learning_rate": 1e-3},
    # Few examples: many cheap epochs over them; batches of 16 hold 8 same-label pairs. On SST-2
    # with 8 per class (3 seeds), 40 epochs at 5e-5 gave 0.674 dev accuracy; 20 at 2e-5 0.663,
    # 40 at 1e-4 0.665 (head alone: 0.654).
    # Only the adapter (and the head) train: a larger step than `full` suits them.
    "lora": {"epochs": 4, "learning_rate": 5e-4, "batch_size": 16, "patience": 2,
             "head_learning_rate": 1e-3},
    # epochs None: the method sets them from the data size (`contrastive.epochs_for`).
    "contrastive": {"epochs": None, "learning_rate": 5e-5, "batch_size": 16, "patience": 40},
}


@dataclass(kw_only=True)
class TrainConfig:
    """How a function is trained.

    >>> TrainConfig(method="full", epochs=2).resolved().learning_rate
    5e-05
    """

    method: str | None = None
    """`head`: frozen backbone, features computed once, only the head trains (seconds).
    `full`: the whole encoder and the head train together (minutes). `lora`: a LoRA adapter on
    the frozen, shared backbone and the head train (a small artifact). `contrastive`: few-shot,
    the encoder learns which texts share a label, then a head is fit. `auto`: chosen from the
    data (see docs/methods.md). None: the task's default (`auto` for classify, `full` for
    tasks that train an encoder or a decoder)."""
    lora: dict[str, Any] | None = None
    """LoRA settings (`funcformer.LoRA` or its dict) for `lora`, and for `contrastive` to tune
    the encoder through an adapter instead of a full copy; None with `lora`: LoRA()."""
    epochs: int | None = None
    """Passes over the training data; None takes the method's default (head 30, full 4)."""
    learning_rate: float | None = None
    """Peak learning rate after warm-up; None takes the method's default (head 5e-2, full 5e-5)."""
    batch_size: int | None = None
    """Examples per optimizer step; None takes the method's default (head 32, full 16)."""
    head_learning_rate: float | None = None
    """Learning rate of the head while the encoder trains (`full`); None: 1e-3. The head is
    first fit on frozen features (linear probing), then everything is fine-tuned together."""
    weight_decay: float = 0.01
    """AdamW weight decay; never applied to biases and LayerNorm weights."""
    warmup_ratio: float = 0.1
    """Fraction of all steps spent warming the learning rate up linearly from zero."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    patience: int | None = None
    """Stop after this many epochs without a better eval metric; None: method default."""
    metric: str = "accuracy"
    """Eval metric for early stopping and choosing the best epoch (`classify`): accuracy,
    macro_f1 or micro_f1 (multi-label uses micro_f1 unless macro_f1 is asked for)."""
    eval_fraction: float = 0.1
    """Share of the training data held out for early stopping when no eval data is given."""
    max_length: int | None = None
    """Token limit per text; None uses the backbone's (256 for all-MiniLM-L6-v2)."""
    dropout: float = 0.1
    """Dropout before the head's linear layer during training."""
    seed: int = 42
    """Seed for initialisation, data order and the held-out split: same seed, same result."""
    checkpoint_dir: str | None = None
    """Write a checkpoint here (atomically) at each epoch's end, for `resume`. Applies to the
    runs that train an encoder or decoder; `head` training takes seconds and is not saved."""
    checkpoint_steps: int | None = None
    """Also checkpoint every this many steps (with `checkpoint_dir`)."""
    log_dir: str | None = None
    """Write TensorBoard scalars here (training loss and learning rate per step, epoch loss
    and eval metric per epoch); needs `pip install 'funcformer[tensorboard]'`."""
    resume: bool = False
    """Continue from the checkpoint in `checkpoint_dir` (if there is one): a run killed mid-way
    ends with the same weights as one never interrupted (same data, options and seed)."""

    def __post_init__(self) -> None:
        if self.lora is not None:
            from ._lora import LoRA

            self.lora = LoRA.from_value(self.lora).to_dict()
        if self.method is not None and self.method not in METHODS:
            raise TaskError(f"Unknown training method '{self.method}'. Choose one of: "
                            f"{', '.join(METHODS)}.")
        if self.metric not in METRICS:
            raise TaskError(f"Unknown metric '{self.metric}'. Choose one of: "
                            f"{', '.join(METRICS)}.")
        for name in ("epochs", "batch_size", "patience", "max_length", "checkpoint_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TaskError(f"{name} must be at least 1, got {value}.")
        for name in ("learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TaskError(f"{name} must be positive, got {value}.")
        if not 0 <= self.eval_fraction < 0.5 or not 0 <= self.warmup_ratio < 1:
            raise TaskError("eval_fraction must be in [0, 0.5) and warmup_ratio in [0, 1).")

    def resolved(self) -> TrainConfig:
        """A copy with every None replaced by the method's default."""
        values = asdict(self)
        values["method"] = self.method or "head"
        if values["method"] == "auto":
            raise TaskError("method 'auto' is chosen from the data by funcformer.train; "
                            "resolve a concrete method.")
        defaults = {"head_learning_rate": values["learning_rate"],
                    **_METHOD_DEFAULTS[values["method"]]}
        for name, default in defaults.items():
            if values[name] is None:
                values[name] = default
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
