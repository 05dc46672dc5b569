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
    def __init__(self, checkpoint: Path, max_length: int) -> None:
        from transformers import LlamaTokenizer

        self.config = json.loads((checkpoint / "config.json").read_text())
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
            hidden = self.decoder(ids, attention)
            pooled = self.latent_attention(hidden)
            mask = pool.float().unsqueeze(-1)
            mean = (pooled * mask).sum(1) / mask.sum(1)
            return functional.normalize(mean, dim=-1).numpy()

    def _w(self, name: str) -> torch.Tensor:
        return self.weights[name]

    def decoder(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        cfg, prefix = self.text, "embedding_model."
        heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        head_dim = cfg["hidden_size"] // heads
        batch, length = ids.shape
        x = self._w(prefix + "embed_tokens.weight")[ids]
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
