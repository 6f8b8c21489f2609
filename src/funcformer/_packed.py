"""Training (and LoRA's inference) without padding: BERT-family layers on the real tokens.

A batch of short texts is mostly padding: 16 SST-2 sentences of 3 to 51 tokens are a (16, 51)
batch, 816 positions for 249 tokens. transformers computes every layer's products on all of
them. Here the products, LayerNorms and GELUs run on the real tokens alone, gathered into one
(tokens, hidden) matrix; only attention sees the padded batch, scattered back for it (with the
key padding masked, as transformers does). With 8 SST-2 and CR texts per class on a 2-core AMD
EPYC, a training step's forward and backward took 0.61-0.72 of transformers' time (batches of
16: 125 -> 90, 233 -> 142, 254 -> 179 ms); the products are then about a third of it, and
dropout's masks, drawn over the padded batch as transformers draws them, a fifth.

It is the same computation as transformers' (checked in tests): the embeddings module itself
runs on the padded batch, and each dropout draws its mask over the padded shape, as
`nn.Dropout` does there, and keeps the real tokens' part, so a seeded run draws the same masks.
The sums inside the products meet the padding's zeros in another order, so the weights agree to
float rounding, not bit for bit.

Used by `_fused.last_hidden_state` where the fused inference path is not (gradients on or the
encoder in training mode), for the same architectures (`_fused.eligible`), in float32 on a CPU,
with transformers' `sdpa` attention and `nn.Dropout` modules, without gradient checkpointing
(its memory saving is the user's choice), when the batch has padding (any batch, with LoRA)
and every text a token; transformers' path otherwise, and with `FUNCFORMER_PACKED=0` in the
environment (or `funcformer._packed.ENABLED = False`).

LoRA: a projection may be PEFT's LoRA layer (`lora`'s encoder, `LoRA(...)`). Its base product
runs on the real tokens with the others, and each active adapter adds `B(A(dropout(x))) *
scaling`, as PEFT's `forward` does and in its order. Only plain LoRA (not merged, adapters
enabled, no variant such as DoRA, float32); PEFT's own path otherwise. In inference the fused
layers compute the adapters (`_fused`, on oneDNN; these layers where oneDNN is missing). In
training such an encoder draws its own dropout masks here, LoRA's and the hidden states':
`keep_mask`, over the real tokens alone, four entries from each 64-bit draw. LoRA drops the
input of every adapted projection, 1,536 wide for the feed-forward's output, and drawn as
PEFT and transformers draw them (`bernoulli_`, one number at a time, over the padded batch)
the masks took 150 of a 278 ms step on 32 SST-2 texts (4,160 tokens in 12,224 positions;
2-core AMD EPYC); with `keep_mask` the step took 153-158 ms (PEFT's path 365-415 ms). It is
the same distribution (p to within 2^-16), not the same numbers; attention's masks and the
embeddings' stay torch's. `PEFT_MASKS = True` draws every mask as PEFT and transformers do,
with which the tests check the rest against PEFT's path.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

ENABLED = os.environ.get("FUNCFORMER_PACKED", "1").strip() != "0"
PEFT_MASKS = False
F = torch.nn.functional
LANES = 4  # 16-bit lanes in one 64-bit draw


def applies(encoder: torch.nn.Module, plan: Any, inputs: dict[str, torch.Tensor]) -> bool:
    """Whether `plan` (the encoder's `_fused` plan: an eligible architecture, no hooks) can run
    these inputs packed (see the module docstring)."""
    mask = inputs.get("attention_mask")
    if (not ENABLED or plan is None or mask is None or mask.dim() != 2
            or plan.dtype != torch.float32
            or getattr(encoder.config, "_attn_implementation", None) != "sdpa"
            or any(getattr(m, "gradient_checkpointing", False) is True for m in encoder.modules())
            or any(type(getattr(m, "dropout", None)) is not torch.nn.Dropout
                   for p in plan.layers
                   for m in (p.self_attention, p.attention_output, p.output))):
        return False
    if not plain_adapters(plan):
        return False
    real = mask != 0  # without padding transformers' layers are as fast, but not LoRA's
    return bool((plan.adapted or not real.all()) and real.any(dim=1).all())


def keep_mask(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """Dropout's scaled mask for probability `p` (0 < p < 1): each entry 1 / keep with
    probability keep = 1 - p, 0 otherwise, independently; p is rounded to a multiple of 2^-16
    (1 to 65,535 of them) and the scale is exact for the rounded keep (the expectation stays
    x). Four entries come from each 64-bit draw of torch's default generator (seeded by
    `torch.manual_seed`): on a 2-core AMD EPYC a (1222, 1536) mask and its product took 3.3 ms
    against 10.1 with `bernoulli_`.

    >>> _ = torch.manual_seed(0)
    >>> mask = keep_mask((1000, 100), 0.25)
    >>> [round(v, 4) for v in mask.unique().tolist()], round(float((mask == 0).float().mean()), 2)
    ([0.0, 1.3333], 0.25)
    """
    count = math.prod(shape)
    dropped = min(max(round(p * 65536), 1), 65535)  # lanes below this (of 65,536) are dropped
    words = torch.empty(-(-count // LANES), dtype=torch.int64, device="cpu")
    words.random_(-2 ** 63, None)
    lanes = words.view(torch.int16)[:count].view(shape)  # uniform over -32768..32767
    return (lanes >= dropped - 32768).to(torch.float32).mul_(65536 / (65536 - dropped))


def is_lora(module: torch.nn.Module) -> bool:
    """Whether `module` is PEFT's LoRA layer for `nn.Linear` (exactly: not a quantized kind)."""
    kind = type(module)
    return kind.__name__ == "Linear" and kind.__module__ == "peft.tuners.lora.layer"


