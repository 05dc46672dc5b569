"""NV-Embed's text encoder: Mistral with bidirectional attention, latent-attention pooling, masked mean.

The decoder is transformers' `MistralModel`, made bidirectional the way NV-Embed trained it: every token
attends to every real token of its text (a key-padding mask only: no causal mask, and no sliding window
whatever the config says), positions 0..n-1. We hand the decoder that mask ready-made, in the additive 4-D
form transformers passes through unchanged, so neither its causal nor its sliding-window masks are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmembed.families.nvembed2.pooler import LatentAttentionPooler, PoolerConfig, masked_mean


def bidirectional_mistral(text_config: dict[str, Any]) -> nn.Module:
    """A `MistralModel` from the checkpoint's `text_config`, with SDPA attention and causality switched off."""
    from transformers import MistralConfig, MistralModel

    fields = {key: value for key, value in text_config.items() if key not in ("model_type", "architectures")}
    config = MistralConfig(**fields)
    config.sliding_window = None  # NV-Embed attends over the whole text
    config.use_cache = False
    config._attn_implementation = "sdpa"
    model = MistralModel(config)
    layer: Any
    for layer in model.layers:
        layer.self_attn.is_causal = False
    return model


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ATTENTION_MASK (batch, tokens) of 1s and 0s -> an additive (batch, 1, 1, tokens) mask: 0 where a
    key is a real token, the dtype's lowest value where it is padding."""
    blocked = (1 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    return blocked


class NVEmbedTextEncoder(nn.Module):
    """input_ids, attention_mask, pool_mask (batch, tokens) -> the raw embedding (batch, hidden), fp32."""

    def __init__(
        self, text_config: dict[str, Any], pooler: PoolerConfig, id_remap: tuple[tuple[int, int], ...] = ()
    ) -> None:
        super().__init__()
        self.decoder: Any = bidirectional_mistral(text_config)
        self.pooler = LatentAttentionPooler(pooler)
        # Token ids past the decoder's vocabulary and what they are looked up as (MM-Embed: its processor's
        # <image> 32000 -> 0 and <pad> 32001 -> 2, as its reference does before the embedding lookup).
        self.id_remap = id_remap
        self.stored_dtype = torch.float32  # the dtype of the checkpoint it was loaded from
        self.source: Path | None = None  # the checkpoint folder it was loaded from

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(self.token_embeddings(input_ids), attention_mask, pool_mask)

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        for source, target in self.id_remap:
            input_ids = torch.where(input_ids == source, torch.full_like(input_ids, target), input_ids)
        embeddings: torch.Tensor = self.decoder.embed_tokens(input_ids)
        return embeddings

    def embed(self, embeddings: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """The same from token embeddings (batch, tokens, hidden): where MM-Embed splices image tokens in."""
        mask = padding_mask(attention_mask, embeddings.dtype)
        hidden: torch.Tensor = self.decoder(
            inputs_embeds=embeddings, attention_mask=mask, use_cache=False
        ).last_hidden_state
        return masked_mean(self.pooler(hidden), pool_mask)
