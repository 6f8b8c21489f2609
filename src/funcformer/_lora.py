"""LoRA through PEFT, on a view of the shared backbone that owns no base weights.

`view(model, spec)` makes a structural copy of the backbone's module tree whose parameters are
the backbone's own tensors (no copy: `Parameter(p.detach())` shares storage), then PEFT injects
LoRA layers into that copy. Training touches only the adapter; inference runs the copy. Ten
LoRA functions in one process therefore hold one set of backbone weights plus ten adapters of
a few hundred kilobytes, and never change what other functions on that backbone compute.

An artifact stores the adapter in PEFT's own format (`adapter/adapter_config.json` and
`adapter/adapter_model.safetensors`), so PEFT can also load it onto the backbone directly.
The other PEFT methods (`_peft`) share the view, the saving and the merging here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _fused
from ._artifact import DAMAGED_FIX, float32_tensors
from ._config import Options
from ._errors import ArtifactError, TaskError, is_real, is_whole

ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ATTENTION = ("attention", "attn")
_LAYERS = (".layer.", ".layers.", ".h.", ".block.")


class Settings(Options):
    """Base of the PEFT methods' settings (`LoRA`, `AdaLoRA`, `IA3`, ...): keyword-only frozen
    dataclasses, stored as a dict in TrainConfig and the manifest, rebuilt with `from_value`."""

    def __post_init__(self) -> None:
        for name in ("targets", "feed_forward"):  # lists from JSON/YAML -> hashable tuples
            value = getattr(self, name, None)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))


@dataclass(kw_only=True, frozen=True)
class LoRA(Settings):
    """LoRA settings for `method="lora"` (or `contrastive` with LoRA encoder updates).

    >>> LoRA(r=16).alpha
    16
    """

    r: int = 8
    """Rank of the update matrices."""
    alpha: int = 16
    """Scale of the update is alpha / r."""
    dropout: float = 0.1
    """Dropout on the adapter's input."""
    targets: tuple[str, ...] | None = None
    """Module names (or name suffixes) to adapt; None: every linear projection of the attention
    blocks (query, key, value, output), plus the feed-forward ones with `feed_forward`."""
    feed_forward: bool = False
    """Also adapt the feed-forward projections (about twice the adapter size)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, whole in (("r", True), ("alpha", False), ("dropout", False)):
            value = getattr(self, name)
            if not (is_whole(value) if whole else is_real(value)):
                kind = "a whole number" if whole else "a number"
                raise TaskError(f"LoRA {name} must be {kind}, got {value!r}. Fix: e.g. "
                                "LoRA(r=8, alpha=16, dropout=0.1) (CLI: --set "
                                "lora='{\"r\": 8}').")
        if not isinstance(self.feed_forward, bool):
            raise TaskError(f"LoRA feed_forward must be true or false, got "
                            f"{self.feed_forward!r}.")
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise TaskError(f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1; got r={self.r}, "
                            f"alpha={self.alpha}, dropout={self.dropout}.")


def target_modules(model: torch.nn.Module, spec: Any) -> list[str]:
    """Full names of the modules to adapt: linear layers (and GPT-2's Conv1D) inside the
    transformer blocks, those of attention by default, feed-forward too when asked."""
    names = []
    for name, module in model.named_modules():
        if not _is_projection(module):
            continue
        dotted = f".{name}."
        if spec.targets is not None:
            if any(name == t or name.endswith("." + t) for t in spec.targets):
                names.append(name)
        elif any(part in dotted for part in _LAYERS) and (
                spec.feed_forward or any(word in name for word in _ATTENTION)):
            names.append(name)
    if not names:
        wanted = ", ".join(spec.targets) if spec.targets else "attention projections"
        kind = type(spec).__name__
        raise TaskError(f"{kind} found no modules to adapt ({wanted}) in this "
                        f"{type(model).__name__}. Fix: pass {kind}(targets=[...]) with names "
                        "of its linear layers.")
    return names


def _is_projection(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def peft_config(model: torch.nn.Module, spec: LoRA) -> Any:
    from peft import LoraConfig

    names = target_modules(model, spec)
    # GPT-2's Conv1D stores its weight as (in, out): PEFT must know (and warns otherwise).
    transposed = any(type(model.get_submodule(n)).__name__ == "Conv1D" for n in names)
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=names, bias="none", fan_in_fan_out=transposed)


def shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model`'s module tree whose parameters and buffers are `model`'s tensors (no
    new memory); its parameters are frozen without touching `model`'s."""
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = torch.nn.Parameter(param.detach(), requires_grad=False)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer
    clone = copy.deepcopy(model, memo)
    _fused.share(clone, model)  # its adapters' inference reuses `model`'s fused weights
    return clone


def view(model: torch.nn.Module, spec: LoRA | None = None, config: Any = None) -> torch.nn.Module:
    """The shared backbone `model` with a fresh LoRA adapter (only the adapter trains)."""
    from peft import inject_adapter_in_model

    spec = spec or LoRA()
    clone = shared_copy(model)
    config = config if config is not None else peft_config(clone, spec)
    inject_adapter_in_model(config, clone, adapter_name="default")
    for name, param in clone.named_parameters():
        param.requires_grad_("lora_" in name)
    return clone


def is_view(model: torch.nn.Module) -> bool:
    """Whether `model` carries a PEFT adapter (made by `view` or `attach` here or in `_peft`,
    not merged)."""
    from ._peft import Adapted

    if isinstance(model, Adapted):
        return not model.merged
    return bool(getattr(model, "peft_config", None)) and any(
        "lora_" in name for name, _ in model.named_parameters())


def describe(model: torch.nn.Module) -> dict[str, Any]:
    """The manifest's record of an adapter."""
    from ._peft import Adapted

    if isinstance(model, Adapted):
        return model.describe()
    config = model.peft_config["default"]
    state = adapter_state(model)
    return {"type": "lora", "r": config.r, "alpha": config.lora_alpha,
            "dropout": config.lora_dropout, "targets": sorted(config.target_modules),
            "parameters": sum(v.numel() for v in state.values())}


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights under PEFT's names."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(_peft_model(model), adapter_name="default")


def _peft_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module PEFT knows: the PeftModel inside a `_peft.Adapted`, else `model` itself."""
    from ._peft import Adapted

    return model.peft if isinstance(model, Adapted) else model


def save(model: torch.nn.Module, directory: Path) -> None:
    """Write `directory/adapter/` in PEFT's format (config JSON + safetensors)."""
    from safetensors.torch import save_file

    target = directory / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    # The state first: for AdaLoRA, PEFT settles the rank pattern's names while collecting it.
    state = adapter_state(model)
    _peft_model(model).peft_config["default"].save_pretrained(str(target))
    save_file(float32_tensors(state), str(target / ADAPTER_WEIGHTS))


def read_adapter(directory: Path) -> tuple[str, Any, dict[str, torch.Tensor]]:
    """PEFT's type name ("LORA", "IA3", ...), config and weights of `directory/adapter/`."""
    from peft import PeftConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    source = directory / ADAPTER_DIR
    config_file, weights_file = source / ADAPTER_CONFIG, source / ADAPTER_WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        raise ArtifactError(f"{directory}: the adapter ({ADAPTER_DIR}/{ADAPTER_CONFIG} and "
                            f"{ADAPTER_WEIGHTS}) is missing. Save the function again.")
    file = config_file
    try:
        kind = str(json.loads(config_file.read_text("utf-8")).get("peft_type"))
        config = PeftConfig.from_pretrained(str(source))
        file = weights_file
        state = load_file(str(weights_file))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, SafetensorError) as err:
        raise ArtifactError(f"{file}: cannot read the adapter ({str(err)[:200]}); the file is "
                            f"damaged. {DAMAGED_FIX}") from None
    return kind, config, state


