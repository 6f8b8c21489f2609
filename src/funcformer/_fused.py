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
  `nn.Linear`, or PEFT's plain LoRA layer over one, whose terms the oneDNN layers add (a
  quantized layer or another adapter keeps transformers' path);
- never when a module of the encoder has hooks (they would not run);
- not with `FUNCFORMER_FUSED=0` in the environment (or `funcformer._fused.ENABLED = False`).

In float32 the layers' matrix products run through oneDNN with the bias and GELU fused in
(`torch.ops.mkldnn._linear_pointwise`, the op torch.compile's CPU code uses), attention through
`scaled_dot_product_attention`: on an AMD EPYC that took one short text from 7.8 to 5.7 ms and
512 SST-2 texts from 1.56 to 0.95 s against the native op (whose products go through MKL's
sgemm). Where the op is missing or disagrees with `F.linear` on a first check, or with
`FUNCFORMER_ONEDNN=0` (`funcformer._fused.ONEDNN = False`), float32 takes the native op too;
bfloat16 always does. LoRA's terms (`B(A(x)) * scaling` per active adapter) need the oneDNN
layers; a LoRA function of all-MiniLM-L6-v2 (r = 16, feed-forward too) predicted 512 SST-2
texts in 1.05 s against 1.73-1.88 s through PEFT's layers.

The packed QKV weights (3 x hidden^2 per layer: 10.6 MB for all-MiniLM-L6-v2), and on the
oneDNN path every layer weight reordered into its layout (about 41 MB more resident for
all-MiniLM-L6-v2), are built once per encoder (once per backbone for the LoRA copies made by
`_lora`, `share`) and rebuilt when a weight is replaced, its
version counter moves (an in-place change: loading a state dict, most optimizers), or any
optimizer in the process steps (a global step hook: PyTorch's fused optimizers update weights
without moving the version counter). Weights that are inference tensors (made under
`torch.inference_mode`) have no version counter: their QKV weights are packed on every call
and the others used as they are. A change that none of these see (writing `weight.data` in
place) needs `forget`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from typing import Any, NamedTuple

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.overrides import TorchFunctionMode

from . import _packed

log = logging.getLogger("funcformer")
ENABLED = os.environ.get("FUNCFORMER_FUSED", "1").strip() != "0"
ONEDNN = os.environ.get("FUNCFORMER_ONEDNN", "1").strip() != "0"
MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "camembert"}
ACTIVATIONS = {"gelu": True, "relu": False}  # hidden_act -> the op's use_gelu
INPUTS = {"input_ids", "attention_mask", "token_type_ids"}

_plans: weakref.WeakKeyDictionary[torch.nn.Module, _Plan] = weakref.WeakKeyDictionary()
# a copy of a model whose weights are that model's tensors -> the model (`share`)
_origins: weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()
_steps = 0  # optimizer steps taken in this process (a fused one bumps no version counter)


def _stepped(optimizer: Any, args: Any, kwargs: Any) -> None:
    global _steps
    _steps += 1


register_optimizer_step_post_hook(_stepped)


