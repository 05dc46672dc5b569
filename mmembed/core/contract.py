"""The family contract: what a model family declares, so export, serving, the gate and the client need
no code that names a family.

A family reads a checkpoint into a `ModelSpec`: its encoders (any number, each with named inputs and
their dynamic axes, an output, a precision scope) and its ensembles (which preprocessing steps feed
which encoder, served as NAME_<modality>). It also loads the encoders as torch modules for export and
for the torch runtime. Export builds exactly what the spec declares; nothing else is assumed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mmembed.core.names import (
    ATTENTION_MASK,
    IMAGE_INPUT,
    INPUT_IDS,
    INSTRUCTION_INPUT,
    PIXEL_VALUES,
    POOL_MASK,
    RAW_EMBEDDING,
    TEXT_INPUT,
)
from mmembed.core.preprocessing import ImageSettings, TextSettings
from mmembed.core.types import MODALITIES, Modality

if TYPE_CHECKING:
    import torch


class CheckpointError(ValueError):
    """A checkpoint folder is missing a file or a setting the family needs."""


class ContractError(ValueError):
    """A family's declaration does not hold together (an ensemble feeds inputs its encoder lacks...)."""


# What an encoder input holds, which fixes its dtype and the random values the numeric gates use.
InputKind = Literal["pixels", "token_ids", "attention_mask"]
_DTYPES: dict[str, str] = {"pixels": "float32", "token_ids": "int64", "attention_mask": "int64"}


