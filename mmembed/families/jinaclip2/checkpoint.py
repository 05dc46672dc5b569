"""Random-weight JinaCLIP-v2 checkpoints around the official jinaai/jina-clip-v2 files.

`full` writes the official config, processor config, tokenizer config and special tokens as they are;
`tiny` writes the same files with only the architecture numbers shrunk (the text sizes go into
`hf_model_config_kwargs`, where the official file leaves the jina-embeddings-v3 base's). The weights are
random, in the official state-dict layout with the LoRA factors, in the dtype the config names; the
tokenizer is a small multilingual Unigram trained here, laid out like XLM-RoBERTa's.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from mmembed.core.contract import CheckpointError
from mmembed.families.jinaclip2 import layout
from mmembed.families.jinaclip2.eva02 import Eva02VisionTower
from mmembed.families.jinaclip2.text_tower import JinaTextTower, text_config
from mmembed.families.official import (
    official_bytes,
    official_json,
    overlay,
    shrink_token_ids,
    split_added_tokens,
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
_MAX_TRAINED_PIECES = 3000  # a 250,002-piece vocabulary is filled with placeholders past this


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
    train_tokenizer(int(text_settings["vocab_size"]), added).save(str(out / "tokenizer.json"))


def train_tokenizer(vocab_size: int, added_tokens: dict[str, dict[str, Any]]) -> Any:
    """A Unigram SentencePiece-style tokenizer laid out like XLM-RoBERTa's: ADDED_TOKENS (a tokenizer
    config's `added_tokens_decoder`: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last) at their ids, "▁" word
    marks, `<s> $A </s>`, VOCAB_SIZE ids in all. Trained on a small corpus in several scripts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    leading, trailing, entries = split_added_tokens(added_tokens)
    tokenizer = Tokenizer(models.Unigram())
    # Runs of whitespace split words and "▁" marks their starts: the pipeline transformers' own
    # XLMRobertaTokenizer builds around a vocabulary, so the tests' reference tokenizes as this file does.
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), metaspace])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=min(vocab_size - len(trailing), _MAX_TRAINED_PIECES),
        special_tokens=leading,
        unk_token="<unk>",
        initial_alphabet=sorted({c for word in _ALL_WORDS for c in word}),
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer)
    layout_json = json.loads(tokenizer.to_str())
    pieces: list[list[Any]] = layout_json["model"]["vocab"]
    lowest = min(score for _, score in pieces)
    for index in range(len(pieces), vocab_size):  # ids no trained piece holds: placeholders, then <mask>
        piece = [trailing[index]["content"], 0.0] if index in trailing else [f"<mmembed_unused_{index}>", lowest - 1]
        pieces.append(piece)
    layout_json["added_tokens"] = entries
    tokenizer = Tokenizer.from_str(json.dumps(layout_json))
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tokenizer


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
