"""Fused encoder layers for inference on a CPU.

A transformers BERT layer is about twenty small modules; on short inputs on a CPU their Python
dispatch costs as much as the matrix products. PyTorch has the whole post-norm encoder layer
(packed QKV projection, attention, output projection, both LayerNorms and the GELU/ReLU
feed-forward) as one native op, `torch._transformer_encoder_layer_fwd`, the fast path of
`nn.TransformerEncoderLayer`. `last_hidden_state` runs a BERT-family encoder through it with the
model's own weights when it can tell the result is the same computation (checked against
transformers in tests to ~1e-5), and through transformers otherwise:

- only in inference (no autograd, eval mode, not traced or compiled), on a CPU, in float32 or
  bfloat16;
- only the plain architecture: `bert`, `roberta`, `xlm-roberta` or `camembert` with absolute
  positions, exact GELU or ReLU, no decoder or cross-attention, and every projection a plain
  `nn.Linear` (a LoRA-injected or quantized layer keeps transformers' path);
- never when a module of the encoder has hooks (they would not run);
- not with `FUNCFORMER_FUSED=0` in the environment (or `funcformer._fused.ENABLED = False`).

The packed QKV weights (3 x hidden^2 per layer: 10.6 MB for all-MiniLM-L6-v2) are built once
per encoder and rebuilt when a query, key or value tensor is replaced, its version counter
moves (an in-place change: loading a state dict, most optimizers), its gradient changes, or
any optimizer in the process steps (a global step hook: PyTorch's fused optimizers update
weights without moving the version counter). Weights that are inference tensors (made under
`torch.inference_mode`) have no version counter and are packed on every call. funcformer's
training loop also calls `forget` after each step. A change that none of these see (writing
`weight.data` in place) needs `forget`.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

ENABLED = os.environ.get("FUNCFORMER_FUSED", "1").strip() != "0"
MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "camembert"}
ACTIVATIONS = {"gelu": True, "relu": False}  # hidden_act -> the op's use_gelu
INPUTS = {"input_ids", "attention_mask", "token_type_ids"}

_plans: weakref.WeakKeyDictionary[torch.nn.Module, _Plan] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()
_steps = 0  # optimizer steps taken in this process (a fused one bumps no version counter)


def _stepped(optimizer: Any, args: Any, kwargs: Any) -> None:
    global _steps
    _steps += 1


register_optimizer_step_post_hook(_stepped)


def last_hidden_state(encoder: torch.nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    """`encoder(**inputs).last_hidden_state` (B, T, H), through the fused layers when they
    compute the same thing (see the module docstring). Rows past a text's length hold values
    of no meaning, as transformers' do: pool them away with the attention mask."""
    plan = _plan_for(encoder) if _inference(encoder, inputs) else None
    if plan is None:
        return encoder(**inputs).last_hidden_state
    return plan(**inputs)


def _inference(encoder: torch.nn.Module, inputs: dict[str, Any]) -> bool:
    from torch.nn.modules import module

    return (ENABLED and not torch.is_grad_enabled() and not encoder.training
            and set(inputs) <= INPUTS and "input_ids" in inputs
            and inputs["input_ids"].device.type == "cpu"
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not _compiling() and not _autocast()
            and not module._global_forward_hooks and not module._global_forward_pre_hooks)


def _autocast() -> bool:
    """Whether CPU autocast is on (transformers' modules would run under its dtype rules)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _compiling() -> bool:
    """Whether torch.compile is tracing (`torch.compiler.is_compiling` is from torch 2.3)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check()) if check is not None else bool(torch._dynamo.is_compiling())


def _plan_for(encoder: torch.nn.Module) -> _Plan | None:
    """The encoder's plan while its layers are the ones it was made for and none has hooks;
    None (transformers' path) otherwise. Whether it is eligible at all is decided when a plan
    is made, as that walks the whole model; an ineligible one fails the walk early."""
    with _plans_lock:
        plan = _plans.get(encoder)
        if plan is None or not plan.intact(encoder):
            if not eligible(encoder):
                _plans.pop(encoder, None)
                return None
            plan = _plans[encoder] = _Plan(encoder)
    return None if plan.hooked(encoder) else plan


