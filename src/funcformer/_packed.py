"""Training without padding: a BERT-family encoder's layers on the real tokens only.

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
(its memory saving is the user's choice), when the batch has padding and every text a token;
transformers' path otherwise, and with `FUNCFORMER_PACKED=0` in the environment (or
`funcformer._packed.ENABLED = False`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

ENABLED = os.environ.get("FUNCFORMER_PACKED", "1").strip() != "0"
F = torch.nn.functional


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
    real = mask != 0
    return bool(not real.all() and real.any(dim=1).all())


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

    def dropout(x: torch.Tensor, module: torch.nn.Dropout) -> torch.Tensor:
        """`module` on the padded batch, for the real tokens: its mask drawn over (B * T, W)."""
        p = module.p
        if not module.training or p == 0:
            return x
        if p == 1:
            return x * 0
        keep = x.new_empty(positions, x.shape[1]).bernoulli_(1 - p).index_select(0, flat)
        return x * keep.div_(1 - p)

    x = states.reshape(positions, width).index_select(0, flat)
    for part in plan.layers:
        # one product for the three projections (one scatter): (B * T, 3, heads, size)
        qkv = padded(F.linear(x, torch.cat([part.query.weight, part.key.weight,
                                            part.value.weight]),
                              torch.cat([part.query.bias, part.key.bias, part.value.bias])))
        query, key, value = qkv.view(batch, length, 3, heads, size).permute(2, 0, 3, 1, 4)
        attention = part.self_attention
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask,
            dropout_p=attention.dropout.p if attention.training else 0.0,
            scale=getattr(attention, "scaling", size ** -0.5))
        attended = attended.transpose(1, 2).reshape(positions, width).index_select(0, flat)
        out = dropout(F.linear(attended, part.out_dense.weight, part.out_dense.bias),
                      part.attention_output.dropout)
        x = F.layer_norm(out + x, (width,), part.out_norm.weight, part.out_norm.bias,
                         part.out_norm.eps)
        inner = part.activation(F.linear(x, part.ffn_in.weight, part.ffn_in.bias))
        out = dropout(F.linear(inner, part.ffn_out.weight, part.ffn_out.bias), part.output.dropout)
        x = F.layer_norm(out + x, (width,), part.ffn_norm.weight, part.ffn_norm.bias,
                         part.ffn_norm.eps)
    return padded(x).view(batch, length, width)
