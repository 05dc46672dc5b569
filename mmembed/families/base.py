"""What every model family provides, so export, serving and tests need no family-specific code."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mmembed.preprocessing import ImageSettings, TextSettings


@dataclass(frozen=True, kw_only=True)
class Towers:
    """The checkpoint's two encoders as plain modules: pixels -> embedding and token ids -> embedding.

    Their outputs are the model's raw (not yet L2-normalised) embeddings; normalisation is its own step.
    """

    vision: torch.nn.Module
    text: torch.nn.Module
    dimension: int
    vocab_size: int


Modality = Literal["image", "text"]


@dataclass(frozen=True, kw_only=True)
class ModelFamily:
    """One model family: how to make, read and split a checkpoint in Hugging Face layout.

    `save_tower` writes one tower alone (its config and weights) into a folder that `load_tower` reads:
    the torch runtime serves from such folders, so a model repository needs no copy of the whole checkpoint.
    `fp8_scope` matches the qualified names of the Linear layers that may run in fp8 (the transformer
    blocks); everything else (patch embedding, norms, pooling heads) stays in the higher precision.
    `query_instruction` is the text a retrieval query gets in front (None: queries are plain texts);
    `matryoshka_dimensions` the leading-slice sizes the model was trained to support (empty: none).
    """

    name: str
    sizes: tuple[str, ...]
    make_checkpoint: Callable[[str, Path], None]
    image_settings: Callable[[Path], ImageSettings]
    text_settings: Callable[[Path], TextSettings]
    load_towers: Callable[[Path], Towers]
    save_tower: Callable[[Towers, Modality, Path], None]
    load_tower: Callable[[Path, Modality], torch.nn.Module]
    fp8_scope: str
    query_instruction: Callable[[Path], str | None] = lambda checkpoint: None
    matryoshka_dimensions: Callable[[Path], tuple[int, ...]] = lambda checkpoint: ()


@dataclass(frozen=True, kw_only=True)
class TowerSpec:
    """The contract of one tower: tensor names and the per-item input shape."""

    input_name: str
    input_dtype: torch.dtype
    item_shape: tuple[int, ...]  # input shape without the batch axis
    output_name: str
    high: int = 0  # exclusive upper bound of integer inputs (token ids); unused for float inputs
    # Token ids whose length varies per request up to item_shape[0] (TextSettings.pad_to_longest).
    variable_length: bool = False

    @property
    def dims(self) -> tuple[int, ...]:
        """The per-item shape as a Triton config states it: -1 for the varying token axis."""
        return (-1,) if self.variable_length else self.item_shape

    @classmethod
    def from_config(
        cls, *, input_name: str, output_name: str, modality: str, dims: tuple[int, ...], high: int, max_length: int
    ) -> TowerSpec:
        """The spec an encoder's Triton config describes; dims (-1,) are token ids up to MAX_LENGTH long."""
        variable = tuple(dims) == (-1,)
        return cls(
            input_name=input_name,
            input_dtype=torch.float32 if modality == "image" else torch.int64,
            item_shape=(max_length,) if variable else tuple(dims),
            output_name=output_name,
            high=high,
            variable_length=variable,
        )

    def random_input(self, batch: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, *self.item_shape)
        if self.input_dtype.is_floating_point:
            return torch.rand(shape, generator=generator, dtype=self.input_dtype) * 2 - 1
        return torch.randint(0, self.high, shape, generator=generator, dtype=self.input_dtype)


class CheckpointError(ValueError):
    """A checkpoint folder is missing a file or a setting the family needs."""


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
