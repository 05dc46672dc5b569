"""Random-weight MM-Embed checkpoints in the official layout, around the official nvidia/MM-Embed files.

Official files (`config.json`, `special_tokens_map.json`, `generation_config.json`) are written as they
are for `full` and with only the sizes shrunk for `tiny`. Two files exist on the hub but no public copy
was found (shared/fixtures/official-configs/PROVENANCE.md), so these are stand-ins with the values the
reference relies on: `preprocessor_config.json` (llava-v1.6's LlavaNextImageProcessor: CLIP mean/std,
bicubic, 336 px) and `tokenizer_config.json` (Mistral's tokenizer with <image> and <pad> after the
vocabulary, BOS and EOS added). The retriever config goes into `retriever/config.json`: NV-Embed-v1's
is not public here either, so it is NV-Embed-v2's, which has the same architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.fabricated_tokenizers import mistral_like_tokenizer
from mmembed.families.mm_embed.encoder import MMEmbedEncoder
from mmembed.families.mm_embed.layout import RETRIEVER_FOLDER, official_name
from mmembed.families.nvembed2 import checkpoint as nvembed_files
from mmembed.families.nvembed2.checkpoint import random_tensor
from mmembed.families.nvembed2.encoder import NVEmbedTextEncoder
from mmembed.families.nvembed2.layout import nvembed_config, save_official
from mmembed.families.official import official_bytes, official_json, overlay

MODEL_ID = "nvidia/MM-Embed"
OFFICIAL_FILES = ("config.json", "special_tokens_map.json", "generation_config.json")
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MAX_TEXT_TOKENS = 512  # the reference `encode`'s max_length

SIZES: dict[str, dict[str, Any]] = {
    "full": {},
    "tiny": {
        "image_token_index": 1000,  # right after the tiny retriever's 1,000-token vocabulary
        "vision_config": {
            "hidden_size": 32,
            "image_size": 56,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 3,
            "projection_dim": 16,
        },
    },
}
SHARD_BYTES = {"full": 5 * 10**9, "tiny": 40_000}


def official_files(size: str) -> dict[str, bytes]:
    if size not in SIZES:
        raise CheckpointError(f"unknown mm_embed size {size!r}; choose one of {', '.join(SIZES)}")
    files = {name: official_bytes(MODEL_ID, name) for name in OFFICIAL_FILES}
    if SIZES[size]:
        config = overlay(official_json(MODEL_ID, "config.json"), SIZES[size])
        files["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return files


def stand_in_files(config: dict[str, Any], vocab_size: int) -> dict[str, bytes]:
    """The processor and tokenizer configs the hub has and no public copy shows (see the module's doc)."""
    side = int(config["vision_config"]["image_size"])
    processor = {
        "crop_size": {"height": side, "width": side},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_grid_pinpoints": config["image_grid_pinpoints"],
        "image_mean": OPENAI_CLIP_MEAN,
        "image_processor_type": "LlavaNextImageProcessor",
        "image_std": OPENAI_CLIP_STD,
        "processor_class": "LlavaNextProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": side},
    }
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    names = {0: "<unk>", 1: "<s>", 2: "</s>", vocab_size: "<image>", vocab_size + 1: "<pad>"}
    tokenizer = {
        "add_bos_token": True,
        "add_eos_token": True,
        "added_tokens_decoder": {str(index): {"content": name, **special} for index, name in names.items()},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": True,
        "model_max_length": 32768,
        "pad_token": "<pad>",
        "padding_side": "right",
        "processor_class": "LlavaNextProcessor",
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
    }
    return {
        "preprocessor_config.json": (json.dumps(processor, indent=2) + "\n").encode(),
        "tokenizer_config.json": (json.dumps(tokenizer, indent=2) + "\n").encode(),
    }


def make_checkpoint(size: str, out: Path) -> None:
    """Random weights in the official layout, the official and stand-in small files, the retriever's
    config in retriever/, and a Mistral-style tokenizer with <image> and <pad> trained here."""
    files = official_files(size)
    config = json.loads(files["config.json"])
    retriever_file = nvembed_files.official_files(size)["config.json"]
    retriever = nvembed_config(json.loads(retriever_file), "retriever config")
    if config["image_token_index"] != retriever.vocab_size:
        raise CheckpointError("the image token must come right after the retriever's vocabulary")
    files.update(stand_in_files(config, retriever.vocab_size))
    with torch.device("meta"):
        text = NVEmbedTextEncoder(retriever.text_config, retriever.pooler)
        meta = MMEmbedEncoder(
            text, config["vision_config"], image_token_index=retriever.vocab_size, feature_layer=-2, keep_cls=False
        )
    dtype = getattr(torch, config.get("torch_dtype") or "float32")
    generator = torch.Generator().manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {official_name(name): tuple(tensor.shape) for name, tensor in meta.state_dict().items()}
    save_official(shapes, lambda name: random_tensor(name, shapes[name], generator), dtype, out, SHARD_BYTES[size])
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / RETRIEVER_FOLDER).mkdir(exist_ok=True)
    (out / RETRIEVER_FOLDER / "config.json").write_bytes(retriever_file)
    added = json.loads(files["tokenizer_config.json"])["added_tokens_decoder"]
    tokenizer = mistral_like_tokenizer(retriever.vocab_size + 2, added, add_eos=True)
    tokenizer.save(str(out / "tokenizer.json"))
