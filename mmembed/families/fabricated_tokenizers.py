"""Small tokenizers trained here, laid out like the official ones, for the random-weight checkpoints the
tests and benchmarks build (there is no model hub to download the real ones from).

Each keeps the official tokenizer config's added tokens at their official ids and fills the vocabulary
to the official size with placeholders, so token ids, special tokens and padding behave as with the
real file. One module for every family: the next family reuses a layout or adds one here.
"""

from __future__ import annotations

import json
import random
from typing import Any

from mmembed.families.official import split_added_tokens

_MAX_TRAINED_TOKENS = 4096  # a 256,000-token vocabulary is filled with placeholders past this
_BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]
_MAX_TRAINED_PIECES = 3000  # a 250,002-piece vocabulary is filled with placeholders past this


def gemma_like_tokenizer(vocab_size: int, added_tokens: dict[str, dict[str, Any]]) -> Any:
    """A BPE shaped like Gemma's tokenizer.json: ADDED_TOKENS (a tokenizer config's `added_tokens_decoder`)
    at their ids, spaces normalised to "▁", byte fallback for characters outside the vocabulary, `<eos>`
    appended to every text, and VOCAB_SIZE ids in all."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    leading, trailing, entries = split_added_tokens(added_tokens)
    room = min(vocab_size - len(trailing), _MAX_TRAINED_TOKENS) - len(_BYTE_TOKENS)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    # Words are learned separately, then the pre-tokenizer is dropped, as in Gemma's file.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("▁[^▁]*"), behavior="isolated")
    tokenizer.train_from_iterator(_english_corpus(), trainers.BpeTrainer(vocab_size=room, special_tokens=leading))
    layout = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = layout["model"]["vocab"]
    for token in _BYTE_TOKENS:
        vocab.setdefault(token, len(vocab))
    for index in range(len(vocab), vocab_size):  # ids no trained token holds: placeholders, then the tail
        vocab[trailing[index]["content"] if index in trailing else f"<mmembed_unused_{index}>"] = index
    layout["pre_tokenizer"] = None
    layout["added_tokens"] = entries
    tokenizer = Tokenizer.from_str(json.dumps(layout))
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    eos = tokenizer.token_to_id("<eos>")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", eos)])
    return tokenizer


def mistral_like_tokenizer(vocab_size: int, added_tokens: dict[str, dict[str, Any]], *, add_eos: bool = False) -> Any:
    """A BPE shaped like Mistral-7B's tokenizer.json as transformers builds it for `LlamaTokenizer`:
    ADDED_TOKENS (<unk>=0, <s>=1, </s>=2, and LLaVA's <image>, <pad> after the vocabulary) at their ids,
    "▁" put before the text and for every space (one piece, not split into words), byte fallback, `<s>`
    put in front and, with ADD_EOS (MM-Embed's processor), `</s>` after; VOCAB_SIZE ids in all."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    leading, trailing, entries = split_added_tokens(added_tokens)
    room = min(vocab_size - len(trailing), _MAX_TRAINED_TOKENS) - len(_BYTE_TOKENS)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    # Words are learned separately, then only the metaspace is kept, as in the official file.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([metaspace, pre_tokenizers.Split(Regex("▁[^▁]*"), "isolated")])
    trainer = trainers.BpeTrainer(vocab_size=room, special_tokens=leading)
    tokenizer.train_from_iterator(_english_corpus() + _instruction_corpus(), trainer)
    layout = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = layout["model"]["vocab"]
    for token in _BYTE_TOKENS:
        vocab.setdefault(token, len(vocab))
    for index in range(len(vocab), vocab_size):
        vocab[trailing[index]["content"] if index in trailing else f"<mmembed_unused_{index}>"] = index
    layout["added_tokens"] = entries
    tokenizer = Tokenizer.from_str(json.dumps(layout))
    tokenizer.pre_tokenizer = metaspace
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    template = "<s> $A </s>" if add_eos else "<s> $A"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<s>", bos), ("</s>", eos)] if add_eos else [("<s>", bos)]
    )
    return tokenizer


_ENGLISH_WORDS = (
    "a an the this that of on in under with without and or photo picture image drawing painting sketch cat dog "
    "bird horse cow sheep fish car truck bus bicycle train plane boat house tree flower street city beach "
    "mountain river sky cloud sun moon night day red green blue yellow black white orange purple small large old "
    "young happy running sitting standing sleeping eating two three many people man woman child person group "
    "table chair bed window door kitchen food pizza cake coffee cup book phone computer screen sign text logo "
    "product shoe shirt dress bag watch close-up view of from above"
)


def _english_corpus() -> list[str]:
    rng, words = random.Random(0), _ENGLISH_WORDS.split()
    return [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(4000)]


_INSTRUCTIONS = (
    "Given a question, retrieve passages that answer the question",
    "Given a web search query, retrieve relevant passages that answer the query",
    "Retrieve images that match the description",
    "Given a claim, find documents that refute the claim",
)


def _instruction_corpus() -> list[str]:
    """Queries in NV-Embed's instruction template, so its words and punctuation are learned too."""
    rng, words = random.Random(1), _ENGLISH_WORDS.split()
    return [
        f"Instruct: {rng.choice(_INSTRUCTIONS)}\nQuery: {' '.join(rng.choices(words, k=rng.randint(2, 8)))}?"
        for _ in range(1000)
    ]


def xlm_roberta_like_tokenizer(vocab_size: int, added_tokens: dict[str, dict[str, Any]]) -> Any:
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
    tokenizer.train_from_iterator(_multilingual_corpus(), trainer)
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


def _multilingual_corpus() -> list[str]:
    rng = random.Random(0)
    corpus = []
    for words in _WORDS_BY_LANGUAGE.values():
        vocabulary = words.split()
        corpus += [" ".join(rng.choices(vocabulary, k=rng.randint(3, 12))) for _ in range(600)]
    return corpus
