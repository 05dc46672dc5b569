"""The published checkpoints' own small files (config, processor, tokenizer config, special tokens), kept
in `official/` byte for byte, and the same files shrunk for tiny test checkpoints.

`mmembed checkpoint` writes these files as they are for the real sizes, and for `tiny` the same files
with only the architecture numbers changed, so every checkpoint the tests build carries the official
keys and spellings: a loader that only read what our own maker wrote would go unnoticed otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OFFICIAL = Path(__file__).parent / "official"


def official_bytes(model_id: str, name: str) -> bytes:
    """File NAME of hub model MODEL_ID (e.g. "google/siglip2-so400m-patch16-512"), as the hub serves it."""
    return (OFFICIAL / model_id.replace("/", "__") / name).read_bytes()


def official_json(model_id: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(official_bytes(model_id, name))
    return result


def overlay(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with CHANGES merged in, nested dictionaries key by key; BASE itself is left as it is."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def shrink_token_ids(added_tokens: dict[str, Any], full_vocab: int, vocab: int) -> dict[str, Any]:
    """A tokenizer config's `added_tokens_decoder` for a vocabulary of VOCAB ids instead of FULL_VOCAB:
    tokens in the lower half keep their ids, tokens in the upper half keep their distance from the end
    (XLM-RoBERTa's `<mask>` stays last, Gemma's tail of whitespace tokens stays at the tail)."""
    shrunk = {}
    for key, token in added_tokens.items():
        index = int(key)
        shrunk[str(index if index < vocab // 2 else index - full_vocab + vocab)] = token
    return shrunk


def split_added_tokens(
    added_tokens: dict[str, Any],
) -> tuple[list[str], dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """A tokenizer config's `added_tokens_decoder`, for building a tokenizer.json that agrees with it:
    the contents of ids 0, 1, 2, ... up to the first gap (a trainer's special tokens), the tokens after
    that by id (placed into the vocabulary at those ids), and tokenizer.json's `added_tokens` entries."""
    by_id = {int(key): token for key, token in added_tokens.items()}
    leading: list[str] = []
    while len(leading) in by_id:
        leading.append(by_id[len(leading)]["content"])
    trailing = {index: token for index, token in by_id.items() if index >= len(leading)}
    entries = [{"id": index, **token} for index, token in sorted(by_id.items())]
    return leading, trailing, entries
