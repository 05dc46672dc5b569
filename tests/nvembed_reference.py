"""An independent NV-Embed forward for the tests: plain torch over the checkpoint's official tensor names,
with transformers only for the tokenizer, as NV-Embed's own `encode` uses it.

It follows the reference pipeline step by step (research notes, shared/research/nvembed.md, sections 1.3
to 1.5 and 9): `instruction + text + eos_token`, one tokenizer call with right padding and truncation,
the pool mask zeroing the first len(tokenizer.tokenize(instruction)) positions, a bidirectional Mistral
(RMSNorm, rotary positions 0..n-1, grouped-query attention over the real tokens, SiLU-gated MLP), the
latent attention block, GEGLU feed-forward, masked mean, L2. None of mmembed's model code is used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.nn import functional

DEFAULT_INSTRUCTION = "Instruct: Given a question, retrieve passages that answer the question\nQuery: "


def official_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by its official name, in fp32."""
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = {}
    for file in sorted(set(index.values())):
        with safe_open(str(checkpoint / file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[name] = handle.get_tensor(name).float()
    return tensors


class ReferenceNVEmbed:
    decoder_prefix = "embedding_model."

    def __init__(self, checkpoint: Path, max_length: int, config_file: Path | None = None) -> None:
        from transformers import LlamaTokenizer

        self.config = json.loads((config_file or checkpoint / "config.json").read_text())
        self.text = self.config["text_config"]
        self.latent = {
            "num_latents_value": 512,
            "num_cross_heads": 8,
            "cross_dim_head": 4096,
            **self.config.get("latent_attention_config", {}),
        }
        self.weights = official_tensors(checkpoint)
        self.tokenizer = LlamaTokenizer.from_pretrained(checkpoint)  # tokenizer_config.json names it
        self.tokenizer.padding_side = "right"
        self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = max_length

    def tokenize(self, texts: list[str], instruction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prompts = [instruction + text + self.tokenizer.eos_token for text in texts]
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        pool = batch["attention_mask"].clone()
        if instruction:
            pool[:, : len(self.tokenizer.tokenize(instruction))] = 0
        return batch["input_ids"], batch["attention_mask"], pool

    def embed(self, texts: list[str], instruction: str = "") -> np.ndarray:
        ids, attention, pool = self.tokenize(texts, instruction)
        with torch.no_grad():
            return self.pooled(self.token_embeddings(ids), attention, pool)

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self._w(self.decoder_prefix + "embed_tokens.weight")[ids]

    def pooled(self, x: torch.Tensor, attention: torch.Tensor, pool: torch.Tensor) -> np.ndarray:
        """Token embeddings through the decoder and the latent attention; masked mean; L2."""
        pooled = self.latent_attention(self.decoder(x, attention))
        mask = pool.float().unsqueeze(-1)
        mean = (pooled * mask).sum(1) / mask.sum(1)
        return functional.normalize(mean, dim=-1).numpy()

    def _w(self, name: str) -> torch.Tensor:
        return self.weights[name]

    def decoder(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        cfg, prefix = self.text, self.decoder_prefix
        heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        head_dim = cfg["hidden_size"] // heads
        batch, length, _ = x.shape
        inverse = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(length).float(), inverse)
        cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        blocked = torch.where(attention.bool(), 0.0, float("-inf"))[:, None, None, :]  # keys only: bidirectional
        for layer in range(cfg["num_hidden_layers"]):
            p = f"{prefix}layers.{layer}."
            h = self._rms(x, p + "input_layernorm.weight")
            q = (h @ self._w(p + "self_attn.q_proj.weight").T).view(batch, length, heads, head_dim).transpose(1, 2)
            k = (h @ self._w(p + "self_attn.k_proj.weight").T).view(batch, length, kv_heads, head_dim).transpose(1, 2)
            v = (h @ self._w(p + "self_attn.v_proj.weight").T).view(batch, length, kv_heads, head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
            scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + blocked
            out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, heads * head_dim)
            x = x + out @ self._w(p + "self_attn.o_proj.weight").T
            h = self._rms(x, p + "post_attention_layernorm.weight")
            gate = functional.silu(h @ self._w(p + "mlp.gate_proj.weight").T)
            x = x + (gate * (h @ self._w(p + "mlp.up_proj.weight").T)) @ self._w(p + "mlp.down_proj.weight").T
        return self._rms(x, prefix + "norm.weight")

    def _rms(self, x: torch.Tensor, name: str) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.text["rms_norm_eps"]) * self._w(name)

    def latent_attention(self, hidden: torch.Tensor) -> torch.Tensor:
        p = "latent_attention_model."
        heads, head_dim = self.latent["num_cross_heads"], self.latent["cross_dim_head"]
        batch, length, _ = hidden.shape
        q = _layer_norm(
            hidden, self._w(p + "cross_attend_blocks.0.norm.weight"), self._w(p + "cross_attend_blocks.0.norm.bias")
        )
        latents = self._w(p + "latents")
        context = _layer_norm(
            latents,
            self._w(p + "cross_attend_blocks.0.norm_context.weight"),
            self._w(p + "cross_attend_blocks.0.norm_context.bias"),
        )
        q = q @ self._w(p + "cross_attend_blocks.0.fn.to_q.weight").T
        kv = context @ self._w(p + "cross_attend_blocks.0.fn.to_kv.weight").T
        k, v = kv[:, : heads * head_dim], kv[:, heads * head_dim :]
        q = q.view(batch, length, heads, head_dim).transpose(1, 2)
        k = k.view(-1, heads, head_dim).transpose(0, 1)[None]
        v = v.view(-1, heads, head_dim).transpose(0, 1)[None]
        attended = ((q @ k.transpose(-1, -2)) / math.sqrt(head_dim)).softmax(-1) @ v
        attended = attended.transpose(1, 2).reshape(batch, length, heads * head_dim)
        x = attended @ self._w(p + "cross_attend_blocks.0.fn.to_out.weight").T + hidden
        h = _layer_norm(
            x, self._w(p + "cross_attend_blocks.1.norm.weight"), self._w(p + "cross_attend_blocks.1.norm.bias")
        )
        h = h @ self._w(p + "cross_attend_blocks.1.fn.net.0.weight").T + self._w(
            p + "cross_attend_blocks.1.fn.net.0.bias"
        )
        value, gate = h[..., : h.shape[-1] // 2], h[..., h.shape[-1] // 2 :]
        h = value * 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))  # exact GELU
        return (
            h @ self._w(p + "cross_attend_blocks.1.fn.net.2.weight").T
            + self._w(p + "cross_attend_blocks.1.fn.net.2.bias")
            + x
        )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + 1e-5) * weight + bias