def last_hidden_state(encoder: torch.nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    """`encoder(**inputs).last_hidden_state` (B, T, H), through the fused layers when they
    compute the same thing (see the module docstring), and in training (gradients on, or the
    encoder in training mode) through `_packed`'s layers on the real tokens alone when they
    do. Rows past a text's length hold values of no meaning, as transformers' do (zeros from
    `_packed`): pool them away with the attention mask."""
    if not _plain(inputs):
        return encoder(**inputs).last_hidden_state
    inference = not torch.is_grad_enabled() and not encoder.training
    plan = None
    if inference and ENABLED:
        plan = _plan_for(encoder)
        if plan is not None and (not plan.adapted or plan.computes_adapters()):
            states = plan(**inputs)
            if states is not None:  # None: an adapted plan whose oneDNN layers just failed
                return states
    # the same layers on the real tokens alone: in training, and LoRA's in inference otherwise
    if _packed.ENABLED and (not inference or plan is not None):
        plan = plan or _plan_for(encoder)
        if _packed.applies(encoder, plan, inputs):
            return _packed.last_hidden_state(plan, **inputs)
    return encoder(**inputs).last_hidden_state


def _plain(inputs: dict[str, Any]) -> bool:
    """Whether these inputs, in this context, leave nothing to transformers' modules that the
    fused and packed layers would skip: token ids on a CPU (no embeddings given), nothing
    traced or compiled, no autocast, no global module hooks."""
    from torch.nn.modules import module

    return (set(inputs) <= INPUTS and "input_ids" in inputs
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


def share(copy: torch.nn.Module, original: torch.nn.Module) -> None:
    """Record that `copy`'s weights are `original`'s tensors (`_lora.shared_copy`). When
    adapters are injected into `copy`, its fused inference layers use `original`'s packed and
    reordered weights while its base weights are still those tensors: one copy of them in the
    process however many adapters share the backbone (about 52 MB for all-MiniLM-L6-v2)."""
    _origins[copy] = weakref.ref(original)


def forget(model: torch.nn.Module) -> None:
    """Drop the packed weights of every encoder in `model`: call after changing weights in a
    way neither their version counters nor an optimizer step show (writing `weight.data` in
    place), and those of the backbone an adapter's copy shares them with (`share`)."""
    with _plans_lock:
        for module in model.modules():
            _plans.pop(module, None)
            origin = _origins.get(module)
            if origin is not None and origin() is not None:
                _plans.pop(origin(), None)


_onednn_checked: bool | None = None


def _sample() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small seeded input (3, 8), weight (5, 8) and bias (5,) for the one-off checks."""
    generator = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(shape, generator=generator) for shape in ((3, 8), (5, 8), (5,)))
    return x, w, b


def _onednn() -> bool:
    """Whether oneDNN's fused linear op is here and computes what `F.linear` (and its GELU /
    ReLU) does, checked once on a small random input."""
    global _onednn_checked
    if _onednn_checked is None:
        try:
            x, w, b = _sample()
            with torch.inference_mode():
                plain = torch.nn.functional.linear(x, w, b)
                _onednn_checked = bool(
                    torch.backends.mkldnn.is_available()
                    and torch.allclose(_linear(x, w, b, None), plain, atol=1e-5)
                    and torch.allclose(_linear(x, w, b, "gelu"),
                                       torch.nn.functional.gelu(plain), atol=1e-5)
                    and torch.allclose(_linear(x, w, b, "relu"), plain.relu(), atol=1e-5)
                    # the backward's products, from transposed (strided) views
                    and torch.allclose(_linear(plain, w.t(), None, None), plain @ w, atol=1e-4)
                    and torch.allclose(_linear(plain.t(), x.t(), None, None), plain.t() @ x,
                                       atol=1e-4))
        except Exception:  # the op missing (an older or a non-x86 build) or refusing these
            _onednn_checked = False
    return _onednn_checked


_reorders_checked: bool | None = None


def _reorders() -> bool:
    """Whether oneDNN's weight reorder op is here and its weights give `_linear`'s results,
    checked once."""
    global _reorders_checked
    if _reorders_checked is None:
        try:
            x, w, b = _sample()
            with torch.inference_mode():
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 16)
                _reorders_checked = bool(_onednn() and torch.allclose(
                    _linear(x, packed, b, "gelu"), _linear(x, w, b, "gelu"), atol=1e-5))
        except Exception:  # missing (older builds) or refusing
            _reorders_checked = False
    return _reorders_checked


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
            activation: str | None) -> torch.Tensor:
    """`activation(x @ weight.T + bias)` in one oneDNN call; activation None, "gelu" (exact,
    erf) or "relu"."""
    attr, algorithm = {None: ("none", ""), "gelu": ("gelu", "none"),
                       "relu": ("relu", "")}[activation]
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


class _LinearOnOneDNN(torch.autograd.Function):
    """`F.linear` for training, its three products made by oneDNN: y = x W^T + b forward,
    dx = g W and dW = g^T x backward (from transposed views, checked by `_onednn`)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        # only what the backward needs: a frozen weight (LoRA's base layers) needs no input
        ctx.save_for_backward(rows if ctx.needs_input_grad[1] else None,
                              weight if ctx.needs_input_grad[0] else None)
        ctx.shape, ctx.has_bias, ctx.width = x.shape, bias is not None, weight.shape[0]
        # not a view for autograd (as matmul's own output): callers add to it in place (PEFT's
        # adapters do), which a view made inside a custom Function forbids
        return torch.ops.aten._unsafe_view(_linear(rows, weight, bias, None),
                                           (*x.shape[:-1], weight.shape[0]))

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative fails loudly
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(-1, ctx.width)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # transposed views: oneDNN reads them as they are, and
            dx = _linear(grad, weight.t(), None, None).view(ctx.shape)  # faster than copies
        if ctx.needs_input_grad[1]:
            dw = _linear(grad.t(), rows.t(), None, None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad.sum(0)
        return dx, dw, db


class _TrainingLinears(TorchFunctionMode):
    """Routes `F.linear` on float32 CPU tensors through `_LinearOnOneDNN` (nothing else)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear and len(args) >= 2 and not _autocast():
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
                    and x.dim() >= 2 and weight.dim() == 2 and x.device.type == "cpu"
                    and x.dtype == weight.dtype == torch.float32
                    and (bias is None or (bias.dtype == torch.float32
                                          and bias.shape == (weight.shape[0],)))
                    and x.shape[-1] == weight.shape[1] and set(kwargs) <= {"bias"}
                    and x.numel() and weight.numel()):  # oneDNN refuses empty products
                return _LinearOnOneDNN.apply(x, weight, bias)
        return func(*args, **kwargs)


def training_linears(model: torch.nn.Module) -> Any:
    """A context in which `model`'s float32 CPU linear layers train on oneDNN (about 1.4x
    faster training than MKL's sgemm on an AMD EPYC: `contrastive` on SST-2 with 8 per class,
    8.9 -> 6.4 s, the same accuracy); a no-op on other devices and dtypes, where the op is
    missing or disagrees, under gradient checkpointing, or with `FUNCFORMER_ONEDNN=0`."""
    parameter = next(model.parameters(), None)
    if (not ONEDNN or parameter is None or parameter.device.type != "cpu"
            or parameter.dtype != torch.float32 or not _onednn()
            # checkpointing recomputes the forward inside backward, outside this context:
            # its recomputed tensors would differ from the saved ones
            or any(getattr(m, "gradient_checkpointing", False) is True
                   for m in model.modules())):
        return contextlib.nullcontext()
    return _TrainingLinears()


class _Derived:
    """A value made from some weights (packed, reordered), made again when one of them is
    replaced, changed in place (its version), or any optimizer in the process steps (a fused
    one moves no version counter). The tensors by identity too: an address can be reused once
    one is freed. The caller holds its plan's lock."""

    def __init__(self) -> None:
        self.value: Any = None
        self.stamp: tuple[Any, ...] = ()
        self.refs: list[weakref.ref[torch.Tensor]] = []

    def get(self, tensors: list[torch.Tensor], make: Any) -> Any:
        stamp = (_steps, *((t.data_ptr(), t._version, t.dtype) for t in tensors))
        if stamp != self.stamp or len(self.refs) != len(tensors) or any(
                r() is not t for r, t in zip(self.refs, tensors, strict=True)):
            self.value = make()
            self.stamp, self.refs = stamp, [weakref.ref(t) for t in tensors]
        return self.value


class _Layer(NamedTuple):
    """One encoder layer's modules, fetched by name."""

    layer: torch.nn.Module
    attention: torch.nn.Module
    self_attention: torch.nn.Module
    attention_output: torch.nn.Module
    query: torch.nn.Module
    key: torch.nn.Module
    value: torch.nn.Module
    out_dense: torch.nn.Module
    out_norm: torch.nn.Module
    intermediate: torch.nn.Module
    ffn_in: torch.nn.Module
    activation: torch.nn.Module
    output: torch.nn.Module
    ffn_out: torch.nn.Module
    ffn_norm: torch.nn.Module

    @property
    def linears(self) -> tuple[torch.nn.Module, ...]:
        return self.query, self.key, self.value, self.out_dense, self.ffn_in, self.ffn_out

    @property
    def norms(self) -> tuple[torch.nn.Module, ...]:
        return self.out_norm, self.ffn_norm


def _structure(encoder: torch.nn.Module) -> tuple[list[torch.nn.Module], list[_Layer]] | None:
    """The modules the fused layers stand in for, or read weights from, fetched by name
    (what a module replaced in place changes): the embeddings, the layer stack and its list,
    and each layer's; None when one is missing."""
    try:
        stack = encoder._modules["encoder"]
        layers = []
        for layer in stack._modules["layer"]:
            parts = layer._modules
            attention = parts["attention"]._modules
            inner, outer = attention["self"]._modules, attention["output"]._modules
            intermediate, output = parts["intermediate"], parts["output"]
            layers.append(_Layer(
                layer, parts["attention"], attention["self"], attention["output"],
                inner["query"], inner["key"], inner["value"], outer["dense"],
                outer["LayerNorm"], intermediate, intermediate._modules["dense"],
                intermediate._modules["intermediate_act_fn"], output,
                output._modules["dense"], output._modules["LayerNorm"]))
        return [encoder._modules["embeddings"], stack, stack._modules["layer"]], layers
    except (KeyError, AttributeError, TypeError):
        return None


def _exact_activation(module: torch.nn.Module, gelu: bool) -> bool:
    """transformers' exact GELU (`GELUActivation` on `F.gelu`), or `nn.ReLU`."""
    if not gelu:
        return type(module) is torch.nn.ReLU
    return (type(module).__name__ == "GELUActivation"
            and getattr(module, "act", None) is torch.nn.functional.gelu)


def eligible(encoder: torch.nn.Module) -> bool:
    """Whether `encoder` is an architecture the fused layers compute exactly. Checked when a
    plan is made; a plan checks on each call that its modules are still in place, so a layer
    replaced later (an adapter injected) makes a new plan or takes transformers' path. A
    projection may be PEFT's LoRA layer over a plain `nn.Linear` (`_Plan.adapted`: `_packed`
    trains through it, the oneDNN inference layers add its terms)."""
    config = getattr(encoder, "config", None)
    structure = _structure(encoder)
    if (config is None or getattr(config, "model_type", None) not in MODEL_TYPES
            or getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False)
            or getattr(config, "position_embedding_type", "absolute") not in (None, "absolute")
            or getattr(config, "hidden_act", None) not in ACTIVATIONS
            or structure is None or not structure[1]):
        return False
    try:
        dtype = next(encoder.parameters()).dtype
    except StopIteration:
        return False
    if dtype not in (torch.float32, torch.bfloat16):
        return False
    eps = set()
    for part in structure[1]:
        heads = getattr(part.self_attention, "num_attention_heads", None)
        if (not isinstance(heads, int) or getattr(part.layer, "crossattention", None) is not None
                or not _exact_activation(part.activation, ACTIVATIONS[config.hidden_act])
                or any(type(m) is not torch.nn.Linear or m.bias is None
                       or m.weight.dtype != dtype or m.bias.dtype != dtype
                       for m in map(_packed.base, part.linears))
                or any(type(n) is not torch.nn.LayerNorm or n.weight is None or n.bias is None
                       or n.weight.dtype != dtype or n.bias.dtype != dtype for n in part.norms)):
            return False
        width = _packed.base(part.query).out_features
        if width != config.hidden_size or width % heads or \
                _packed.base(part.key).out_features != width or \
                _packed.base(part.value).out_features != width:
            return False
        eps.update(n.eps for n in part.norms)
    return len(eps) == 1


