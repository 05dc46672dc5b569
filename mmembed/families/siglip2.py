"""SigLIP-2 FixRes checkpoints (`model_type: siglip`, loaded by transformers' SiglipModel).

Image: squash resize to the processor's size, rescale, normalise; MAP-head pooled embedding.
Text: lowercased, Gemma tokens with `<eos>` appended, padded to the full length with no attention mask,
pooled from the last position, so the length must always be the model's `max_position_embeddings`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from mmembed.families.base import (
    CheckpointError,
    Modality,
    ModelFamily,
    Towers,
    image_processor_config,
    read_json,
)
from mmembed.preprocessing import ImageSettings, TextSettings

# google/siglip2-so400m-patch16-512 (config.json); everything else is a SiglipConfig default.
_SO400M_512: dict[str, Any] = {
    "text_config": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "projection_size": 1152,
        "vocab_size": 256000,
    },
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 512,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
    },
    "image_size": 512,
    "resample": 2,  # bilinear, as in the google/siglip2-*-512 preprocessor_config.json
}

# Small enough for CI on two cores; same code path, same shapes except sizes.
_TINY: dict[str, Any] = {
    "text_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "projection_size": 64,
        "vocab_size": 1024,
        "max_position_embeddings": 64,
        # Gemma's special ids, so transformers does not warn about CLIP ids outside a small vocabulary.
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    },
    "vision_config": {
        "hidden_size": 64,
        "image_size": 64,
        "patch_size": 16,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
    },
    "image_size": 64,
    "resample": 2,
}

SIZES: dict[str, dict[str, Any]] = {"tiny": _TINY, "so400m-512": _SO400M_512}

_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma ids 0, 1, 2, 3


def make_checkpoint(size: str, out: Path) -> None:
    """Write a random-weight checkpoint of SIZE in Hugging Face layout, with a locally trained tokenizer."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    if size not in SIZES:
        raise CheckpointError(f"unknown siglip2 size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    torch.manual_seed(0)
    config = SiglipConfig(text_config=spec["text_config"], vision_config=spec["vision_config"])
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # 1.1B random values: GPU is quicker
        model = SiglipModel(config)
    image_processor = SiglipImageProcessor(
        size={"height": spec["image_size"], "width": spec["image_size"]},
        resample=spec["resample"],
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=_train_tokenizer(spec))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _train_tokenizer(spec: dict[str, Any]) -> Any:
    """A small BPE shaped like Gemma's tokenizer.json: same special ids, spaces normalised to "▁",
    byte fallback for characters outside the vocabulary, and `<eos>` appended to every text."""
    import json

    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import GemmaTokenizer

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    # Words are learned separately, then the pre-tokenizer is dropped, as in Gemma's file.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("▁[^▁]*"), behavior="isolated")
    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    vocab_size = min(spec["text_config"]["vocab_size"], 4096) - len(byte_tokens)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIAL_TOKENS)
    tokenizer.train_from_iterator(_training_corpus(), trainer)
    layout = json.loads(tokenizer.to_str())
    vocab = layout["model"]["vocab"]
    for token in byte_tokens:
        vocab.setdefault(token, len(vocab))
    layout["pre_tokenizer"] = None
    tokenizer = Tokenizer.from_str(json.dumps(layout))
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    return GemmaTokenizer(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        model_input_names=["input_ids"],
        padding_side="right",
    )