def forget(model: torch.nn.Module) -> None:
    """Drop the packed weights of every encoder in `model`: call after changing weights in a
    way their version counters miss (PyTorch's fused optimizers, `fused=True`, update in
    place without a bump). The training loop does after each step."""
    with _plans_lock:
        for module in model.modules():
            _plans.pop(module, None)


def _structure(encoder: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The modules the fused layers stand in for, or read weights from, fetched by name
    (what a module replaced in place changes), or None when one is missing."""
    try:
        stack = encoder._modules["encoder"]
        out = [encoder._modules["embeddings"], stack, stack._modules["layer"]]
        for layer in stack._modules["layer"]:
            parts = layer._modules
            attention = parts["attention"]._modules
            inner, outer = attention["self"]._modules, attention["output"]._modules
            out += [layer, parts["attention"], attention["self"], attention["output"],
                    inner["query"], inner["key"], inner["value"], outer["dense"],
                    outer["LayerNorm"], parts["intermediate"],
                    parts["intermediate"]._modules["dense"],
                    parts["intermediate"]._modules["intermediate_act_fn"], parts["output"],
                    parts["output"]._modules["dense"], parts["output"]._modules["LayerNorm"]]
    except (KeyError, AttributeError, TypeError):
        return None
    return out


def eligible(encoder: torch.nn.Module) -> bool:
    """Whether `encoder` is an architecture the fused layers compute exactly. Checked when a
    plan is made; a plan checks on each call that its modules are still in place, so a layer
    replaced later (an adapter injected) takes transformers' path from then on."""
    config = getattr(encoder, "config", None)
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if (config is None or getattr(config, "model_type", None) not in MODEL_TYPES
            or getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False)
            or getattr(config, "position_embedding_type", "absolute") not in (None, "absolute")
            or getattr(config, "hidden_act", None) not in ACTIVATIONS
            or getattr(encoder, "embeddings", None) is None or not layers
            or _structure(encoder) is None):
        return False
    try:
        parameter = next(encoder.parameters())
    except StopIteration:
        return False
    if parameter.dtype not in (torch.float32, torch.bfloat16):
        return False
    eps = set()
    for layer in layers:
        try:
            attention = layer.attention.self
            linears = [attention.query, attention.key, attention.value,
                       layer.attention.output.dense, layer.intermediate.dense, layer.output.dense]
            norms = [layer.attention.output.LayerNorm, layer.output.LayerNorm]
            heads = int(attention.num_attention_heads)
            act = layer.intermediate.intermediate_act_fn
        except AttributeError:
            return False
        gelu = ACTIVATIONS[config.hidden_act]
        exact_gelu = (type(act).__name__ == "GELUActivation"
                      and getattr(act, "act", None) is torch.nn.functional.gelu)
        if not (exact_gelu if gelu else type(act) is torch.nn.ReLU):
            return False
        if getattr(layer, "crossattention", None) is not None or any(
                type(m) is not torch.nn.Linear or m.bias is None for m in linears) or any(
                type(n) is not torch.nn.LayerNorm or n.weight is None or n.bias is None
                for n in norms) or any(m.weight.dtype != parameter.dtype or
                                       m.bias.dtype != parameter.dtype for m in linears + norms):
            return False
        width = attention.query.out_features
        if width != config.hidden_size or width % heads or \
                attention.key.out_features != width or attention.value.out_features != width:
            return False
        eps.update(n.eps for n in norms)
    return len(eps) == 1


