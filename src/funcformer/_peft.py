"""More PEFT methods: AdaLoRA, IA³, prompt tuning and prefix tuning, through PEFT itself.

As with `lora` (see `_lora`), the adapter lives on a *view* of the shared backbone: a copy of
its module tree whose parameters are the backbone's own tensors, wrapped by PEFT's
`PeftModelForFeatureExtraction`. Only the adapter trains; the backbone's weights are never
changed or copied. The artifact stores the adapter in PEFT's format under `adapter/`.

`Adapted` makes such a view look like the backbone to the rest of funcformer: called with
`input_ids` and `attention_mask`, its `last_hidden_state` covers the real tokens only. Prompt
tuning prepends virtual token embeddings (PEFT extends the attention mask with ones for them);
they are cut off the output, so pooling (mean, CLS, max) sees exactly the tokens it would see
without them. Prefix tuning adds key/value states to each layer and leaves the output's length
alone. Both take position ids after the virtual tokens, so a text may have
`max_position_embeddings - num_virtual_tokens` tokens at most (see `room_for_virtual_tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from ._errors import ArtifactError, TaskError
from ._lora import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    Settings,
    merged,
    not_fitting,
    shared_copy,
    target_modules,
)

PEFT_METHODS = ("adalora", "ia3", "prompt", "prefix")
"""The methods of this module; `lora` has its own (`_lora`)."""
MERGEABLE = ("lora", "adalora", "ia3")
"""Methods whose adapter PEFT can fold into the weights (`merge_adapter=True`)."""
_TYPES = {"ADALORA": "adalora", "IA3": "ia3", "PROMPT_TUNING": "prompt",
          "PREFIX_TUNING": "prefix"}
"""PEFT's `peft_type` in adapter_config.json -> our method name."""


@dataclass(kw_only=True, frozen=True)
class AdaLoRA(Settings):
    """AdaLoRA settings for `method="adalora"`: LoRA whose rank budget moves, during training,
    to the matrices where it matters most (Zhang et al. 2023).

    >>> AdaLoRA(r=4).init_r
    12
    """

    method: ClassVar[str] = "adalora"
    r: int = 8
    """Average rank per adapted matrix after the budget is allocated (PEFT's `target_r`)."""
    init_r: int = 12
    """Rank each matrix starts with."""
    alpha: int = 32
    """Scale of the update (divided by the current rank)."""
    dropout: float = 0.1
    """Dropout on the adapter's input."""
    targets: tuple[str, ...] | None = None
    """Module names (or suffixes) to adapt; None: the attention projections, as `LoRA`."""
    feed_forward: bool = False
    """Also adapt the feed-forward projections."""
    warmup: float = 0.1
    """Share of the training steps before ranks start to move (PEFT's `tinit`)."""
    final: float = 0.2
    """Share of the steps at the end with ranks fixed (PEFT's `tfinal`)."""
    interval: int = 10
    """Steps between two budget allocations (PEFT's `deltaT`)."""
    orthogonal: float = 0.5
    """Weight of the regularizer keeping the singular vectors orthogonal."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.r <= self.init_r or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise TaskError(f"AdaLoRA needs 1 <= r <= init_r, alpha > 0 and 0 <= dropout < 1; "
                            f"got r={self.r}, init_r={self.init_r}, alpha={self.alpha}, "
                            f"dropout={self.dropout}.")
        if min(self.warmup, self.final) < 0 or self.warmup + self.final >= 1:
            raise TaskError(f"AdaLoRA needs warmup, final >= 0 and warmup + final < 1 (ranks "
                            f"move in between); got {self.warmup} and {self.final}.")
        if self.interval < 1 or self.orthogonal < 0:
            raise TaskError("AdaLoRA needs interval >= 1 and orthogonal >= 0.")

    def peft_config(self, model: torch.nn.Module, steps: int) -> Any:
        from peft import AdaLoraConfig

        names = target_modules(model, self)
        total = max(int(steps), 1)
        transposed = any(type(model.get_submodule(n)).__name__ == "Conv1D" for n in names)
        return AdaLoraConfig(task_type="FEATURE_EXTRACTION", target_r=self.r, init_r=self.init_r,
                             lora_alpha=self.alpha, lora_dropout=self.dropout,
                             target_modules=names, total_step=total,
                             tinit=math.floor(total * self.warmup),
                             tfinal=math.floor(total * self.final), deltaT=self.interval,
                             orth_reg_weight=self.orthogonal, fan_in_fan_out=transposed)


@dataclass(kw_only=True, frozen=True)
class IA3(Settings):
    """(IA)³ settings for `method="ia3"`: learned vectors that rescale the keys, values and
    feed-forward activations (Liu et al. 2022); the smallest adapter of all.

    >>> IA3().targets is None
    True
    """

    method: ClassVar[str] = "ia3"
    targets: tuple[str, ...] | None = None
    """Module names (or suffixes) to rescale; None: PEFT's choice for the model type (BERT:
    key, value and the output projections)."""
    feed_forward: tuple[str, ...] | None = None
    """Which of `targets` are feed-forward layers (their input is rescaled, not their output);
    None: PEFT's choice for the model type."""

    def peft_config(self, model: torch.nn.Module, steps: int) -> Any:
        from peft import IA3Config

        return IA3Config(task_type="FEATURE_EXTRACTION", target_modules=_list(self.targets),
                         feedforward_modules=_list(self.feed_forward))