_WORDS = [
    "a",
    "an",
    "the",
    "this",
    "that",
    "of",
    "on",
    "in",
    "under",
    "with",
    "without",
    "and",
    "or",
    "photo",
    "picture",
    "image",
    "drawing",
    "painting",
    "sketch",
    "cat",
    "dog",
    "bird",
    "horse",
    "cow",
    "sheep",
    "fish",
    "car",
    "truck",
    "bus",
    "bicycle",
    "train",
    "plane",
    "boat",
    "house",
    "tree",
    "flower",
    "street",
    "city",
    "beach",
    "mountain",
    "river",
    "sky",
    "cloud",
    "sun",
    "moon",
    "night",
    "day",
    "red",
    "green",
    "blue",
    "yellow",
    "black",
    "white",
    "orange",
    "purple",
    "small",
    "large",
    "old",
    "young",
    "happy",
    "running",
    "sitting",
    "standing",
    "sleeping",
    "eating",
    "two",
    "three",
    "many",
    "people",
    "man",
    "woman",
    "child",
    "person",
    "group",
    "table",
    "chair",
    "bed",
    "window",
    "door",
    "kitchen",
    "food",
    "pizza",
    "cake",
    "coffee",
    "cup",
    "book",
    "phone",
    "computer",
    "screen",
    "sign",
    "text",
    "logo",
    "product",
    "shoe",
    "shirt",
    "dress",
    "bag",
    "watch",
    "close-up",
    "view",
    "of",
    "from",
    "above",
]


def _training_corpus() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(3, 12))) for _ in range(4000)]


def image_settings(checkpoint: Path) -> ImageSettings:
    """Image settings read from the checkpoint's processor config, never from constants."""
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
        )
    except KeyError as e:
        raise CheckpointError(f"the image processor config of {checkpoint} lacks {e}") from None


def text_settings(checkpoint: Path) -> TextSettings:
    """Text settings: full-length padding to the model's position count with the tokenizer's pad token."""
    from tokenizers import Tokenizer

    config = read_json(checkpoint, "config.json")
    tokenizer_config = read_json(checkpoint, "tokenizer_config.json")
    max_length = int(config.get("text_config", {}).get("max_position_embeddings", 64))
    pad_token = tokenizer_config.get("pad_token", "<pad>")
    if isinstance(pad_token, dict):  # older tokenizer configs store AddedToken dicts
        pad_token = pad_token["content"]
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise CheckpointError(f"pad token {pad_token!r} is not in {checkpoint / 'tokenizer.json'}")
    return TextSettings(max_length=max_length, pad_token_id=pad_id, lowercase=True)


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
_TOWER_PREFIX: dict[str, str] = {"image": "vision_model.", "text": "text_model."}


def save_tower(towers: Towers, modality: Modality, out: Path) -> None:
    """Write one of TOWERS (from `load_towers`) into OUT: config.json + model.safetensors, fp32."""
    from safetensors.torch import save_file

    model: Any = towers.vision.model  # the SiglipModel that both towers wrap
    prefix = _TOWER_PREFIX[modality]
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(prefix)}
    out.mkdir(parents=True, exist_ok=True)
    config: Any = model.config.vision_config if modality == "image" else model.config.text_config
    config.save_pretrained(out)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_tower(folder: Path, modality: Modality) -> torch.nn.Module:
    """A tower folder written by `save_tower`, in fp32 eval mode with SDPA attention."""
    from transformers import SiglipTextModel, SiglipVisionModel

    _quiet()
    model_class = SiglipVisionModel if modality == "image" else SiglipTextModel
    model = model_class.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32)
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


def load_towers(checkpoint: Path) -> Towers:
    """The checkpoint's towers in fp32 eval mode, with SDPA attention (exports as plain ONNX ops)."""
    from transformers import SiglipModel

    _quiet()
    model = SiglipModel.from_pretrained(checkpoint, attn_implementation="sdpa", dtype=torch.float32).eval()
    return Towers(
        vision=_VisionTower(model).eval(),
        text=_TextTower(model).eval(),
        dimension=int(model.config.vision_config.hidden_size),
        vocab_size=int(model.config.text_config.vocab_size),
    )


FAMILY = ModelFamily(
    name="siglip2",
    sizes=tuple(SIZES),
    make_checkpoint=make_checkpoint,
    image_settings=image_settings,
    text_settings=text_settings,
    load_towers=load_towers,
    save_tower=save_tower,
    load_tower=load_tower,
    fp8_scope=r"\.encoder\.layers\.\d+\.",
)
