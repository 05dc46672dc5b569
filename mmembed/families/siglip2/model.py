"""SigLIP-2 FixRes checkpoints (`model_type: siglip`, loaded by transformers' SiglipModel).

Image: squash resize to the processor's size, rescale, normalise; MAP-head pooled embedding.
Text: lowercased, Gemma tokens with `<eos>` appended, padded to the full length with no attention mask,
pooled from the last position, so the length must always be the model's `max_position_embeddings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError, ModelFamily, ModelSpec
from mmembed.core.preprocessing import TRANSFORMERS_DECODE, ImageSettings, TextSettings
from mmembed.families.checkpoint_files import image_processor_config, pad_token_id, read_json
from mmembed.families.siglip2.checkpoint import SIZES, make_checkpoint
from mmembed.families.siglip2.fused_attention import fuse_attention
from mmembed.families.two_towers import two_towers

# The transformer blocks' Linear layers: what may run in fp8 (patch embedding, norms, heads stay wider).
PRECISION_SCOPE = r"\.encoder\.layers\.\d+\."


def image_settings(checkpoint: Path) -> ImageSettings:
    """Image settings read from the checkpoint's processor config, never from constants; decoded as
    transformers' `load_image` does (EXIF orientation applied, then Pillow's convert("RGB"))."""
    config = image_processor_config(checkpoint)
    size = config.get("size") or {}
    if "height" not in size or "width" not in size:
        raise CheckpointError(f"SigLIP image processor size must give height and width, got {size!r}")
    normalise = config.get("do_normalize", True)
    rescale = config.get("do_rescale", True)
    if not config.get("do_resize", True):
        raise CheckpointError("SigLIP needs a fixed input size, but the processor config says do_resize: false")
    try:
        return ImageSettings(
            height=int(size["height"]),
            width=int(size["width"]),
            resample=int(config["resample"]),
            rescale_factor=float(config["rescale_factor"]) if rescale else None,
            image_mean=tuple(config["image_mean"]) if normalise else None,
            image_std=tuple(config["image_std"]) if normalise else None,
            decode=TRANSFORMERS_DECODE,
        )
    except KeyError as e:
        raise CheckpointError(f"the image processor config of {checkpoint} lacks {e}") from None


def text_settings(checkpoint: Path) -> TextSettings:
    """Text settings: full-length padding to the model's position count (the config's, or transformers'
    default for a config that leaves it out, as the official ones do) with the tokenizer's pad token."""
    config = _config(checkpoint)
    tokenizer_config = read_json(checkpoint, "tokenizer_config.json")
    # The model was trained on lowercased text; its GemmaTokenizer does not lowercase, whatever
    # `do_lower_case` says, so the preprocessing does.
    lowercase = bool(tokenizer_config.get("do_lower_case", True))
    return TextSettings(
        max_length=int(config.text_config.max_position_embeddings),
        pad_token_id=pad_token_id(checkpoint),
        lowercase=lowercase,
    )


def _config(checkpoint: Path) -> Any:
    """The checkpoint's config with transformers' defaults for the keys it leaves out."""
    from transformers import SiglipConfig

    return SiglipConfig.from_dict(read_json(checkpoint, "config.json"))


def describe(checkpoint: Path) -> ModelSpec:
    """Two towers into one space: NAME_image -> vision, NAME_text -> text."""
    config = _config(checkpoint)
    return two_towers(
        image=image_settings(checkpoint),
        text=text_settings(checkpoint),
        vocab_size=int(config.text_config.vocab_size),
        dimension=int(config.vision_config.hidden_size),
        precision_scope=PRECISION_SCOPE,
    )


def _quiet() -> None:
    """No weight-loading progress bars: one per tower load would flood logs and test output."""
    from transformers.utils import logging

    logging.disable_progress_bar()


class _PooledOutput(torch.nn.Module):
    """A SiglipVisionModel or SiglipTextModel as a plain tensor -> embedding module."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.model(inputs).pooler_output
        return output


# Each tower's weights keep the key prefix they have in SiglipModel, which is also the prefix of
# SiglipVisionModel / SiglipTextModel, so a tower folder loads with plain `from_pretrained`.
_TOWER_PREFIX: dict[str, str] = {"vision": "vision_model.", "text": "text_model."}


def save_encoder(name: str, encoder: torch.nn.Module, out: Path) -> None:
    """Write encoder NAME (from `load_encoders`) alone into OUT: config.json + model.safetensors, fp32."""
    from safetensors.torch import save_file

    model: Any = encoder.model  # the SiglipModel that both towers wrap
    prefix = _TOWER_PREFIX[name]
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(prefix)}
    out.mkdir(parents=True, exist_ok=True)
    config: Any = model.config.vision_config if name == "vision" else model.config.text_config
    config.save_pretrained(out)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_encoder(name: str, folder: Path) -> torch.nn.Module:
    """An encoder folder written by `save_encoder`, in fp32 eval mode, attention with one QKV projection."""
    from transformers import SiglipTextModel, SiglipVisionModel

    _quiet()
    model_class = SiglipVisionModel if name == "vision" else SiglipTextModel
    model = model_class.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32)
    fuse_attention(model)
    return _PooledOutput(model).eval()


class _VisionTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.model.get_image_features(pixel_values=pixel_values).pooler_output
        return output


class _TextTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.model.get_text_features(input_ids=input_ids).pooler_output
        return output


def load_encoders(checkpoint: Path) -> dict[str, torch.nn.Module]:
    """The checkpoint's towers in fp32 eval mode, with SDPA attention (exports as plain ONNX ops)."""
    from transformers import SiglipModel

    _quiet()
    model = SiglipModel.from_pretrained(checkpoint, attn_implementation="sdpa", dtype=torch.float32).eval()
    return {"vision": _VisionTower(model).eval(), "text": _TextTower(model).eval()}


FAMILY = ModelFamily(
    name="siglip2",
    sizes=tuple(SIZES),
    make_checkpoint=make_checkpoint,
    describe=describe,
    load_encoders=load_encoders,
    save_encoder=save_encoder,
    load_encoder=load_encoder,
)
