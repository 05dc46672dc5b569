"""EVA02 vision transformer as JinaCLIP-v2 uses it: a clean-room implementation from the published design.

Pre-norm blocks; attention with separate q/k/v projections (bias on q and v only), 2D rotary position
embedding on the patch tokens (not the class token), and a LayerNorm on the attention output ("sub-LN");
SwiGLU MLP with a LayerNorm before its output projection; final LayerNorm and the class token as the
embedding (through a Linear head if the checkpoint has one). Attention runs through SDPA, so the graph
exports as plain ONNX ops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

LAYER_NORM_EPS = 1e-6
ROPE_THETA = 10000.0


@dataclass(frozen=True, kw_only=True)
class Eva02Config:
    image_size: int
    patch_size: int
    width: int
    layers: int
    head_width: int
    mlp_ratio: float
    pt_hw_seq_len: int  # the grid side the rotary frequencies were trained at
    intp_freq: bool  # stretch those frequencies over this image size's grid
    # A Linear head after the pooled token (EVA-CLIP's `head`), when the checkpoint has one.
    head_dim: int | None = None
    head_bias: bool = False

    @property
    def output_dim(self) -> int:
        return self.head_dim or self.width

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rotary_tables(config: Eva02Config) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [grid*grid, head_width] for the patch tokens, in row-major patch order.

    Half of each head's channels rotate with the patch row, half with the column; channels rotate in
    adjacent pairs (0,1), (2,3), ... With `intp_freq` positions are rescaled so the grid spans the
    trained `pt_hw_seq_len` positions.
    """
    axis_dim = config.head_width // 2
    inverse = 1.0 / ROPE_THETA ** (torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
    steps = torch.arange(config.grid, dtype=torch.float64)
    if config.intp_freq:
        steps = steps / config.grid * config.pt_hw_seq_len
    angles = torch.outer(steps, inverse).repeat_interleave(2, dim=-1)  # [grid, axis_dim]
    rows = angles[:, None, :].expand(config.grid, config.grid, axis_dim)
    cols = angles[None, :, :].expand(config.grid, config.grid, axis_dim)
    table = torch.cat([rows, cols], dim=-1).reshape(config.grid * config.grid, config.head_width)
    return table.cos().float(), table.sin().float()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


class Eva02Attention(nn.Module):
    def __init__(self, config: Eva02Config) -> None:
        super().__init__()
        width, self.heads = config.width, config.heads
        self.query = nn.Linear(width, width, bias=True)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width, bias=True)
        self.output_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.output = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, -1).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        q = torch.cat([q[:, :, :1], q[:, :, 1:] * cos + _rotate_pairs(q[:, :, 1:]) * sin], dim=2)
        k = torch.cat([k[:, :, :1], k[:, :, 1:] * cos + _rotate_pairs(k[:, :, 1:]) * sin], dim=2)
        attended = F.scaled_dot_product_attention(q, k, v)
        merged = attended.transpose(1, 2).reshape(batch, tokens, width)
        result: torch.Tensor = self.output(self.output_norm(merged))
        return result


class Eva02SwiGLU(nn.Module):
    def __init__(self, config: Eva02Config) -> None:
        super().__init__()
        self.gate = nn.Linear(config.width, config.mlp_hidden)
        self.up = nn.Linear(config.width, config.mlp_hidden)
        self.norm = nn.LayerNorm(config.mlp_hidden, eps=LAYER_NORM_EPS)
        self.down = nn.Linear(config.mlp_hidden, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.down(self.norm(F.silu(self.gate(x)) * self.up(x)))
        return result


class Eva02Block(nn.Module):
    def __init__(self, config: Eva02Config) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.attention = Eva02Attention(config)
        self.mlp_norm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.mlp = Eva02SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        result: torch.Tensor = x + self.mlp(self.mlp_norm(x))
        return result


class Eva02VisionTower(nn.Module):
    """pixel_values [B, 3, image_size, image_size] -> class-token embedding [B, width]."""

    def __init__(self, config: Eva02Config) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + config.grid**2, width))
        self.blocks = nn.ModuleList(Eva02Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.head: nn.Module = (
            nn.Linear(width, config.head_dim, bias=config.head_bias) if config.head_dim else nn.Identity()
        )
        cos, sin = rotary_tables(config)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        x = x + self.position_embedding
        cos, sin = self.rotary_cos.to(x.dtype), self.rotary_sin.to(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        embedding: torch.Tensor = self.head(self.norm(x)[:, 0])
        return embedding
