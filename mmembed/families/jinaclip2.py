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
import random
from pathlib import Path
from typing import Any

import torch

from mmembed.families import jinaclip2_layout as layout
from mmembed.families.base import CheckpointError, Modality, ModelFamily, Towers, read_json
from mmembed.families.eva02 import Eva02Config, Eva02VisionTower
from mmembed.families.jina_text import JinaTextTower, text_config
from mmembed.preprocessing import ImageSettings, TextSettings

MAX_TEXT_TOKENS = 512  # the official encode_text truncation; the model itself accepts up to 8192
_OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # written into new checkpoints' processor config only
_OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


def _config(vision: dict[str, Any], text: dict[str, Any], dimensions: list[int]) -> dict[str, Any]:
    """config.json in the official layout (JinaCLIPConfig, transformers 4.47 era)."""
    return {
        "architectures": ["JinaCLIPModel"],
        "model_type": "jina_clip",
        "add_projections": False,
        "projection_dim": vision["width"],
        "logit_scale_init_value": 2.6592,
        "matryoshka_dimensions": dimensions,
        "truncate_dim": None,
        "torch_dtype": "float32",
        "vision_config": {
            "embed_dim": vision["width"],
            "patch_size": 14,
            "head_width": 64,
            "mlp_ratio": 2.6667,
            "qkv_bias": True,
            "naive_swiglu": True,
            "subln": True,
            "rope_embeddings": True,
            "pt_hw_seq_len": 16,
            "intp_freq": True,
            "x_attention": True,
            "post_norm": False,
            "ls_init_value": None,
            "proj_type": None,
            "fused_layer_norm": False,
            "patch_dropout": 0.1,
            "drop_path_rate": 0.0,
            **vision,
        },
        "text_config": {
            "embed_dim": text["hidden_size"],
            "hf_model_name_or_path": "jinaai/jina-embeddings-v3",
            "default_instruction_task": None,
            "default_lora_task": "retrieval.query",
            "pooler_type": "mean_pooler",
            "proj_type": None,
            "proj_bias": False,
            # Only what differs from the jina-embeddings-v3 base (layout.JINA_EMBEDDINGS_V3_BASE), as in
            # the official file: the sizes (for tiny), the adapter, the instruction.
            "hf_model_config_kwargs": {
                "lora_adaptations": ["retrieval.query"],
                "lora_rank": 4,
                "lora_alpha": 4,
                "lora_dropout_p": 0.0,
                "task_instructions": {"retrieval.query": layout.DEFAULT_QUERY_INSTRUCTION},
                "load_trained_adapters": False,
                "use_flash_attn": True,
                **text,
            },
        },
    }


SIZES: dict[str, dict[str, Any]] = {
    "tiny": _config(
        {"image_size": 56, "width": 64, "layers": 2, "head_width": 16},
        {
            "vocab_size": 4096,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "max_position_embeddings": 66,
        },
        [16, 32, 64],
    ),
    "full": _config(
        {"image_size": 512, "width": 1024, "layers": 24, "head_width": 64},
        {
            "vocab_size": 250002,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "max_position_embeddings": 8194,
        },
        [32, 64, 128, 256, 512, 768, 1024],
    ),
}