class _Plan:
    """The fused forward of one eligible encoder."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = weakref.ref(encoder)
        self.structure = _structure(encoder) or []
        pooler = getattr(encoder, "pooler", None)  # (not computed: only the states are used)
        # forwards that do not run; not the encoder itself (`hooked` is given it): a strong
        # reference from its own plan, a value of the weak-keyed `_plans`, would keep both alive
        self.bypassed = [*encoder.encoder.modules(),
                         *(pooler.modules() if isinstance(pooler, torch.nn.Module) else ())]
        self.dtype = next(encoder.parameters()).dtype
        layers = encoder.encoder.layer
        self.heads = int(layers[0].attention.self.num_attention_heads)
        self.eps = float(layers[0].output.LayerNorm.eps)
        self.use_gelu = ACTIVATIONS[encoder.config.hidden_act]
        self.lock = threading.Lock()
        self.packed: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.stamp: tuple[Any, ...] = ()
        self.refs: list[weakref.ref[torch.Tensor]] = []

    def intact(self, encoder: torch.nn.Module) -> bool:
        """Whether `encoder` still has the modules and dtype this plan was made for."""
        now = _structure(encoder)
        return (now is not None and len(now) == len(self.structure)
                and all(a is b for a, b in zip(now, self.structure, strict=True))
                and now[7].weight.dtype == self.dtype)  # (the first layer's query)

    def hooked(self, encoder: torch.nn.Module) -> bool:
        """Whether a module whose forward the fused layers skip has hooks (they would not run;
        the embeddings' do, as they are called)."""
        return any(m._forward_hooks or m._forward_pre_hooks for m in (encoder, *self.bypassed))

    def _qkv(self, layers: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's packed (3H, H) weight and (3H,) bias, rebuilt when one changed."""
        parts = [(p.query, p.key, p.value) for p in (layer.attention.self for layer in layers)]
        tensors = [t for trio in parts for linear in trio for t in (linear.weight, linear.bias)]
        if any(t.is_inference() for t in tensors):  # no version counter: pack afresh each call
            return [(torch.cat([q.weight, k.weight, v.weight]),
                     torch.cat([q.bias, k.bias, v.bias])) for q, k, v in parts]
        stamp = (_steps, *((t.data_ptr(), t._version, t.dtype, id(t.grad),
                            None if t.grad is None else t.grad._version) for t in tensors))
        with self.lock:  # (the tensors by identity: an id can be reused once one is freed)
            if stamp != self.stamp or len(self.refs) != len(tensors) or any(
                    r() is not t for r, t in zip(self.refs, tensors, strict=True)):
                self.packed = [(torch.cat([q.weight, k.weight, v.weight]),
                                torch.cat([q.bias, k.bias, v.bias])) for q, k, v in parts]
                self.stamp, self.refs = stamp, [weakref.ref(t) for t in tensors]
            return self.packed

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        encoder = self.encoder()
        assert encoder is not None  # (called through the encoder, so it is alive)
        layers = encoder.encoder.layer
        states = encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        padding = None if attention_mask is None else attention_mask == 0  # (B, T), True: pad
        if padding is not None and not bool(padding.any()):
            padding = None
        elif padding is not None:  # a row with no real token attends to all (NaN otherwise)
            padding = padding & ~padding.all(dim=1, keepdim=True)
        width = states.shape[-1]
        for layer, (qkv_weight, qkv_bias) in zip(layers, self._qkv(layers), strict=True):
            out, ffn = layer.attention.output, layer
            states = torch._transformer_encoder_layer_fwd(
                states, width, self.heads, qkv_weight, qkv_bias,
                out.dense.weight, out.dense.bias, self.use_gelu, False, self.eps,
                out.LayerNorm.weight, out.LayerNorm.bias,
                ffn.output.LayerNorm.weight, ffn.output.LayerNorm.bias,
                ffn.intermediate.dense.weight, ffn.intermediate.dense.bias,
                ffn.output.dense.weight, ffn.output.dense.bias,
                padding, None if padding is None else 1)
        return states
