"""The shape CLIP-like families share: a vision tower and a text tower embedding into one space."""

from __future__ import annotations

from mmembed.core.contract import (
    EncoderSpec,
    EnsembleSpec,
    ImageStep,
    ModelSpec,
    TextStep,
    pixel_input,
    text_inputs,
)
from mmembed.core.preprocessing import ImageSettings, TextSettings


def two_towers(
    *,
    image: ImageSettings,
    text: TextSettings,
    vocab_size: int,
    dimension: int,
    precision_scope: str,
    query: TextSettings | None = None,
    matryoshka_dimensions: tuple[int, ...] = (),
) -> ModelSpec:
    """NAME_image -> encoder `vision`, NAME_text -> encoder `text`, and NAME_query -> `text` with QUERY's
    settings (an instruction in front) where queries differ from documents."""
    ensembles = [
        EnsembleSpec(modality="image", steps=(ImageStep(settings=image),), encoder="vision"),
        EnsembleSpec(modality="text", steps=(TextStep(settings=text),), encoder="text"),
    ]
    if query is not None:
        ensembles.append(EnsembleSpec(modality="query", steps=(TextStep(settings=query),), encoder="text"))
    return ModelSpec(
        encoders=(
            EncoderSpec(
                name="vision", inputs=(pixel_input(image),), dimension=dimension, precision_scope=precision_scope
            ),
            EncoderSpec(
                name="text", inputs=text_inputs(text, vocab_size), dimension=dimension, precision_scope=precision_scope
            ),
        ),
        ensembles=tuple(ensembles),
        matryoshka_dimensions=matryoshka_dimensions,
    )
