"""Random-weight JinaCLIP-v2 checkpoints around the official jinaai/jina-clip-v2 files.

`full` writes the official config, processor config, tokenizer config and special tokens as they are;
`tiny` writes the same files with only the architecture numbers shrunk (the text sizes go into
`hf_model_config_kwargs`, where the official file leaves the jina-embeddings-v3 base's). The weights are
random, in the official state-dict layout with the LoRA factors, in the dtype the config names; the
tokenizer is a small multilingual Unigram trained here, laid out like XLM-RoBERTa's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.fabricated_tokenizers import xlm_roberta_like_tokenizer
from mmembed.families.jinaclip2 import layout
from mmembed.families.jinaclip2.eva02 import Eva02VisionTower
from mmembed.families.jinaclip2.text_tower import JinaTextTower, text_config
from mmembed.families.official import (
    official_bytes,
    official_json,
    overlay,
    shrink_token_ids,
)

MODEL_ID = "jinaai/jina-clip-v2"
OFFICIAL_FILES = ("config.json", "preprocessor_config.json", "special_tokens_map.json", "tokenizer_config.json")

# What each size changes in the official config.json: nothing for the published model; for tiny the
# sizes only (and the Matryoshka sizes, which cannot exceed the embedding's).
SIZES: dict[str, dict[str, Any]] = {
    "full": {},
    "tiny": {
        "projection_dim": 64,
        "matryoshka_dimensions": [16, 32, 64],
        "vision_config": {"embed_dim": 64, "image_size": 56, "width": 64, "layers": 2, "head_width": 16},
        "text_config": {
            "embed_dim": 64,
            "hf_model_config_kwargs": {
                "vocab_size": 4096,
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "max_position_embeddings": 66,
            },
        },
    },
}


def official_files(size: str) -> dict[str, bytes]:
    """The small files of a SIZE checkpoint: the official bytes, or for tiny the official files with the
    architecture numbers shrunk (in the official file's own layout: 4-space indent, no final newline)."""
    if size not in SIZES:
        raise CheckpointError(f"unknown jinaclip2 size {size!r}; choose one of {', '.join(SIZES)}")
    files = {name: official_bytes(MODEL_ID, name) for name in OFFICIAL_FILES}
    if not SIZES[size]:
        return files
    config = overlay(official_json(MODEL_ID, "config.json"), SIZES[size])
    text = layout.text_settings_of(config)
    side = config["vision_config"]["image_size"]
    processor = overlay(official_json(MODEL_ID, "preprocessor_config.json"), {"size": side})
    tokenizer_config = official_json(MODEL_ID, "tokenizer_config.json")
    full_vocab = layout.JINA_EMBEDDINGS_V3_BASE["vocab_size"]
    tokenizer_config["added_tokens_decoder"] = shrink_token_ids(
        tokenizer_config["added_tokens_decoder"], full_vocab, text["vocab_size"]
    )
    tokenizer_config["model_max_length"] = text["max_position_embeddings"]
    files["config.json"] = json.dumps(config, indent=4).encode()
    files["preprocessor_config.json"] = (json.dumps(processor, indent=4) + "\n").encode()
    files["tokenizer_config.json"] = (json.dumps(tokenizer_config, indent=2) + "\n").encode()
    return files


def make_checkpoint(size: str, out: Path) -> None:
    """Random weights in the official checkpoint layout (LoRA factors included), the official small files,
    and a small multilingual XLM-RoBERTa-style tokenizer trained here."""
    from safetensors.torch import save_file

    files = official_files(size)
    config = json.loads(files["config.json"])
    torch.manual_seed(0)
    vision = Eva02VisionTower(layout.vision_config(config))
    for parameter in (vision.class_token, vision.position_embedding):
        torch.nn.init.trunc_normal_(parameter, std=0.02)
    text_settings = layout.text_settings_of(config)
    text = JinaTextTower(text_config(text_settings))
    state = layout.official_state_dict(vision, text, adapters=1, rank=4, seed=1)
    dtype = getattr(torch, config.get("torch_dtype") or "float32")  # bfloat16 as published: 1.7 GB, not 3.5
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(dtype).contiguous() for k, v in state.items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name, data in files.items():
        (out / name).write_bytes(data)
    added = json.loads(files["tokenizer_config.json"])["added_tokens_decoder"]
    xlm_roberta_like_tokenizer(int(text_settings["vocab_size"]), added).save(str(out / "tokenizer.json"))