def make_checkpoint(size: str, out: Path) -> None:
    """Random weights in the official checkpoint layout (LoRA factors included), the official processor
    config, and a small multilingual XLM-RoBERTa-style tokenizer trained here."""
    from safetensors.torch import save_file

    if size not in SIZES:
        raise CheckpointError(f"unknown jinaclip2 size {size!r}; choose one of {', '.join(SIZES)}")
    config = json.loads(json.dumps(SIZES[size]))
    torch.manual_seed(0)
    vision = Eva02VisionTower(layout.vision_config(config))
    for parameter in (vision.class_token, vision.position_embedding):
        torch.nn.init.trunc_normal_(parameter, std=0.02)
    text = JinaTextTower(text_config(layout.text_settings_of(config)))
    state = layout.official_state_dict(vision, text, adapters=1, rank=4, seed=1)
    if size == "full":  # as published: bf16 weights, 1.7 GB instead of 3.5
        config["torch_dtype"] = "bfloat16"
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    processor = {
        "image_processor_type": "JinaCLIPImageProcessor",
        "processor_class": "JinaCLIPProcessor",
        "size": config["vision_config"]["image_size"],
        "resize_mode": "shortest",
        "interpolation": "bicubic",
        "fill_color": 0,
        "max_size": None,
        "image_mean": _OPENAI_CLIP_MEAN,
        "image_std": _OPENAI_CLIP_STD,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    _train_tokenizer(config["text_config"]["hf_model_config_kwargs"]["vocab_size"]).save_pretrained(out)


def _train_tokenizer(vocab_size: int) -> Any:
    """A Unigram SentencePiece-style tokenizer laid out like XLM-RoBERTa's: <s>=0, <pad>=1, </s>=2,
    <unk>=3, "▁" word marks, NFKC, `<s> $A </s>`. Trained on a small corpus in several scripts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=min(vocab_size - 1, 3000),
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=sorted({c for word in _ALL_WORDS for c in word}),
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizer(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=MAX_TEXT_TOKENS,
    )


_WORDS_BY_LANGUAGE = {
    "en": "a photo of the cat dog red car on street in city with people at night small house blue sky",
    "de": "ein Foto der Katze Hund rotes Auto auf Straße in Stadt mit Menschen bei Nacht kleines Haus Himmel",
    "fr": "une photo du chat chien voiture rouge dans la rue ville avec des gens la nuit petite maison ciel",
    "es": "una foto del gato perro coche rojo en la calle ciudad con gente de noche casa pequeña cielo azul",
    "ru": "фото кошки собаки красная машина на улице в городе с людьми ночью маленький дом синее небо",
    "zh": "一 张 猫 的 照片 狗 红色 汽车 在 街道 城市 里 人们 夜晚 小 房子 蓝色 天空",
    "ja": "猫 の 写真 犬 赤い 車 通り 街 人々 夜 小さな 家 青い 空 です",
    "ar": "صورة قطة كلب سيارة حمراء في الشارع المدينة مع الناس في الليل منزل صغير سماء زرقاء",
    "hi": "एक बिल्ली की तस्वीर कुत्ता लाल गाड़ी सड़क पर शहर में लोग रात छोटा घर नीला आसमान",
    "emoji": "🐱 🐶 🚗 🏙️ 🌙 🏠 ☀️ 😀 ❤️ 👍 🎉 🍕",
}
_ALL_WORDS = [word for words in _WORDS_BY_LANGUAGE.values() for word in words.split()]


def _training_corpus() -> list[str]:
    rng = random.Random(0)
    corpus = []
    for words in _WORDS_BY_LANGUAGE.values():
        vocabulary = words.split()
        corpus += [" ".join(rng.choices(vocabulary, k=rng.randint(3, 12))) for _ in range(600)]
    return corpus


def image_settings(checkpoint: Path) -> ImageSettings:
    """Image settings from preprocessor_config.json: `size`, `resize_mode`, `interpolation`, mean/std.

    The official processor's ToTensor always scales by 1/255, so the rescale factor is that, not a setting.
    """
    config = read_json(checkpoint, "preprocessor_config.json")
    try:
        size, mode, interpolation = int(config["size"]), config.get("resize_mode", "shortest"), config["interpolation"]
        mean, std = tuple(config["image_mean"]), tuple(config["image_std"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{checkpoint / 'preprocessor_config.json'}: bad or missing setting {e}") from None
    if mode not in ("shortest", "squash"):
        raise CheckpointError(f"resize_mode {mode!r} is not supported (shortest or squash)")
    if interpolation not in _PIL_FILTERS:
        raise CheckpointError(f"interpolation {interpolation!r} is not one of {', '.join(_PIL_FILTERS)}")
    return ImageSettings(
        height=size,
        width=size,
        shortest_edge=size if mode == "shortest" else None,
        resample=_PIL_FILTERS[interpolation],
        rescale_factor=1 / 255,
        image_mean=mean,
        image_std=std,
    )


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