@dataclass(kw_only=True, frozen=True)
class PromptTuning(Settings):
    """Prompt tuning settings for `method="prompt"`: `num_virtual_tokens` learned embeddings
    put before every text (Lester et al. 2021); the encoder itself is not changed at all.

    >>> PromptTuning(num_virtual_tokens=8).init
    'vocab'
    """

    method: ClassVar[str] = "prompt"
    num_virtual_tokens: int = 20
    """Learned tokens before each text (each costs a token of compute and of the length limit)."""
    init: str = "vocab"
    """Start from the embeddings of random vocabulary tokens (`vocab`) or from noise
    (`random`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_tokens(self.num_virtual_tokens)
        if self.init not in ("vocab", "random"):
            raise TaskError(f"PromptTuning init must be 'vocab' or 'random', got {self.init!r}.")

    def peft_config(self, model: torch.nn.Module, steps: int) -> Any:
        from peft import PromptTuningConfig

        init = "SAMPLE_VOCAB" if self.init == "vocab" else "RANDOM"
        return PromptTuningConfig(task_type="FEATURE_EXTRACTION", prompt_tuning_init=init,
                                  num_virtual_tokens=self.num_virtual_tokens)


@dataclass(kw_only=True, frozen=True)
class PrefixTuning(Settings):
    """Prefix tuning settings for `method="prefix"`: learned key and value states for
    `num_virtual_tokens` positions in every attention layer (Li and Liang 2021).

    >>> PrefixTuning(projection=True).num_virtual_tokens
    20
    """

    method: ClassVar[str] = "prefix"
    num_virtual_tokens: int = 20
    """Learned positions every token can attend to, in each layer."""
    projection: bool = False
    """Learn the prefix through a small MLP (more stable, more to train; the artifact holds
    only the resulting prefix either way)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_tokens(self.num_virtual_tokens)

    def peft_config(self, model: torch.nn.Module, steps: int) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type="FEATURE_EXTRACTION",
                                  num_virtual_tokens=self.num_virtual_tokens,
                                  prefix_projection=self.projection)


SPECS: dict[str, type[Settings]] = {c.method: c for c in (AdaLoRA, IA3, PromptTuning,
                                                           PrefixTuning)}


def _list(names: tuple[str, ...] | None) -> list[str] | None:
    return list(names) if names is not None else None


def _check_tokens(count: int) -> None:
    if count < 1:
        raise TaskError(f"num_virtual_tokens must be at least 1, got {count}.")


def settings(method: str, value: Any = None) -> Any:
    """The settings object of `method` from None (defaults), a settings object or a dict."""
    if method not in SPECS:
        raise TaskError(f"peft settings apply to methods {', '.join(PEFT_METHODS)}; the method "
                        f"is '{method}'. Fix: pass method='ia3' (say) with them, or drop peft=.")
    spec = SPECS[method]
    if isinstance(value, Settings) and not isinstance(value, spec):
        raise TaskError(f"{type(value).__name__}(...) settings do not fit method '{method}'. "
                        f"Fix: pass method={type(value).__name__}(...) alone.")
    return spec.from_value(value)