def attach(model: torch.nn.Module, directory: Path, merge: bool = False) -> torch.nn.Module:
    """A view of the shared backbone `model` carrying the adapter saved in
    `directory/adapter/`; with `merge`, the adapter is folded into private copies of the
    adapted weights (faster calls, a few MB more memory, the backbone untouched). Adapters
    other than LoRA are attached by `_peft.attach`."""
    from peft import set_peft_model_state_dict

    kind, config, state = read_adapter(directory)
    if kind != "LORA":
        from . import _peft

        return _peft.attach(model, directory, kind, config, state, merge)
    clone = view(model, config=config)
    result = set_peft_model_state_dict(clone, state, adapter_name="default")
    not_fitting(directory, [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k])
    clone.requires_grad_(False).eval()
    return merged(clone) if merge else clone


def not_fitting(directory: Path, unexpected: list[str]) -> None:
    """An ArtifactError when PEFT found adapter weights with no place in this backbone."""
    if unexpected:
        raise ArtifactError(f"{directory / ADAPTER_DIR / ADAPTER_WEIGHTS}: adapter weights do "
                            f"not fit this backbone ({unexpected[0]}…).")


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """Fold each adapter layer (LoRA, AdaLoRA, IA³) into private copies of its base weight and
    bias (PEFT's own merge), then replace the layer by that plain base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        base = module.get_base_layer()
        for key, param in list(base.named_parameters(recurse=False)):  # weight, bias
            setattr(base, key, torch.nn.Parameter(param.detach().clone(), requires_grad=False))
        module.merge(adapter_names=["default"])
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, base)
    return model


def size_bytes(directory: Path) -> int:
    """Bytes of the adapter files in an artifact."""
    return sum(f.stat().st_size for f in (directory / ADAPTER_DIR).glob("*") if f.is_file())
