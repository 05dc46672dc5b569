"""NV-Embed's latent-attention pooling, written from the paper (arXiv 2405.17428, section 3.2) and the
published checkpoint's shapes: each token's last hidden state attends over a small set of trained latent
vectors, then a GEGLU feed-forward, each with a residual; the result is averaged over the pooled positions.

The latents are the keys and values, the tokens the queries, so the output has one vector per token and
tokens never see each other here. The latents' keys and values do not depend on the input: they are
computed once (`freeze`) instead of for every request.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional


@dataclass(frozen=True, kw_only=True)
class PoolerConfig:
    """The sizes of the pooler; NV-Embed's `latent_attention_config`, whose defaults the official file keeps."""

    hidden_size: int  # the decoder's hidden size: the tokens' and the output's width
    latents: int = 512
    latent_size: int = 4096
    heads: int = 8
    head_size: int = 4096  # per head: the attention is heads x head_size = 32,768 wide
    feed_forward_multiple: int = 4  # GEGLU: hidden -> 2 x multiple x hidden, gated down to multiple x hidden


class LatentAttentionPooler(nn.Module):
    """Hidden states (batch, tokens, hidden) -> pooled states of the same shape, before the mean."""

    def __init__(self, config: PoolerConfig) -> None:
        super().__init__()
        inner = config.heads * config.head_size
        wide = config.feed_forward_multiple * config.hidden_size
        self.config = config
        self.latents = nn.Parameter(torch.zeros(config.latents, config.latent_size))
        self.query_norm = nn.LayerNorm(config.hidden_size)
        self.latent_norm = nn.LayerNorm(config.latent_size)
        self.to_query = nn.Linear(config.hidden_size, inner, bias=False)
        self.to_key_value = nn.Linear(config.latent_size, 2 * inner, bias=False)
        self.to_output = nn.Linear(inner, config.hidden_size, bias=False)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size)
        self.feed_forward_in = nn.Linear(config.hidden_size, 2 * wide)  # value half first, then the gate half
        self.feed_forward_out = nn.Linear(wide, config.hidden_size)
        self.latent_keys: torch.Tensor | None
        self.latent_values: torch.Tensor | None
        self.register_buffer("latent_keys", None, persistent=False)
        self.register_buffer("latent_values", None, persistent=False)

    def freeze(self) -> None:
        """Compute the latents' keys and values once, in the weights' current dtype; call after loading
        or converting the weights (a later `.to(dtype)` converts these buffers with them)."""
        self.latent_keys = self.latent_values = None  # the forward computes them from the weights
        with torch.no_grad():
            self.latent_keys, self.latent_values = self._latent_keys_values()

    def _latent_keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (heads, latents, head_size) of the latent vectors."""
        heads, size = self.config.heads, self.config.head_size
        keys, values = self.to_key_value(self.latent_norm(self.latents)).chunk(2, dim=-1)
        return (
            keys.view(-1, heads, size).transpose(0, 1),
            values.view(-1, heads, size).transpose(0, 1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = hidden.shape
        heads, size = self.config.heads, self.config.head_size
        if self.latent_keys is None or self.latent_values is None:
            keys, values = self._latent_keys_values()
        else:
            keys, values = self.latent_keys, self.latent_values
        queries = self.to_query(self.query_norm(hidden)).view(batch, tokens, heads, size).transpose(1, 2)
        attended = functional.scaled_dot_product_attention(
            queries, keys.unsqueeze(0).to(queries.dtype), values.unsqueeze(0).to(queries.dtype)
        )
        attended = attended.transpose(1, 2).reshape(batch, tokens, heads * size)
        hidden = self.to_output(attended) + hidden
        value, gate = self.feed_forward_in(self.feed_forward_norm(hidden)).chunk(2, dim=-1)
        output: torch.Tensor = self.feed_forward_out(value * functional.gelu(gate)) + hidden
        return output


def masked_mean(states: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """The mean of STATES (batch, tokens, width) over the positions POOL_MASK marks, accumulated in fp32."""
    weights = pool_mask.to(torch.float32).unsqueeze(-1)
    mean: torch.Tensor = (states.to(torch.float32) * weights).sum(dim=1) / weights.sum(dim=1)
    return mean
