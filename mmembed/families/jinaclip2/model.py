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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import (
    CheckpointError,
    ModelFamily,
    ModelSpec,
)
from mmembed.core.preprocessing import PILLOW_CONVERT_DECODE, ImageSettings, TextSettings
from mmembed.families.checkpoint_files import pad_token_id, read_json
from mmembed.families.jinaclip2 import layout
from mmembed.families.jinaclip2.checkpoint import SIZES, make_checkpoint
from mmembed.families.jinaclip2.eva02 import Eva02Config, Eva02VisionTower
from mmembed.families.jinaclip2.text_tower import JinaTextTower
from mmembed.families.two_towers import two_towers

# The transformer blocks of both towers: what may run in fp8 (embeddings, norms, heads stay wider).
PRECISION_SCOPE = r"^\.(blocks|encoder\.layers)\.\d+\."

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
    settings = layout.text_settings_of(read_json(checkpoint, "config.json"))
    pad_id = pad_token_id(checkpoint)
    if pad_id != int(settings.get("pad_token_id", 1)):
        raise CheckpointError(f"the tokenizer's pad token (id {pad_id}) is not the model's pad_token_id")
    max_length = min(MAX_TEXT_TOKENS, int(settings["max_position_embeddings"]) - 2)
    return TextSettings(max_length=max_length, pad_token_id=pad_id, lowercase=False, pad_to_longest=True)


def describe(checkpoint: Path) -> ModelSpec:
    """Two towers into one space: NAME_image -> vision, NAME_text -> text, and NAME_query -> text with
    the retrieval instruction in front."""
    config = read_json(checkpoint, "config.json")
    text = text_settings(checkpoint)
    return two_towers(
        image=image_settings(checkpoint),
        text=text,
        vocab_size=int(layout.text_settings_of(config)["vocab_size"]),
        dimension=layout.vision_config(config).output_dim,
        precision_scope=PRECISION_SCOPE,
        query=replace(text, prefix=layout.query_instruction(config)),
        matryoshka_dimensions=tuple(int(d) for d in config.get("matryoshka_dimensions") or ()),
    )


def load_encoders(checkpoint: Path) -> dict[str, torch.nn.Module]:
    """The official weights on the clean-room towers, text LoRA merged, fp32 eval mode."""
    vision, text, _ = layout.load_official_towers(checkpoint)
    return {"vision": vision, "text": text}


_TOWER_CONFIG = "mmembed_tower.json"


def save_encoder(name: str, encoder: torch.nn.Module, out: Path) -> None:
    """One tower (already LoRA-merged) as our own config + fp32 safetensors, for the torch runtime."""
    from safetensors.torch import save_file

    if isinstance(encoder, Eva02VisionTower):
        config: dict[str, Any] = {"vision": encoder.config.to_dict()}
    elif isinstance(encoder, JinaTextTower):
        config = {"text": encoder.encoder.config.to_dict()}
    else:
        raise TypeError(f"encoder {name}: not a JinaCLIP tower but {type(encoder).__name__}")
    out.mkdir(parents=True, exist_ok=True)
    (out / _TOWER_CONFIG).write_text(json.dumps(config, indent=2))
    weights = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_encoder(name: str, folder: Path) -> torch.nn.Module:
    from safetensors.torch import load_file
    from transformers import JinaEmbeddingsV3Config

    config = read_json(folder, _TOWER_CONFIG)
    tower: torch.nn.Module
    if name == "vision":
        tower = Eva02VisionTower(Eva02Config(**config["vision"]))
    else:
        tower = JinaTextTower(JinaEmbeddingsV3Config(**config["text"]))
    tower.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return tower.eval()


FAMILY = ModelFamily(
    name="jinaclip2",
    sizes=tuple(SIZES),
    make_checkpoint=make_checkpoint,
    describe=describe,
    load_encoders=load_encoders,
    save_encoder=save_encoder,
    load_encoder=load_encoder,
)
