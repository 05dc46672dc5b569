"""JinaCLIP-v2 (`jinaai/jina-clip-v2`): EVA02-L/14 at 512 px and Jina-XLM-RoBERTa, 1024-d, 89 languages.

Read from the official checkpoint folder (config.json, model.safetensors, preprocessor_config.json,
tokenizer.json) without its remote code: the towers are clean-room modules (`eva02`, `jina_text`) and
`jinaclip2_layout` maps the official weights onto them, merging the text LoRA adapter the model applies
by default. Image: shortest side resized (bicubic) to 512, centre crop, OpenAI CLIP mean/std. Text: no
lowercasing, `<s> ... </s>`, truncated at 512 tokens, mean-pooled; queries get the retrieval
instruction. Matryoshka: any of the config's `matryoshka_dimensions`, sliced then re-normalised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmembed.families import jinaclip2_layout as layout
from mmembed.families.base import CheckpointError, Modality, ModelFamily, Towers, read_json
from mmembed.families.eva02 import Eva02Config, Eva02VisionTower
from mmembed.families.jina_text import JinaTextTower
from mmembed.families.jinaclip2_checkpoint import SIZES, make_checkpoint
from mmembed.preprocessing import PILLOW_CONVERT_DECODE, ImageSettings, TextSettings

MAX_TEXT_TOKENS = 512  # the official encode_text truncation; the model itself accepts up to 8192
_OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


# JinaCLIPImageProcessor's defaults (jina-clip-implementation `processing_clip.py`): what it uses for a key
# its preprocessor_config.json leaves out.
_PROCESSOR_DEFAULTS: dict[str, Any] = {
    "size": 224,
    "mean": _OPENAI_CLIP_MEAN,
    "std": _OPENAI_CLIP_STD,
    "resize_mode": "shortest",
    "interpolation": "bicubic",
}


def image_settings(checkpoint: Path) -> ImageSettings:
    """Image settings from preprocessor_config.json, read as JinaCLIPImageProcessor reads it: `size`,
    `mean`, `std`, `resize_mode`, `interpolation`, its own defaults for a key the file leaves out.

    Its ToTensor always scales by 1/255, so the rescale factor is that, not a setting. Decoding is the
    official `encode_image`'s: `Image.open(...).convert("RGB")`, EXIF orientation ignored.
    """
    path = checkpoint / "preprocessor_config.json"
    config = {**_PROCESSOR_DEFAULTS, **read_json(checkpoint, "preprocessor_config.json")}
    for ignored, used in (("image_mean", "mean"), ("image_std", "std")):
        if ignored in config and list(config[ignored]) != list(config[used]):
            raise CheckpointError(
                f"{path} gives {ignored} {config[ignored]}, which JinaCLIPImageProcessor ignores: it normalises "
                f"with {used} {list(config[used])}. Name the values {used!r} if they are the ones meant."
            )
    try:
        size, mode, interpolation = _square_size(config["size"]), config["resize_mode"], config["interpolation"]
        mean, std = tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad setting ({e})") from None
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(f"{path}: mean and std need 3 values each, got {list(mean)} and {list(std)}")
    if mode not in ("shortest", "squash"):
        raise CheckpointError(f"{path}: resize_mode {mode!r} is not supported (shortest or squash)")
    if interpolation not in _PIL_FILTERS:
        raise CheckpointError(f"{path}: interpolation {interpolation!r} is not one of {', '.join(_PIL_FILTERS)}")
    return ImageSettings(
        height=size,
        width=size,
        shortest_edge=size if mode == "shortest" else None,
        resample=_PIL_FILTERS[interpolation],
        rescale_factor=1 / 255,
        image_mean=(mean[0], mean[1], mean[2]),
        image_std=(std[0], std[1], std[2]),
        decode=PILLOW_CONVERT_DECODE,
    )


def _square_size(size: Any) -> int:
    """The processor's `size`: an int, or [height, width] with both equal (the tower is square)."""
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"size {size!r} is not square")
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size {size!r} is not a positive integer")
    return size


def text_settings(checkpoint: Path) -> TextSettings:
    """Token ids with `<s>`/`</s>`, padded with the tokenizer's pad id, which the tower masks out: so
    each request is padded only as far as its longest text needs."""
    from tokenizers import Tokenizer

    settings = layout.text_settings_of(read_json(checkpoint, "config.json"))
    tokenizer_config = read_json(checkpoint, "tokenizer_config.json")
    pad_token = tokenizer_config.get("pad_token", "<pad>")
    if isinstance(pad_token, dict):
        pad_token = pad_token["content"]
    pad_id = Tokenizer.from_file(str(checkpoint / "tokenizer.json")).token_to_id(pad_token)
    if pad_id is None or pad_id != int(settings.get("pad_token_id", 1)):
        raise CheckpointError(f"tokenizer pad token {pad_token!r} (id {pad_id}) is not the model's pad_token_id")
    max_length = min(MAX_TEXT_TOKENS, int(settings["max_position_embeddings"]) - 2)
    return TextSettings(max_length=max_length, pad_token_id=pad_id, lowercase=False, pad_to_longest=True)


def query_instruction(checkpoint: Path) -> str:
    return layout.query_instruction(read_json(checkpoint, "config.json"))


def matryoshka_dimensions(checkpoint: Path) -> tuple[int, ...]:
    config = read_json(checkpoint, "config.json")
    return tuple(int(d) for d in config.get("matryoshka_dimensions") or ())


def load_towers(checkpoint: Path) -> Towers:
    vision, text, _ = layout.load_official_towers(checkpoint)
    return Towers(
        vision=vision,
        text=text,
        dimension=vision.config.output_dim,
        vocab_size=int(text.encoder.config.vocab_size),
    )


_TOWER_CONFIG = "mmembed_tower.json"


def save_tower(towers: Towers, modality: Modality, out: Path) -> None:
    """One tower (already LoRA-merged) as our own config + fp32 safetensors, for the torch runtime."""
    from safetensors.torch import save_file

    tower = towers.vision if modality == "image" else towers.text
    if isinstance(tower, Eva02VisionTower):
        config: dict[str, Any] = {"vision": tower.config.to_dict()}
    elif isinstance(tower, JinaTextTower):
        config = {"text": tower.encoder.config.to_dict()}
    else:
        raise TypeError(f"not a JinaCLIP tower: {type(tower).__name__}")
    out.mkdir(parents=True, exist_ok=True)
    (out / _TOWER_CONFIG).write_text(json.dumps(config, indent=2))
    weights = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_tower(folder: Path, modality: Modality) -> torch.nn.Module:
    from safetensors.torch import load_file
    from transformers import JinaEmbeddingsV3Config

    config = read_json(folder, _TOWER_CONFIG)
    tower: torch.nn.Module
    if modality == "image":
        tower = Eva02VisionTower(Eva02Config(**config["vision"]))
    else:
        tower = JinaTextTower(JinaEmbeddingsV3Config(**config["text"]))
    tower.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return tower.eval()


FAMILY = ModelFamily(
    name="jinaclip2",
    sizes=tuple(SIZES),
    make_checkpoint=make_checkpoint,
    image_settings=image_settings,
    text_settings=text_settings,
    load_towers=load_towers,
    save_tower=save_tower,
    load_tower=load_tower,
    fp8_scope=r"^\.(blocks|encoder\.layers)\.\d+\.",
    query_instruction=query_instruction,
    matryoshka_dimensions=matryoshka_dimensions,
)
