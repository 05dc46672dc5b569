"""Preprocessing against the checkpoint's own transformers processor, and its handling of odd images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from family_settings import image_settings, text_settings
from image_files import encode, photo
from transformers import AutoProcessor

from mmembed.core.preprocessing import (
    ImageSettings,
    InvalidInputError,
    TextSettings,
    TextTokenizer,
    decode_image,
    decode_text,
    preprocess_image,
)
from mmembed.families import get_family

SIGLIP2 = get_family("siglip2")


@pytest.fixture(scope="module")
def processor(checkpoint: Path) -> object:
    return AutoProcessor.from_pretrained(checkpoint)


def test_settings_come_from_the_checkpoint(checkpoint: Path) -> None:
    image = image_settings(SIGLIP2, checkpoint)
    text = text_settings(SIGLIP2, checkpoint)
    assert (image.height, image.width, image.resample) == (64, 64, 2)
    assert image.image_mean == (0.5, 0.5, 0.5) and image.rescale_factor == pytest.approx(1 / 255)
    assert (text.max_length, text.pad_token_id, text.lowercase) == (64, 0, True)
    assert ImageSettings.from_json(image.to_json()) == image
    assert TextSettings.from_json(text.to_json()) == text


def test_settings_are_read_from_a_hub_style_preprocessor_config(checkpoint: Path, tmp_path: Path) -> None:
    """transformers 4.x checkpoints keep the image settings in preprocessor_config.json."""
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
    (tmp_path / "preprocessor_config.json").write_text(
        '{"do_resize": true, "size": {"height": 48, "width": 40}, "resample": 3, "do_rescale": true,'
        ' "rescale_factor": 0.5, "do_normalize": true, "image_mean": [0.1, 0.2, 0.3], "image_std": [1, 2, 3]}'
    )
    settings = image_settings(SIGLIP2, tmp_path)
    assert (settings.height, settings.width, settings.resample, settings.rescale_factor) == (48, 40, 3, 0.5)
    assert settings.image_std == (1, 2, 3)


@pytest.mark.parametrize("size", [(160, 120), (31, 200), (64, 64)])
def test_pixels_match_the_processor(checkpoint: Path, processor: object, size: tuple[int, int]) -> None:
    settings = image_settings(SIGLIP2, checkpoint)
    image = photo(*size)
    ours = preprocess_image(decode_image(encode(image, "PNG"), settings), settings)
    reference = processor(images=[image], return_tensors="np")["pixel_values"][0]  # type: ignore[operator]
    assert ours.shape == reference.shape == (3, 64, 64)
    assert np.abs(ours - reference).max() < 1e-5


TEXTS = [
    "A Photo of a CAT",
    "two dogs running on the beach at night",
    "",
    "word " * 200,  # far beyond 64 tokens: truncated, <eos> kept last
    "Ünïcödé 日本語 🙂 مرحبا",
]


def test_token_ids_match_the_processor(checkpoint: Path, processor: object) -> None:
    settings = text_settings(SIGLIP2, checkpoint)
    ours = TextTokenizer(settings, checkpoint)(TEXTS)
    reference = processor(  # type: ignore[operator]
        text=[t.lower() for t in TEXTS],
        padding="max_length",
        max_length=64,
        truncation=True,
        return_tensors="np",
    )["input_ids"]
    assert ours.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(ours, reference)
    assert ours[3, -1] == 1  # truncated text still ends with <eos>
    assert ours[2, 0] == 1 and (ours[2, 1:] == 0).all()  # empty text: <eos> then padding


def test_text_is_lowercased(checkpoint: Path) -> None:
    tokenize = TextTokenizer(text_settings(SIGLIP2, checkpoint), checkpoint)
    np.testing.assert_array_equal(tokenize(["A PHOTO OF A DOG"]), tokenize(["a photo of a dog"]))


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        decode_text(b"ok \xff", max_bytes=100)


def test_text_size_limit() -> None:
    assert decode_text("é".encode() * 50, max_bytes=100) == "é" * 50
    with pytest.raises(InvalidInputError, match="text is 101 bytes, over the limit of 100"):
        decode_text(b"x" * 101, max_bytes=100)
