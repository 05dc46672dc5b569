"""Reading a checkpoint's small config files, with errors that say which file and which key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmembed.core.contract import CheckpointError


def read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {name}: is it a checkpoint folder in Hugging Face layout?")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def image_processor_config(folder: Path) -> dict[str, Any]:
    """The image processor settings, from either checkpoint layout.

    Hub checkpoints saved by transformers 4.x carry `preprocessor_config.json`; transformers 5.x writes
    them nested under `image_processor` in `processor_config.json`.
    """
    if (folder / "preprocessor_config.json").is_file():
        return read_json(folder, "preprocessor_config.json")
    processor = read_json(folder, "processor_config.json")
    if "image_processor" not in processor:
        raise CheckpointError(f"{folder / 'processor_config.json'} has no image_processor section")
    nested: dict[str, Any] = processor["image_processor"]
    return nested


def pad_token_id(folder: Path, default: str = "<pad>") -> int:
    """The id of the tokenizer config's pad token in tokenizer.json."""
    from tokenizers import Tokenizer

    pad_token = read_json(folder, "tokenizer_config.json").get("pad_token", default)
    if isinstance(pad_token, dict):  # older tokenizer configs store AddedToken dicts
        pad_token = pad_token["content"]
    pad_id = Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id(pad_token)
    if pad_id is None:
        raise CheckpointError(f"pad token {pad_token!r} is not in {folder / 'tokenizer.json'}")
    return int(pad_id)