MM_QUERY_SPLIT = "\nQuery: "


class ReferenceMMEmbed(ReferenceNVEmbed):
    """MM-Embed's pipeline (research notes section 9, MM-Embed 1-9), one prompt at a time so that nothing
    depends on how a batch is padded: the prompt templates, the tokenizer adding BOS and EOS, the image
    squashed to the CLIP size with PIL bicubic, CLIP's penultimate layer without CLS, the GELU projector,
    `image_newline`, the <image> token replaced by those tokens, ids past the vocabulary remapped, the
    pool mask over the merged sequence, then NV-Embed's decoder and pooling."""

    decoder_prefix = "language_model."

    def __init__(self, checkpoint: Path, max_length: int = 512) -> None:
        super().__init__(checkpoint, max_length, config_file=checkpoint / "retriever" / "config.json")
        self.mm_config = json.loads((checkpoint / "config.json").read_text())
        self.processor = json.loads((checkpoint / "preprocessor_config.json").read_text())

    def prompt(self, text: str, has_image: bool, query: bool, instruction: str | None) -> str:
        body = ("<image>\n" if has_image else "") + text
        if not query:
            return body
        return (f"Instruct: {instruction}\nQuery: " if instruction is not None else "Query: ") + body

    def embed_items(
        self, items: list[tuple[object | None, str]], query: bool, instruction: str | None = None
    ) -> np.ndarray:
        """ITEMS: (PIL image or None, text) pairs."""
        return np.concatenate([self._embed_one(image, text, query, instruction) for image, text in items])

    def _embed_one(self, image: object | None, text: str, query: bool, instruction: str | None) -> np.ndarray:
        prompt = self.prompt(text, image is not None, query, instruction)
        batch = self.tokenizer([prompt], truncation=True, max_length=self.max_length, return_tensors="pt")
        ids = batch["input_ids"][0]
        image_id = self.mm_config["image_token_index"]
        lookup = torch.where(ids == image_id, 0, torch.where(ids == image_id + 1, 2, ids))
        with torch.no_grad():
            x = self.token_embeddings(lookup)
            if image is not None:
                (position,) = (ids == image_id).nonzero()[0]
                x = torch.cat([x[:position], self.image_tokens(image), x[position + 1 :]])
            attention = torch.ones(x.shape[0], dtype=torch.int64)
            pool = attention.clone()
            if MM_QUERY_SPLIT in prompt:
                instruction_part = prompt.split(MM_QUERY_SPLIT)[0]
                pool[: len(self.tokenizer(instruction_part)["input_ids"])] = 0
            return self.pooled(x[None], attention[None], pool[None])

    def pixels(self, image: object) -> torch.Tensor:
        from PIL import Image

        assert isinstance(image, Image.Image)
        side = self.processor["size"]["shortest_edge"]
        resized = image.convert("RGB").resize((side, side), resample=Image.Resampling.BICUBIC)
        array = np.asarray(resized, dtype=np.float32) * np.float32(self.processor["rescale_factor"])
        array = (array - np.array(self.processor["image_mean"], dtype=np.float32)) / np.array(
            self.processor["image_std"], dtype=np.float32
        )
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def _clip_heads(self, h: torch.Tensor, name: str, heads: int) -> torch.Tensor:
        out = h @ self._w(name + ".weight").T + self._w(name + ".bias")
        return out.view(1, h.shape[1], heads, h.shape[2] // heads).transpose(1, 2)

    def image_tokens(self, image: object) -> torch.Tensor:
        """(patches + 1, hidden): CLIP's penultimate hidden states without CLS, projected, and the newline."""
        vision = self.mm_config["vision_config"]
        p = "vision_tower.vision_model."
        heads = vision["num_attention_heads"]
        patch = self._w(p + "embeddings.patch_embedding.weight")
        x = functional.conv2d(self.pixels(image)[None], patch, stride=vision["patch_size"]).flatten(2).transpose(1, 2)
        x = torch.cat([self._w(p + "embeddings.class_embedding")[None, None], x], dim=1)
        x = x + self._w(p + "embeddings.position_embedding.weight")[None]
        x = _layer_norm(x, self._w(p + "pre_layrnorm.weight"), self._w(p + "pre_layrnorm.bias"))
        states = [x]
        for layer in range(vision["num_hidden_layers"]):
            q = f"{p}encoder.layers.{layer}."
            h = _layer_norm(x, self._w(q + "layer_norm1.weight"), self._w(q + "layer_norm1.bias"))
            length, width = h.shape[1], h.shape[2]
            q_, k_, v_ = (self._clip_heads(h, f"{q}self_attn.{name}", heads) for name in ("q_proj", "k_proj", "v_proj"))
            scores = q_ @ k_.transpose(-1, -2) / math.sqrt(width // heads)
            attended = (scores.softmax(-1) @ v_).transpose(1, 2).reshape(1, length, width)
            x = x + attended @ self._w(q + "self_attn.out_proj.weight").T + self._w(q + "self_attn.out_proj.bias")
            h = _layer_norm(x, self._w(q + "layer_norm2.weight"), self._w(q + "layer_norm2.bias"))
            h = h @ self._w(q + "mlp.fc1.weight").T + self._w(q + "mlp.fc1.bias")
            h = h * torch.sigmoid(1.702 * h)  # CLIP's quick GELU
            x = x + h @ self._w(q + "mlp.fc2.weight").T + self._w(q + "mlp.fc2.bias")
            states.append(x)
        features = states[self.mm_config["vision_feature_layer"]][0, 1:]
        m = "multi_modal_projector."
        h = features @ self._w(m + "linear_1.weight").T + self._w(m + "linear_1.bias")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        h = h @ self._w(m + "linear_2.weight").T + self._w(m + "linear_2.bias")
        return torch.cat([h, self._w("image_newline")[None]])