def base(module: torch.nn.Module) -> torch.nn.Module:
    """The linear layer whose weight and bias a projection uses: `module`, or the base layer
    under PEFT's LoRA layer."""
    return module.base_layer if is_lora(module) else module


def plain_lora(module: torch.nn.Module) -> bool:
    """Whether this LoRA layer's forward is, now, the one `_packed` computes: the base product
    plus `B(A(dropout(x))) * scaling` per active adapter, in float32. A variant (DoRA, ...)
    is in `lora_variant` (PEFT 0.15 and later) or, before, `use_dora`."""
    active = [a for a in module.active_adapters if a in module.lora_A]
    variants = getattr(module, "lora_variant", {})
    dora = getattr(module, "use_dora", {})
    return (not module.merged and not module.disable_adapters
            and all(a not in variants and not dora.get(a, False)
                    and type(module.lora_A[a]) is torch.nn.Linear
                    and type(module.lora_B[a]) is torch.nn.Linear
                    and type(module.lora_dropout[a]) in (torch.nn.Dropout, torch.nn.Identity)
                    and module.lora_A[a].weight.dtype == torch.float32
                    and module.lora_B[a].weight.dtype == torch.float32 for a in active))


def plain_adapters(plan: Any) -> bool:
    """Whether every LoRA layer in `plan`'s layers is a plain one (`plain_lora`)."""
    return all(plain_lora(m) for p in plan.layers for m in p.linears if is_lora(m))


def with_adapters(out: torch.Tensor, x: torch.Tensor, module: torch.nn.Module,
                  dropout: Any = None) -> torch.Tensor:
    """`out` (a projection's base product of `x`) plus, when `module` is PEFT's LoRA layer,
    each active adapter's `B(A(dropout(x))) * scaling`, as PEFT's `forward` adds them;
    `dropout(x, module)` draws the mask. Without one and without autograd (inference) the
    terms go into `out` in place, saving a copy of it per adapter."""
    if not is_lora(module):
        return out
    inplace = dropout is None and not torch.is_grad_enabled()
    for name in module.active_adapters:
        if name in module.lora_A:
            inputs = x if dropout is None else dropout(x, module.lora_dropout[name])
            terms = module.lora_B[name](module.lora_A[name](inputs))
            out = out.add_(terms, alpha=module.scaling[name]) if inplace else \
                out + terms * module.scaling[name]
    return out


