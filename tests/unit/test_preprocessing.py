"""Preprocessing against the checkpoint's own transformers processor, and its handling of odd images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, photo
from PIL import Image
from transformers import AutoProcessor

from mmembed.families import get_family
from mmembed.preprocessing import (
    ImageSettings,
    InvalidInputError,
    TextSettings,
    TextTokenizer,
    decode_image,
    decode_text,
    preprocess_image,
)

SIGLIP2 = get_family("siglip2")


@pytest.fixture(scope="module")
def processor(checkpoint: Path) -> object:
    return AutoProcessor.from_pretrained(checkpoint)


def test_settings_come_from_the_checkpoint(checkpoint: Path) -> None:
    image = SIGLIP2.image_settings(checkpoint)
    text = SIGLIP2.text_settings(checkpoint)
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
    settings = SIGLIP2.image_settings(tmp_path)
    assert (settings.height, settings.width, settings.resample, settings.rescale_factor) == (48, 40, 3, 0.5)
    assert settings.image_std == (1, 2, 3)


@pytest.mark.parametrize("size", [(160, 120), (31, 200), (64, 64)])
def test_pixels_match_the_processor(checkpoint: Path, processor: object, size: tuple[int, int]) -> None:
    settings = SIGLIP2.image_settings(checkpoint)
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
    settings = SIGLIP2.text_settings(checkpoint)
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
    tokenize = TextTokenizer(SIGLIP2.text_settings(checkpoint), checkpoint)
    np.testing.assert_array_equal(tokenize(["A PHOTO OF A DOG"]), tokenize(["a photo of a dog"]))


def _settings() -> ImageSettings:
    return ImageSettings(height=8, width=8, resample=2, rescale_factor=None, image_mean=None, image_std=None)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    decoded = decode_image(encode(rgba, "PNG"), _settings())
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.full((4, 4), 32896, dtype=np.uint16)  # half of 65535
    decoded = decode_image(encode(Image.fromarray(values), "PNG"), _settings())
    assert decoded.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(wide, "JPEG", exif=exif), _settings())
    assert decoded.size == (20, 40)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(cmyk, "JPEG"), _settings())
    red, green, blue = decoded.getpixel((4, 4))  # type: ignore[misc]
    assert decoded.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    red, _, blue = decode_image(buffer.getvalue(), _settings()).getpixel((0, 0))  # type: ignore[misc]
    assert red > 200 and blue < 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01garbage" * 10, "cannot identify image format"),
        (encode(photo(), "JPEG")[:300], "truncated"),
    ],
)
def test_bad_images_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_image(data, _settings())


def test_pixel_limit_is_checked_before_decoding() -> None:
    huge = ImageSettings(**{**_settings().__dict__, "max_image_pixels": 100})
    with pytest.raises(InvalidInputError, match="over the limit"):
        decode_image(encode(Image.new("L", (20, 20)), "PNG"), huge)


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        decode_text(b"ok \xff", max_bytes=100)


def test_text_size_limit() -> None:
    assert decode_text("é".encode() * 50, max_bytes=100) == "é" * 50
    with pytest.raises(InvalidInputError, match="text is 101 bytes, over the limit of 100"):
        decode_text(b"x" * 101, max_bytes=100)
