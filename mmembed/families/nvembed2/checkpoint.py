"""Random-weight NV-Embed-v2 checkpoints in the official layout, around the official nvidia/NV-Embed-v2 files.

`full` writes the official config, tokenizer config, special tokens and sentence-transformers length as
they are, and 7.85 B random fp16 parameters in 5 GB shards with their index, streamed tensor by tensor
(a few GB of memory, ~16 GB of disk); `tiny` writes the same files with only the sizes shrunk and
shards of a few kB, so the index is exercised. The tokenizer is a small Mistral-style BPE trained here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.fabricated_tokenizers import mistral_like_tokenizer
from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder
from mmembed.families.nvembed2.layout import nvembed_config, official_name, save_official
from mmembed.families.official import official_bytes, official_json, overlay

MODEL_ID = "nvidia/NV-Embed-v2"
OFFICIAL_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json")

# What each size changes in the official files: nothing for the published model; sizes for tiny.
SIZES: dict[str, dict[str, Any]] = {
    "full": {},
    "tiny": {
        "hidden_size": 64,
        "latent_attention_config": {
            "num_latents_value": 8,
            "num_cross_heads": 2,
            "hidden_dim": 64,
            "latent_dim": 64,
            "cross_dim_head": 16,
        },
        "text_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
            "vocab_size": 1000,
            "max_position_embeddings": 256,
        },
    },
}
TINY_MAX_TOKENS = 64  # sentence_bert_config.json's max_seq_length for tiny: short enough to test truncation
SHARD_BYTES = {"full": 5 * 10**9, "tiny": 40_000}


def official_files(size: str) -> dict[str, bytes]:
    """The small files of a SIZE checkpoint: the official bytes, or for tiny with the sizes shrunk."""
    if size not in SIZES:
        raise CheckpointError(f"unknown nvembed2 size {size!r}; choose one of {', '.join(SIZES)}")
    files = {name: official_bytes(MODEL_ID, name) for name in OFFICIAL_FILES}
    if SIZES[size]:
        config = overlay(official_json(MODEL_ID, "config.json"), SIZES[size])
        files["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
        lengths = overlay(official_json(MODEL_ID, "sentence_bert_config.json"), {"max_seq_length": TINY_MAX_TOKENS})
        files["sentence_bert_config.json"] = json.dumps(lengths, indent=2).encode()
    return files


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A random weight shaped SHAPE: norms' scales 1 and biases 0, the rest normal with std 0.02 (the
    config's initializer_range); the latents unit normal, as trained latents are not small."""
    if name.endswith(".weight") and "norm" in name.rsplit(".", 2)[-2]:  # also CLIP's pre_layrnorm, layer_norm1
        return torch.ones(shape)
    if name.endswith(".bias"):
        return torch.zeros(shape)
    std = 1.0 if name.endswith("latents") else 0.02
    return torch.randn(shape, generator=generator) * std


def make_checkpoint(size: str, out: Path) -> None:
    """Random weights in the official layout (sharded safetensors + index, official tensor names), the
    official small files, and a Mistral-style tokenizer trained here."""
    files = official_files(size)
    config = json.loads(files["config.json"])
    settings = nvembed_config(config, "config.json")
    with torch.device("meta"):
        meta = NVEmbedTextEncoder(settings.text_config, settings.pooler)
    dtype = getattr(torch, config.get("torch_dtype") or "float32")
    generator = torch.Generator().manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {official_name(name): tuple(tensor.shape) for name, tensor in meta.state_dict().items()}
    save_official(shapes, lambda name: random_tensor(name, shapes[name], generator), dtype, out, SHARD_BYTES[size])
    for name, data in files.items():
        (out / name).write_bytes(data)
    added = json.loads(files["tokenizer_config.json"])["added_tokens_decoder"]
    mistral_like_tokenizer(settings.vocab_size, added).save(str(out / "tokenizer.json"))