class Adapted(torch.nn.Module):
    """A PEFT model on a view of the shared backbone, called as the backbone is:
    `(input_ids, attention_mask)` -> an output whose `last_hidden_state` (B, T, H) covers the
    real tokens only (prompt tuning's virtual tokens are cut off)."""

    def __init__(self, peft_model: torch.nn.Module, method: str,
                 spec: Settings | None = None) -> None:
        super().__init__()
        self.peft = peft_model
        self.method = method
        self.spec = spec
        """The settings it was made with (None when loaded: the manifest has them)."""
        config = peft_model.peft_config["default"]
        self.virtual = config.num_virtual_tokens if method == "prompt" else 0
        self.merged = False

    @property
    def config(self) -> Any:
        """The backbone model's config (what ONNX export and `explain` read)."""
        return self.peft.get_base_model().config

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.peft.get_base_model().get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **kwargs: Any) -> Any:
        out = self.peft(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self.virtual:  # (B, V + T, H) -> (B, T, H): the virtual tokens come first
            out.last_hidden_state = out.last_hidden_state[:, self.virtual:]
        return out

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the adapter: method, settings, size."""
        from peft import get_peft_model_state_dict

        config = self.peft.peft_config["default"]
        state = get_peft_model_state_dict(self.peft, adapter_name="default")
        record: dict[str, Any] = {"type": self.method, **(self.spec.to_dict() if self.spec
                                                          else {})}
        if getattr(config, "target_modules", None):
            record["targets"] = sorted(config.target_modules)
        if self.method == "adalora" and config.rank_pattern:
            record["ranks"] = sum(sum(kept) for kept in config.rank_pattern.values())
        record["parameters"] = sum(v.numel() for v in state.values())
        return record


def view(model: torch.nn.Module, method: str, spec: Any = None, steps: int = 0) -> Adapted:
    """The shared backbone `model` with a fresh adapter of `method` (only the adapter trains);
    `steps` is the number of optimizer steps planned (AdaLoRA's schedule needs it)."""
    spec = settings(method, spec)
    clone = shared_copy(model)
    adapted = _wrap(clone, spec.peft_config(clone, steps), method, spec)
    _check_runs(adapted, model)
    return adapted


def _wrap(clone: torch.nn.Module, config: Any, method: str, spec: Settings | None) -> Adapted:
    import warnings

    from peft import get_peft_model

    try:
        with warnings.catch_warnings():  # transformers' note to PEFT, not to our users
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated",
                                    FutureWarning)
            peft_model = get_peft_model(clone, config)
    except (ValueError, TypeError, AttributeError) as err:
        raise TaskError(f"PEFT cannot put a {method} adapter on this {type(clone).__name__} "
                        f"({str(err)[:200]}). {_alternatives(method)}") from None
    return Adapted(peft_model, method, spec)


def _check_runs(adapted: Adapted, model: torch.nn.Module) -> None:
    """Prompt and prefix tuning change the model's input; not every model takes it. Try one
    short input now rather than fail mid-training."""
    if adapted.method not in ("prompt", "prefix"):
        return
    device = next(model.parameters()).device
    ids = torch.ones((1, 2), dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            adapted(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as err:  # any failure in the model's code means: not supported here
        raise TaskError(f"{adapted.method} tuning does not work with this "
                        f"{type(model).__name__} ({type(err).__name__}: {str(err)[:200]}). "
                        f"{_alternatives(adapted.method)}") from None


def _alternatives(method: str) -> str:
    others = [m for m in ("lora", *PEFT_METHODS) if m != method]
    return f"Fix: use method {', '.join(repr(m) for m in others)}, 'head' or 'full'."


def room_for_virtual_tokens(config: Any, model_config: Any, backbone_limit: int) -> Any:
    """`config` with a token limit that leaves room for prompt or prefix tuning's virtual
    tokens within the model's position embeddings (they come first); else `config` as is."""
    if config.method not in ("prompt", "prefix"):
        return config
    virtual = settings(config.method, config.peft).num_virtual_tokens
    positions = getattr(model_config, "max_position_embeddings", None)
    limit = min(config.max_length or backbone_limit, backbone_limit)
    if not positions or limit + virtual <= positions:
        return config
    if positions - virtual < 8:
        raise TaskError(f"{virtual} virtual tokens leave {positions - virtual} of this model's "
                        f"{positions} positions for the text. Fix: fewer num_virtual_tokens.")
    return replace(config, max_length=positions - virtual)


def regularized(loss: Callable[..., torch.Tensor],
                encoder: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """`loss`, plus AdaLoRA's orthogonality penalty when `encoder` is an AdaLoRA view. PEFT
    adds the penalty only to a loss the model computes itself; ours comes from the head."""
    if not isinstance(encoder, Adapted) or encoder.method != "adalora":
        return loss
    weight = encoder.peft.peft_config["default"].orth_reg_weight
    # lora_A (r, in) should have orthonormal rows, lora_B (out, r) orthonormal columns.
    matrices = [(p, ".lora_A." in n) for n, p in encoder.named_parameters()
                if p.requires_grad and (".lora_A." in n or ".lora_B." in n)]

    def total(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        penalty = logits.new_zeros(())
        for p, rows in matrices:
            cov = p @ p.T if rows else p.T @ p  # (r, r)
            eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
            penalty = penalty + torch.linalg.matrix_norm(cov - eye)
        return loss(logits, targets) + weight * penalty / max(len(matrices), 1)

    return total


def after_step(encoder: torch.nn.Module) -> Callable[[int], None] | None:
    """AdaLoRA's rank allocation, run after each optimizer step (gradients still there);
    None for every other encoder."""
    if not isinstance(encoder, Adapted) or encoder.method != "adalora":
        return None
    return encoder.peft.base_model.update_and_allocate


def settle(encoder: torch.nn.Module) -> None:
    """After training: zero what AdaLoRA's final rank pattern prunes, in case early stopping
    restored an earlier epoch's weights, so the model matches what `save` writes."""
    if isinstance(encoder, Adapted) and encoder.method == "adalora":
        tuner = encoder.peft.base_model
        pattern = tuner.peft_config["default"].rank_pattern
        if pattern:
            tuner.rankallocator.mask_using_rank_pattern(tuner.model, pattern)


def attach(model: torch.nn.Module, directory: Path, kind: str, config: Any,
           state: dict[str, torch.Tensor], merge: bool = False) -> Adapted:
    """A view of the shared backbone `model` carrying the adapter read from
    `directory/adapter/` (`_lora.read_adapter`); with `merge` (AdaLoRA, IA³), the adapter is
    folded into private copies of the adapted weights."""
    from peft import set_peft_model_state_dict

    if kind not in _TYPES:
        raise ArtifactError(f"{directory / ADAPTER_DIR / ADAPTER_CONFIG}: peft_type {kind!r} is "
                            f"not one funcformer loads (LORA, {', '.join(_TYPES)}).")
    method = _TYPES[kind]
    if merge and method not in MERGEABLE:
        raise TaskError(f"{directory}: a {method}-tuned function has no weights to merge "
                        f"({method} tuning changes the input, not the weights). merge_adapter "
                        f"applies to {', '.join(MERGEABLE)} functions. Fix: load it without "
                        "merge_adapter.")
    config.inference_mode = True  # prefix tuning: the saved prefix, not its training MLP
    # AdaLoRA's rank pattern ({name.lora_E: kept ranks}) shrinks the layers as the weights are
    # set, not when they are made (where PEFT would read it as LoRA's {module: rank}).
    pattern, config.rank_pattern = getattr(config, "rank_pattern", None), None
    adapted = _wrap(shared_copy(model), config, method, None)
    adapted.peft.peft_config["default"].rank_pattern = pattern
    try:
        result = set_peft_model_state_dict(adapted.peft, state, adapter_name="default")
    except (RuntimeError, KeyError, ValueError) as err:
        raise ArtifactError(f"{directory / ADAPTER_DIR / ADAPTER_WEIGHTS}: adapter weights do "
                            f"not fit this backbone ({str(err)[:200]}).") from None
    # Prompt learning's one tensor is set on the prompt encoder, past the generic load.
    not_fitting(directory, [k for k in getattr(result, "unexpected_keys", [])
                            if k != "prompt_embeddings"])
    adapted.requires_grad_(False).eval()
    if merge:
        merged(adapted.peft)
        adapted.merged = True
    return adapted
