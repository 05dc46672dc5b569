"""MM-Embed's image path: CLIP's penultimate hidden states without CLS, a two-layer GELU projector into the
decoder's width, the learned `image_newline` after them (577 image tokens at 336 px), spliced into the
prompt's token embeddings where its one `<image>` token stands; then NV-Embed's decoder and pooling.

Written from the MM-Embed paper (arXiv 2411.02571) and the published checkpoint's config and shapes.
Every row of a request has exactly one `<image>` token and right padding, so every row grows by the same
number of positions and the splice is a gather: no per-row Python, and it exports to ONNX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder


def clip_vision(vision_config: dict[str, Any]) -> nn.Module:
    """transformers' CLIPVisionModel from MM-Embed's `vision_config` (quick GELU, as CLIP's default)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    fields = {key: value for key, value in vision_config.items() if key != "model_type"}
    config = CLIPVisionConfig(**fields)
    config._attn_implementation = "sdpa"
    return CLIPVisionModel(config)


def splice(
    text: torch.Tensor,
    image: torch.Tensor,
    image_positions: torch.Tensor,
    attention_mask: torch.Tensor,
    pool_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TEXT (batch, tokens, width) with each row's token at IMAGE_POSITIONS replaced by that row's IMAGE
    (batch, k, width): (batch, tokens + k - 1, width), the attention mask stretched the same way, and the
    pool mask rebuilt over the merged rows as the reference builds it: as many leading positions hidden
    as POOL_MASK hides, counted in merged positions (so an instruction whose count runs past the image's
    place hides the first image tokens, as in the reference)."""
    batch, tokens, width = text.shape
    k = image.shape[1]
    positions = torch.arange(tokens + k - 1, device=text.device).unsqueeze(0)
    start = image_positions.unsqueeze(1)
    in_image = (positions >= start) & (positions < start + k)
    text_index = torch.where(positions < start, positions, positions - (k - 1)).clamp(0, tokens - 1)
    image_index = (positions - start).clamp(0, k - 1)
    embeddings = torch.where(
        in_image.unsqueeze(-1),
        torch.gather(image, 1, image_index.unsqueeze(-1).expand(batch, -1, width)),
        torch.gather(text, 1, text_index.unsqueeze(-1).expand(batch, -1, width)),
    )
    ones = torch.ones_like(in_image, dtype=attention_mask.dtype)
    attention = torch.where(in_image, ones, torch.gather(attention_mask, 1, text_index))
    hidden = (pool_mask != 0).to(torch.int64).argmax(dim=1, keepdim=True)  # leading positions not pooled
    pool = attention * (positions >= hidden).to(attention.dtype)
    return embeddings, attention, pool


class MMEmbedEncoder(nn.Module):
    """pixel_values, input_ids, attention_mask, pool_mask -> the raw embedding (batch, hidden), fp32."""

    def __init__(
        self,
        text: NVEmbedTextEncoder,
        vision_config: dict[str, Any],
        *,
        image_token_index: int,
        feature_layer: int,
        keep_cls: bool,
    ) -> None:
        super().__init__()
        hidden = text.pooler.config.hidden_size
        self.text = text
        self.vision: Any = clip_vision(vision_config)
        self.projector = nn.Sequential(
            nn.Linear(int(vision_config["hidden_size"]), hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.image_newline = nn.Parameter(torch.zeros(hidden))
        self.image_token_index = image_token_index
        self.feature_layer = feature_layer
        self.keep_cls = keep_cls
        self.stored_dtype = torch.float32
        self.source: Path | None = None  # the checkpoint folder it was loaded from

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, patches + 1, hidden): the projected patch features and the newline token."""
        states = self.vision(pixel_values=pixel_values, output_hidden_states=True).hidden_states[self.feature_layer]
        features = self.projector(states if self.keep_cls else states[:, 1:])
        newline = self.image_newline.to(features.dtype).expand(features.shape[0], 1, -1)
        return torch.cat([features, newline], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
    ) -> torch.Tensor:
        image = self.image_tokens(pixel_values.to(self.image_newline.dtype))
        positions = (input_ids == self.image_token_index).to(torch.int64).argmax(dim=1)
        text = self.text.token_embeddings(input_ids)
        embeddings, attention, pool = splice(text, image.to(text.dtype), positions, attention_mask, pool_mask)
        return self.text.embed(embeddings, attention, pool)
