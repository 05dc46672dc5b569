"""Random-weight SigLIP-2 checkpoints around the official google/siglip2-so400m-patch16-512 files.

`so400m-512` writes the official config, processor config, tokenizer config and special tokens as they
are; `tiny` writes the same files with only the architecture numbers shrunk. The weights are random and
the tokenizer is a small BPE trained here, laid out like Gemma's: the official added tokens at their ids,
spaces as "▁", byte fallback, `<eos>` appended to every text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.fabricated_tokenizers import gemma_like_tokenizer
from mmembed.families.official import (
    official_bytes,
    official_json,
    overlay,
    shrink_token_ids,
)

MODEL_ID = "google/siglip2-so400m-patch16-512"
OFFICIAL_FILES = ("config.json", "preprocessor_config.json", "special_tokens_map.json", "tokenizer_config.json")

# What each size changes in the official config.json: nothing for the real size; for tiny (CI on two
# cores) the sizes only, so every other key and default is the official one.
SIZES: dict[str, dict[str, Any]] = {
    "so400m-512": {},
    "tiny": {
        "text_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "projection_size": 64,
            "vocab_size": 1024,
        },
        "vision_config": {
            "hidden_size": 64,
            "image_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
    },
}


def official_files(size: str) -> dict[str, bytes]:
    """The small files of a SIZE checkpoint: the official bytes, or for tiny the official files with the
    architecture numbers shrunk (serialised as transformers writes them)."""
    if size not in SIZES:
        raise CheckpointError(f"unknown siglip2 size {size!r}; choose one of {', '.join(SIZES)}")
    files = {name: official_bytes(MODEL_ID, name) for name in OFFICIAL_FILES}
    if not SIZES[size]:
        return files
    config = overlay(official_json(MODEL_ID, "config.json"), SIZES[size])
    side = config["vision_config"]["image_size"]
    processor = overlay(official_json(MODEL_ID, "preprocessor_config.json"), {"size": {"height": side, "width": side}})
    tokenizer_config = official_json(MODEL_ID, "tokenizer_config.json")
    full_vocab = official_json(MODEL_ID, "config.json")["text_config"]["vocab_size"]
    tokenizer_config["added_tokens_decoder"] = shrink_token_ids(
        tokenizer_config["added_tokens_decoder"], full_vocab, config["text_config"]["vocab_size"]
    )
    for name, content in (
        ("config.json", config),
        ("preprocessor_config.json", processor),
        ("tokenizer_config.json", tokenizer_config),
    ):
        files[name] = (json.dumps(content, indent=2) + "\n").encode()
    return files


def make_checkpoint(size: str, out: Path) -> None:
    """Write a random-weight checkpoint of SIZE in the official layout, with a locally trained tokenizer."""
    from transformers import SiglipConfig, SiglipModel

    files = official_files(size)
    config = json.loads(files["config.json"])
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # 1.1B random values: GPU is quicker
        model = SiglipModel(SiglipConfig.from_dict(config))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # the weights; its config.json is replaced by the official one below
    for name, data in files.items():
        (out / name).write_bytes(data)
    added = json.loads(files["tokenizer_config.json"])["added_tokens_decoder"]
    gemma_like_tokenizer(int(config["text_config"]["vocab_size"]), added).save(str(out / "tokenizer.json"))