class _Plan:
    """The fused forward of one eligible encoder."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        structure = _structure(encoder)
        assert structure is not None  # (made only for an eligible encoder)
        self.modules, self.layers = structure
        pooler = getattr(encoder, "pooler", None)  # (not computed: only the states are used)
        # forwards that do not run; not the encoder itself (`hooked` is given it): a strong
        # reference from its own plan, a value of the weak-keyed `_plans`, would keep both alive
        self.bypassed = [*encoder.encoder.modules(),
                         *(pooler.modules() if isinstance(pooler, torch.nn.Module) else ())]
        first = self.layers[0]
        # PEFT's LoRA layers in place of projections: `_packed` trains them; in inference the
        # oneDNN layers add their terms (`computes_adapters`), with the base weights of the
        # model this one is a copy of (`share`), if any
        self.adapted = any(_packed.is_lora(m) for p in self.layers for m in p.linears)
        self.origin = _origins.get(encoder)
        self.dtype = _packed.base(first.query).weight.dtype
        self.heads = int(first.self_attention.num_attention_heads)
        self.eps = float(first.ffn_norm.eps)
        self.use_gelu = ACTIVATIONS[encoder.config.hidden_act]
        self.lock = threading.Lock()
        self.packed = _Derived()  # QKV weights and biases, `_qkv`
        self.reordered = _Derived()  # every product's weight in oneDNN's layout

    def intact(self, encoder: torch.nn.Module) -> bool:
        """Whether `encoder` still has the modules and dtype this plan was made for."""
        now = _structure(encoder)
        return (now is not None and len(now[1]) == len(self.layers)
                and all(a is b for a, b in zip(now[0], self.modules, strict=True))
                and all(a is b for new, old in zip(now[1], self.layers, strict=True)
                        for a, b in zip(new, old, strict=True))
                and _packed.base(self.layers[0].query).weight.dtype == self.dtype)

    def hooked(self, encoder: torch.nn.Module) -> bool:
        """Whether a module whose forward the fused layers skip has hooks (they would not run;
        the embeddings' do, as they are called)."""
        return any(m._forward_hooks or m._forward_pre_hooks for m in (encoder, *self.bypassed))

    def computes_adapters(self) -> bool:
        """Whether the fused layers compute this adapted encoder now: in float32 on oneDNN
        (the native op has no place for the adapters' terms), every LoRA layer a plain one
        (`_packed.plain_lora`: not merged, enabled, no variant)."""
        return (self.dtype == torch.float32 and ONEDNN and _onednn()
                and _packed.plain_adapters(self))

    def _origin_plan(self) -> _Plan | None:
        """The plan of the model this encoder is a copy of (`share`), while every base weight
        and bias of this one is still that model's tensor; None otherwise."""
        original = self.origin() if self.origin is not None else None
        plan = _plan_for(original) if original is not None else None
        if plan is None or plan.adapted or len(plan.layers) != len(self.layers):
            return None
        for mine, theirs in zip(self.layers, plan.layers, strict=True):
            for a, b in zip(mine.linears, theirs.linears, strict=True):
                a = _packed.base(a)
                if a.weight.data_ptr() != b.weight.data_ptr() or \
                        a.bias.data_ptr() != b.bias.data_ptr() or a.weight.dtype != b.weight.dtype:
                    return None
        return plan

    def _qkv_tensors(self) -> list[torch.Tensor]:
        return [t for p in self.layers for linear in (p.query, p.key, p.value)
                for t in (_packed.base(linear).weight, _packed.base(linear).bias)]

    def _pack_qkv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        base = _packed.base
        return [(torch.cat([base(p.query).weight, base(p.key).weight, base(p.value).weight]),
                 torch.cat([base(p.query).bias, base(p.key).bias, base(p.value).bias]))
                for p in self.layers]

    def _qkv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's packed (3H, H) weight and (3H,) bias, rebuilt when one changed
        (`_Derived`); weights without a version counter (inference tensors) packed afresh
        each call."""
        tensors = self._qkv_tensors()
        if any(t.is_inference() for t in tensors):
            return self._pack_qkv()
        with self.lock:
            return self.packed.get(tensors, self._pack_qkv)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """The last hidden states; None for an adapted plan when oneDNN's layers cannot run
        (the native op has no place for the adapters' terms)."""
        embeddings = self.modules[0]
        states = embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        padding = None if attention_mask is None else attention_mask == 0  # (B, T), True: pad
        if padding is not None and not bool(padding.any()):
            padding = None
        elif padding is not None:  # a row with no real token attends to all (NaN otherwise)
            padding = padding & ~padding.all(dim=1, keepdim=True)
        width = states.shape[-1]
        if self.dtype == torch.float32 and ONEDNN and _onednn():
            try:
                return self._onednn_layers(states, padding)
            except RuntimeError as error:  # an input the op refuses: the native op from now on
                global _onednn_checked
                _onednn_checked = False
                log.warning("oneDNN's linear op failed (%s); the fused layers use PyTorch's "
                            "native op from now on", error)
        if self.adapted:  # the native op has no place for adapters: the caller's other paths
            return None
        for part, (qkv_weight, qkv_bias) in zip(self.layers, self._qkv(), strict=True):
            states = torch._transformer_encoder_layer_fwd(
                states, width, self.heads, qkv_weight, qkv_bias,
                part.out_dense.weight, part.out_dense.bias, self.use_gelu, False, self.eps,
                part.out_norm.weight, part.out_norm.bias,
                part.ffn_norm.weight, part.ffn_norm.bias,
                part.ffn_in.weight, part.ffn_in.bias, part.ffn_out.weight, part.ffn_out.bias,
                padding, None if padding is None else 1)
        return states

    def _onednn_weights(self) -> list[tuple[torch.Tensor, ...]]:
        """Per layer: the packed QKV weight and bias, then the attention output's and the
        feed-forward's two weights, the weights in oneDNN's own layout, reordered once (a
        short text's forward took 3.1 ms against 4.5 ms from the plain layout, the same
        numbers) and again when any of them changes (`_Derived`, under one lock with the QKV
        packing they are made from). Inference tensors, which have no version counter, and
        builds without the reorder op get the plain weights."""
        origin = self._origin_plan() if self.adapted else None
        if origin is not None:  # the shared backbone's, made once for all its adapters
            return origin._onednn_weights()
        base = _packed.base
        qkv_tensors = self._qkv_tensors()
        others = [base(m).weight for p in self.layers for m in (p.out_dense, p.ffn_in, p.ffn_out)]
        if not _reorders() or any(t.is_inference() for t in qkv_tensors + others):
            return [(weight, bias, *(base(m).weight for m in (p.out_dense, p.ffn_in, p.ffn_out)))
                    for (weight, bias), p in zip(self._qkv(), self.layers, strict=True)]

        def reorder() -> list[tuple[torch.Tensor, ...]]:
            qkv = self.packed.get(qkv_tensors, self._pack_qkv)
            layout = torch.ops.mkldnn._reorder_linear_weight
            return [(layout(weight, 16), bias, *(layout(base(m).weight, 16) for m in (
                p.out_dense, p.ffn_in, p.ffn_out)))
                for (weight, bias), p in zip(qkv, self.layers, strict=True)]

        with self.lock:
            return self.reordered.get(qkv_tensors + others, reorder)

    def _onednn_layers(self, states: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """The same post-norm layers as the native op, each product one oneDNN call with its
        bias (and the feed-forward's activation) fused in."""
        batch, length, width = states.shape
        size = width // self.heads
        mask = None if padding is None else ~padding[:, None, None, :]  # (B, 1, 1, T): attend
        activation = "gelu" if self.use_gelu else "relu"
        x = states.reshape(batch * length, width)
        base, adapt = _packed.base, _packed.with_adapters
        for part, (qkv_weight, qkv_bias, out_weight, in_weight, ffn_weight) in zip(
                self.layers, self._onednn_weights(), strict=True):
            qkv = _packed.qkv_with_adapters(_linear(x, qkv_weight, qkv_bias, None), x, part)
            q, k, v = qkv.view(batch, length, 3, self.heads, size).permute(2, 0, 3, 1, 4)
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            attended = attended.transpose(1, 2).reshape(batch * length, width)
            out = adapt(_linear(attended, out_weight, base(part.out_dense).bias, None), attended,
                        part.out_dense)
            x = torch.nn.functional.layer_norm(out + x, (width,), part.out_norm.weight,
                                               part.out_norm.bias, self.eps)
            if _packed.is_lora(part.ffn_in):  # the activation after the adapter's terms
                inner = adapt(_linear(x, in_weight, base(part.ffn_in).bias, None), x,
                              part.ffn_in)
                inner = torch.nn.functional.gelu(inner) if self.use_gelu else inner.relu()
            else:
                inner = _linear(x, in_weight, part.ffn_in.bias, activation)
            out = adapt(_linear(inner, ffn_weight, base(part.ffn_out).bias, None), inner,
                        part.ffn_out)
            x = torch.nn.functional.layer_norm(out + x, (width,), part.ffn_norm.weight,
                                               part.ffn_norm.bias, self.eps)
        return x.view(batch, length, width)