@dataclass(frozen=True, kw_only=True)
class EncoderInput:
    """One named input of an encoder, per item (the batch axis is always first and always dynamic)."""

    name: str
    kind: InputKind
    item_shape: tuple[int, ...]  # the largest per-item shape
    # Item axes whose size varies per request, by index, with the name the exported graph gives them;
    # inputs that share a name vary together (input_ids and attention_mask: "tokens").
    dynamic_axes: tuple[tuple[int, str], ...] = ()
    high: int = 0  # token ids: exclusive upper bound (the vocabulary size)

    @property
    def dtype(self) -> str:
        return _DTYPES[self.kind]

    @property
    def dims(self) -> tuple[int, ...]:
        """The per-item shape as a Triton config states it: -1 on the varying axes."""
        varying = {axis for axis, _ in self.dynamic_axes}
        return tuple(-1 if axis in varying else size for axis, size in enumerate(self.item_shape))

    def random(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """Inputs of the largest shape for the numeric gates: pixels in [-1, 1], token ids below `high`,
        masks that keep a random prefix (at least one token) of each row."""
        shape = (batch, *self.item_shape)
        if self.kind == "pixels":
            return (rng.random(shape, dtype=np.float32) * 2 - 1).astype(np.float32)
        if self.kind == "token_ids":
            return rng.integers(0, max(self.high, 1), shape, dtype=np.int64)
        lengths = rng.integers(1, self.item_shape[-1] + 1, (batch, 1))
        return (np.arange(self.item_shape[-1])[None, :] < lengths).astype(np.int64).reshape(shape)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> EncoderInput:
        """The inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
        return cls(
            name=fields["name"],
            kind=fields["kind"],
            item_shape=tuple(fields["item_shape"]),
            dynamic_axes=tuple((int(axis), str(name)) for axis, name in fields["dynamic_axes"]),
            high=int(fields["high"]),
        )


def pixel_input(settings: ImageSettings) -> EncoderInput:
    """`pixel_values` [3, height, width], as an `ImageStep` with SETTINGS produces them."""
    return EncoderInput(name=PIXEL_VALUES, kind="pixels", item_shape=(3, settings.height, settings.width))


def text_inputs(settings: TextSettings, vocab_size: int) -> tuple[EncoderInput, ...]:
    """`input_ids` (and `attention_mask`, `pool_mask` where SETTINGS ask for them), as a `TextStep` makes them."""
    dynamic = ((0, "tokens"),) if settings.pad_to_longest else ()
    shape = (settings.max_length,)
    ids = EncoderInput(name=INPUT_IDS, kind="token_ids", item_shape=shape, dynamic_axes=dynamic, high=vocab_size)
    masks = (
        EncoderInput(name=name, kind="attention_mask", item_shape=shape, dynamic_axes=dynamic)
        for name in _masks(settings)
    )
    return (ids, *masks)


def _masks(settings: TextSettings) -> tuple[str, ...]:
    """The masks a text step hands its encoder besides `input_ids`, in this order."""
    wanted = ((ATTENTION_MASK, settings.attention_mask), (POOL_MASK, settings.pool_mask))
    return tuple(name for name, asked in wanted if asked)


def random_inputs(inputs: tuple[EncoderInput, ...], batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {spec.name: spec.random(batch, rng) for spec in inputs}


@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """One encoder: named inputs -> one raw (not yet normalised) embedding [dimension] per item.

    Served as the model NAME_<name>_encoder. `precision_scope` matches the qualified names of the layers
    that may run in reduced precision (the transformer blocks' Linear layers: fp8 in torch, fp16/fp8
    matrix products in TensorRT graphs); everything else (embeddings, norms, pooling) stays wider."""

    name: str
    inputs: tuple[EncoderInput, ...]
    dimension: int
    precision_scope: str
    output: str = RAW_EMBEDDING

    @property
    def takes_pixels(self) -> bool:
        """Image encoders batch fewer items than text-only ones (BatchingOptions)."""
        return any(spec.kind == "pixels" for spec in self.inputs)

    @property
    def varies(self) -> bool:
        return any(spec.dynamic_axes for spec in self.inputs)

    def random_inputs(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        return random_inputs(self.inputs, batch, seed)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> EncoderSpec:
        return cls(
            name=fields["name"],
            inputs=tuple(EncoderInput.from_dict(spec) for spec in fields["inputs"]),
            dimension=int(fields["dimension"]),
            precision_scope=fields["precision_scope"],
            output=fields["output"],
        )


@dataclass(frozen=True, kw_only=True)
class ImageStep:
    """Encoded image bytes (ensemble input IMAGE) -> `pixel_values`, with `core.preprocessing`."""

    settings: ImageSettings

    @property
    def input(self) -> str:
        return IMAGE_INPUT

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return ()

    @property
    def outputs(self) -> tuple[str, ...]:
        return (PIXEL_VALUES,)


@dataclass(frozen=True, kw_only=True)
class TextStep:
    """UTF-8 text (ensemble input TEXT, and the optional INSTRUCTION where the settings take one) ->
    `input_ids` (+ `attention_mask`, `pool_mask`), with `core.preprocessing`."""

    settings: TextSettings

    @property
    def input(self) -> str:
        return TEXT_INPUT

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return (INSTRUCTION_INPUT,) if self.settings.takes_instruction else ()

    @property
    def outputs(self) -> tuple[str, ...]:
        return (INPUT_IDS, *_masks(self.settings))


@dataclass(frozen=True, kw_only=True)
class ImageTextStep:
    """An image with an optional text (ensemble inputs IMAGE, and optional TEXT and INSTRUCTION) ->
    `pixel_values`, and the tokens of `image_prompt` + text, where `image_prompt` holds the image's place
    (MM-Embed: "<image>\n"); a missing text is "". For models that read an image and its text together."""

    image: ImageSettings
    text: TextSettings
    image_prompt: str
    image_token: str  # the token in image_prompt whose position the encoder puts the image at

    @property
    def input(self) -> str:
        return IMAGE_INPUT

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return (TEXT_INPUT, INSTRUCTION_INPUT) if self.text.takes_instruction else (TEXT_INPUT,)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (PIXEL_VALUES, INPUT_IDS, *_masks(self.text))


PreprocessStep = ImageStep | TextStep | ImageTextStep


@dataclass(frozen=True, kw_only=True)
class EnsembleSpec:
    """NAME_<modality>: its preprocessing steps, side by side, feed one encoder; then L2 normalisation.

    The steps' outputs are exactly the encoder's inputs; the ensemble's inputs are the steps' inputs."""

    modality: Modality
    steps: tuple[PreprocessStep, ...]
    encoder: str

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(step.input for step in self.steps)

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        """Inputs a request may leave out (a query's INSTRUCTION: the default task then)."""
        return tuple(name for step in self.steps for name in step.optional_inputs)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything a checkpoint serves: encoders and the ensembles that reach them."""

    encoders: tuple[EncoderSpec, ...]
    ensembles: tuple[EnsembleSpec, ...]
    matryoshka_dimensions: tuple[int, ...] = ()  # leading-slice sizes the model was trained for

    def encoder(self, name: str) -> EncoderSpec:
        for spec in self.encoders:
            if spec.name == name:
                return spec
        raise ContractError(f"no encoder named {name!r}; declared: {', '.join(e.name for e in self.encoders)}")

    def check(self) -> None:
        """Raise ContractError where the declaration does not hold together; export checks first."""
        names = [spec.name for spec in self.encoders]
        if not names or len(set(names)) != len(names):
            raise ContractError(f"encoder names must be present and distinct, got {names}")
        for name in names:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ContractError(f"encoder name {name!r}: lowercase letters, digits and '_' only")
        modalities = [ensemble.modality for ensemble in self.ensembles]
        if not modalities or len(set(modalities)) != len(modalities):
            raise ContractError(f"ensemble modalities must be present and distinct, got {modalities}")
        for ensemble in self.ensembles:
            if ensemble.modality not in MODALITIES:
                raise ContractError(f"modality {ensemble.modality!r}: choose one of {', '.join(MODALITIES)}")
            encoder = self.encoder(ensemble.encoder)
            produced = [output for step in ensemble.steps for output in step.outputs]
            wanted = [spec.name for spec in encoder.inputs]
            if sorted(produced) != sorted(wanted):
                raise ContractError(
                    f"ensemble {ensemble.modality}: its steps produce {produced}, encoder {encoder.name} takes {wanted}"
                )
            if len(set(ensemble.inputs + ensemble.optional_inputs)) != len(ensemble.inputs + ensemble.optional_inputs):
                raise ContractError(f"ensemble {ensemble.modality}: two steps read the same input")
        unused = set(names) - {ensemble.encoder for ensemble in self.ensembles}
        if unused:
            raise ContractError(f"encoders {sorted(unused)} are reached by no ensemble")
        dimensions = {spec.dimension for spec in self.encoders}
        if len(dimensions) != 1:
            raise ContractError(f"all encoders of a model embed into one space, got dimensions {sorted(dimensions)}")

    @property
    def dimension(self) -> int:
        return self.encoders[0].dimension


@dataclass(frozen=True, kw_only=True)
class ModelFamily:
    """One model family: how to make, read and load a checkpoint in Hugging Face layout.

    `describe` reads the checkpoint's config files (never weights) into its ModelSpec. `load_encoders`
    gives each declared encoder as a torch module in fp32 eval mode, called with the encoder's inputs in
    declared order and returning its raw embeddings. `save_encoder` writes one of them alone (config +
    weights) into a folder that `load_encoder` reads: the torch runtime serves from such folders. The
    torch runtime finds these functions inside tritonserver through the module that defines
    `load_encoder`, which must be importable there.
    """

    name: str
    sizes: tuple[str, ...]  # what `make_checkpoint` can fabricate: "tiny" for tests, real sizes
    make_checkpoint: Callable[[str, Path], None]
    describe: Callable[[Path], ModelSpec]
    load_encoders: Callable[[Path], dict[str, torch.nn.Module]]
    save_encoder: Callable[[str, torch.nn.Module, Path], None]
    load_encoder: Callable[[str, Path], torch.nn.Module]