def qkv_with_adapters(qkv: torch.Tensor, x: torch.Tensor, part: Any,
                      dropout: Any = None) -> torch.Tensor:
    """The packed (tokens, 3H) query/key/value product of `x` with each projection's LoRA
    terms added to its third, in PEFT's order (query, key, value); `qkv` itself without
    adapters, and in inference with them added in place (`with_adapters`)."""
    projections = (part.query, part.key, part.value)
    if not any(is_lora(m) for m in projections):
        return qkv
    thirds = [with_adapters(out, x, m, dropout) for out, m in zip(
        qkv.split(qkv.shape[1] // 3, dim=1), projections, strict=True)]
    return qkv if dropout is None and not torch.is_grad_enabled() else torch.cat(thirds, 1)


def last_hidden_state(plan: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's last hidden states (B, T, H), computed on the real tokens; padded
    positions hold zeros."""
    states = plan.modules[0](input_ids=input_ids, token_type_ids=token_type_ids)  # (B, T, H)
    batch, length, width = states.shape
    positions = batch * length
    flat = attention_mask.reshape(-1).nonzero().squeeze(1)  # the real tokens, in order
    # transformers' mask for sdpa: (B, 1, T, T), True where a query may attend to a key
    mask = (attention_mask != 0)[:, None, None, :].expand(batch, 1, length, length).contiguous()
    heads = plan.heads
    size = width // heads

    def padded(x: torch.Tensor) -> torch.Tensor:  # (tokens, W) -> (B * T, W), zeros elsewhere
        return x.new_zeros(positions, x.shape[1]).index_copy(0, flat, x)

    own = plan.adapted and not PEFT_MASKS  # LoRA's runs draw their own masks

    def dropout(x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        """`module` (`nn.Dropout`, or LoRA's `nn.Identity` for none) on the real tokens: its
        mask drawn over the padded batch (B * T, W) as transformers draws it, or in an encoder
        with LoRA layers by `keep_mask` over the real tokens alone."""
        p = module.p if isinstance(module, torch.nn.Dropout) and module.training else 0.0
        if p == 0:
            return x
        if p == 1:
            return x * 0
        if own:
            return x * keep_mask(tuple(x.shape), p)
        keep = x.new_empty(positions, x.shape[1]).bernoulli_(1 - p).index_select(0, flat)
        return x * keep.div_(1 - p)

    def project(x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
        linear = base(module)
        return with_adapters(F.linear(x, linear.weight, linear.bias), x, module, dropout)

    x = states.reshape(positions, width).index_select(0, flat)
    for part in plan.layers:
        # one product for the three projections (one scatter): (B * T, 3, heads, size)
        projections = [base(m) for m in (part.query, part.key, part.value)]
        qkv = F.linear(x, torch.cat([m.weight for m in projections]),
                       torch.cat([m.bias for m in projections]))
        qkv = padded(qkv_with_adapters(qkv, x, part, dropout))
        query, key, value = qkv.view(batch, length, 3, heads, size).permute(2, 0, 3, 1, 4)
        attention = part.self_attention
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask,
            dropout_p=attention.dropout.p if attention.training else 0.0,
            scale=getattr(attention, "scaling", size ** -0.5))
        attended = attended.transpose(1, 2).reshape(positions, width).index_select(0, flat)
        out = dropout(project(attended, part.out_dense), part.attention_output.dropout)
        x = F.layer_norm(out + x, (width,), part.out_norm.weight, part.out_norm.bias,
                         part.out_norm.eps)
        inner = part.activation(project(x, part.ffn_in))
        out = dropout(project(inner, part.ffn_out), part.output.dropout)
        x = F.layer_norm(out + x, (width,), part.ffn_norm.weight, part.ffn_norm.bias,
                         part.ffn_norm.eps)
    return padded(x).view(batch, length, width)
