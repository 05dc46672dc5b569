"""An independent JinaCLIP-v2 forward pass straight from an official-layout state dict.

Written from the published design, not from mmembed's towers: functional ops on the official tensor
names, LoRA applied at run time (W + B@A, as the official parametrization does), rotary embeddings as
complex rotations. Tests compare the loader's clean-room towers, their ONNX graphs and the served
embeddings with it, so a wrong key mapping, a skipped LoRA merge or a mis-laid RoPE shows up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mmembed.families.jinaclip2.layout import read_state_dict, text_settings_of

VISION = "vision_model."
TEXT = "text_model.transformer.roberta."


class JinaReference:
    def __init__(self, checkpoint: Path) -> None:
        import json

        self.config: dict[str, Any] = json.loads((checkpoint / "config.json").read_text())
        self.state = {k: v.float() for k, v in read_state_dict(checkpoint).items()}
        # The jina-embeddings-v3 base config, updated with the checkpoint's own text settings.
        self.text_config = text_settings_of(self.config)
        self.lora_scale = self.text_config["lora_alpha"] / self.text_config["lora_rank"]

    # --- vision: EVA02 ---------------------------------------------------------------------------

    def image(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg, s = self.config["vision_config"], self.state
        p = VISION
        width, head = cfg["width"], cfg["head_width"]
        heads, grid = width // head, cfg["image_size"] // cfg["patch_size"]
        x = F.conv2d(pixels, s[p + "patch_embed.proj.weight"], s[p + "patch_embed.proj.bias"], stride=cfg["patch_size"])
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([s[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + s[p + "pos_embed"]
        rotation = self._eva_rotation(grid, head, cfg["pt_hw_seq_len"])
        for i in range(cfg["layers"]):
            b = f"{p}blocks.{i}."
            h = F.layer_norm(x, (width,), s[b + "norm1.weight"], s[b + "norm1.bias"], 1e-6)
            q = h @ s[b + "attn.q_proj.weight"].T + s[b + "attn.q_bias"]
            k = h @ s[b + "attn.k_proj.weight"].T
            v = h @ s[b + "attn.v_proj.weight"].T + s[b + "attn.v_bias"]
            q, k, v = (t.unflatten(-1, (heads, head)).transpose(1, 2) for t in (q, k, v))
            q = torch.cat([q[:, :, :1], _rotate_adjacent_pairs(q[:, :, 1:], rotation)], dim=2)
            k = torch.cat([k[:, :, :1], _rotate_adjacent_pairs(k[:, :, 1:], rotation)], dim=2)
            weights = torch.softmax(q @ k.transpose(-1, -2) / head**0.5, dim=-1)
            attended = (weights @ v).transpose(1, 2).flatten(2)
            attended = F.layer_norm(
                attended, (width,), s[b + "attn.inner_attn_ln.weight"], s[b + "attn.inner_attn_ln.bias"], 1e-6
            )
            x = x + attended @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
            h = F.layer_norm(x, (width,), s[b + "norm2.weight"], s[b + "norm2.bias"], 1e-6)
            gate = F.silu(h @ s[b + "mlp.w1.weight"].T + s[b + "mlp.w1.bias"])
            hidden = gate * (h @ s[b + "mlp.w2.weight"].T + s[b + "mlp.w2.bias"])
            hidden = F.layer_norm(
                hidden, (hidden.shape[-1],), s[b + "mlp.ffn_ln.weight"], s[b + "mlp.ffn_ln.bias"], 1e-6
            )
            x = x + hidden @ s[b + "mlp.w3.weight"].T + s[b + "mlp.w3.bias"]
        x = F.layer_norm(x, (width,), s[p + "norm.weight"], s[p + "norm.bias"], 1e-6)[:, 0]
        if p + "head.weight" in s:
            x = F.linear(x, s[p + "head.weight"], s.get(p + "head.bias"))
        return x

    @staticmethod
    def _eva_rotation(grid: int, head: int, trained_grid: int) -> torch.Tensor:
        """Unit complex numbers [grid*grid, head/2]: the first head/4 pairs turn with the patch row,
        the rest with the column, at frequencies 10000^(-2j/(head/2)); positions stretched to the
        trained grid."""
        quarter = head // 4
        frequencies = 10000.0 ** (-2 * torch.arange(quarter, dtype=torch.float64) / (head // 2))
        positions = torch.arange(grid, dtype=torch.float64) * trained_grid / grid
        rows = positions.repeat_interleave(grid)  # patch index = row * grid + column
        cols = positions.repeat(grid)
        angles = torch.cat([torch.outer(rows, frequencies), torch.outer(cols, frequencies)], dim=1)
        return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)

    # --- text: Jina XLM-RoBERTa with the default LoRA adapter ----------------------------------

    def _weight(self, module: str, embedding: bool = False) -> torch.Tensor:
        s = self.state
        base = TEXT + module + ".parametrizations.weight."
        a, b = s[base + "0.lora_A"][0], s[base + "0.lora_B"][0]
        delta = a @ b if embedding else b @ a
        return s[base + "original"] + delta * self.lora_scale

    def text(self, ids: torch.Tensor) -> torch.Tensor:
        cfg = self.text_config
        s, p = self.state, TEXT
        width, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        head = width // heads
        real = ids != cfg["pad_token_id"]
        x = F.embedding(ids, self._weight("embeddings.word_embeddings", embedding=True))
        x = x + self._weight("embeddings.token_type_embeddings", embedding=True)[0]
        x = F.layer_norm(x, (width,), s[p + "emb_ln.weight"], s[p + "emb_ln.bias"], 1e-5)
        frequencies = cfg["rotary_emb_base"] ** (-2 * torch.arange(head // 2, dtype=torch.float64) / head)
        angles = torch.outer(torch.arange(ids.shape[1], dtype=torch.float64), frequencies)
        rotation = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
        blocked = torch.zeros(real.shape).masked_fill(~real, float("-inf"))[:, None, None, :]
        for i in range(cfg["num_hidden_layers"]):
            b = f"encoder.layers.{i}."
            qkv = x @ self._weight(b + "mixer.Wqkv").T + s[p + b + "mixer.Wqkv.bias"]
            q, k, v = (t.unflatten(-1, (heads, head)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
            q, k = _rotate_halves(q, rotation), _rotate_halves(k, rotation)
            weights = torch.softmax(q @ k.transpose(-1, -2) / head**0.5 + blocked, dim=-1)
            attended = (weights @ v).transpose(1, 2).flatten(2)
            attended = attended @ self._weight(b + "mixer.out_proj").T + s[p + b + "mixer.out_proj.bias"]
            x = F.layer_norm(x + attended, (width,), s[p + b + "norm1.weight"], s[p + b + "norm1.bias"], 1e-5)
            hidden = F.gelu(x @ self._weight(b + "mlp.fc1").T + s[p + b + "mlp.fc1.bias"])
            hidden = hidden @ self._weight(b + "mlp.fc2").T + s[p + b + "mlp.fc2.bias"]
            x = F.layer_norm(x + hidden, (width,), s[p + b + "norm2.weight"], s[p + b + "norm2.bias"], 1e-5)
        weights = real.unsqueeze(-1).float()
        return (x * weights).sum(1) / weights.sum(1)


def _rotate_adjacent_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Channels (0,1), (2,3), ... as complex numbers, each turned by ROTATION."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2)


def _rotate_halves(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Channel j paired with channel j + head/2 (GPT-NeoX layout), each pair turned by ROTATION."""
    half = x.shape[-1] // 2
    turned = torch.complex(x[..., :half], x[..., half:]) * rotation
    return torch.cat([turned.real, turned.imag], dim=-1)


def official_transform(checkpoint: Path) -> Any:
    """JinaCLIPImageProcessor's transform for this checkpoint (short side resized bicubic, centre crop,
    ToTensor, `mean` / `std` from `preprocessor_config.json`), through transformers' CLIPImageProcessorPil."""
    import json

    from PIL import Image
    from transformers import CLIPImageProcessorPil

    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    size = config["size"]
    return CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=config["mean"],
        image_std=config["std"],
        do_convert_rgb=False,
    )


def official_image_pixels(data: bytes, checkpoint: Path) -> np.ndarray:
    """What the official `encode_image` hands the vision tower for one file: `Image.open(...)
    .convert("RGB")` (no EXIF orientation, alpha dropped, Pillow's own 16-bit conversion), then
    the official transform."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    pixels: np.ndarray = official_transform(checkpoint)(images=image, return_tensors="np")["pixel_values"][0]
    return pixels
