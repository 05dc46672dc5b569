"""SigLIP's self-attention with its query, key and value projections as one Linear layer.

Three d x d matrix products become one d x 3d product: a wider matrix keeps the tensor cores busier at
SigLIP's small width (d = 1152 for SO400M), and reads the activations once instead of three times. The
weights are the same numbers, concatenated, so the outputs match to float rounding; fp8 and compiled
encoders see one Linear per layer where they saw three. Used by the torch runtime (`load_encoder`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class FusedSelfAttention(torch.nn.Module):
    """Drop-in for transformers' SiglipAttention (bidirectional, SDPA): same call, same outputs."""

    def __init__(self, attention: Any) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attention.num_heads, attention.head_dim, attention.scale
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        width = attention.q_proj.in_features
        self.qkv = torch.nn.Linear(width, 3 * width, device=attention.q_proj.weight.device)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([p.weight for p in projections]))
            self.qkv.bias.copy_(torch.cat([p.bias for p in projections]))
        self.out_proj = attention.out_proj

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> tuple[torch.Tensor, None]:
        batch, tokens, _width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        mixed = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attention_mask, scale=self.scale)
        output: torch.Tensor = self.out_proj(mixed.transpose(1, 2).reshape(batch, tokens, -1))
        return output, None


def fuse_attention(model: torch.nn.Module) -> int:
    """Replace every SiglipAttention in MODEL with a FusedSelfAttention; how many were replaced."""
    from transformers.models.siglip.modeling_siglip import SiglipAttention

    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, SiglipAttention)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, FusedSelfAttention(module))
    return len(targets)
