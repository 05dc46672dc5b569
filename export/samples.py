"""The real items export gates with: photo-like JPEGs and captions, preprocessed as the server does.

They join the random inputs of every encoder's numeric gate (random pixels alone miss what real images
do to activations) and become each ensemble's load-gate reference.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mmembed.core.contract import EnsembleSpec, ImageStep, ImageTextStep, TextStep
from mmembed.core.names import IMAGE_INPUT, PIXEL_VALUES, TEXT_INPUT
from mmembed.core.preprocessing import TextTokenizer, image_pixels
from mmembed.core.sample_images import CAPTIONS, synthetic_jpeg

PHOTOS = 4  # per gate; at 640x480, decoding and resizing them is quick even for 512 px models


def sample_items(ensemble: EnsembleSpec, first_seed: int = 0) -> dict[str, list[bytes]]:
    """Items for each of ENSEMBLE's inputs, as a client sends them; as many for each input."""
    photos = [synthetic_jpeg(640, 480, seed=seed) for seed in range(first_seed, first_seed + PHOTOS)]
    available = {IMAGE_INPUT: photos, TEXT_INPUT: [caption.encode() for caption in CAPTIONS]}
    # Optional texts too (an image's caption), so the gate covers what a full request carries.
    names = [*ensemble.inputs, *(name for name in ensemble.optional_inputs if name == TEXT_INPUT)]
    count = min(len(available[name]) for name in names)
    return {name: available[name][:count] for name in names}


def encoder_inputs(ensemble: EnsembleSpec, items: dict[str, list[bytes]], checkpoint: Path) -> dict[str, np.ndarray]:
    """ITEMS through ENSEMBLE's preprocessing steps: the encoder's named inputs at their largest shape
    (texts padded to the full length, which encoders that vary the length must not notice)."""
    inputs: dict[str, np.ndarray] = {}
    for step in ensemble.steps:
        data = items[step.input]
        if isinstance(step, ImageStep):
            inputs[PIXEL_VALUES] = np.stack([image_pixels(item, step.settings) for item in data])
        elif isinstance(step, TextStep):
            full_length = replace(step.settings, pad_to_longest=False)
            inputs.update(TextTokenizer(full_length, checkpoint).encode([item.decode() for item in data]))
        elif isinstance(step, ImageTextStep):
            inputs[PIXEL_VALUES] = np.stack([image_pixels(item, step.image) for item in data])
            texts = [text.decode() for text in items.get(TEXT_INPUT, [b""] * len(data))]
            full_length = replace(step.text, pad_to_longest=False)
            inputs.update(TextTokenizer(full_length, checkpoint).encode([step.image_prompt + t for t in texts]))
    return inputs
