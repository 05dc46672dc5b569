"""Decoding files nobody on the team made: every format Pillow registers, odd modes, EXIF, transparency,
layers and frames. Each family decodes as its own reference pipeline does, and anything that cannot be
decoded is an InvalidInputError that says why, never another exception (which would fail a whole batch)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from family_settings import image_settings
from image_files import (
    BROKEN_VARIANTS,
    PHOTO_SIZE,
    UNDECODABLE,
    encode,
    format_corpus,
    odd_files,
    photo,
    registered_formats,
)
from jina_reference import official_image_pixels
from PIL import Image
from transformers import AutoProcessor
from transformers.image_utils import load_image

from mmembed.core.preprocessing import (
    DISPLAY_DECODE,
    PILLOW_CONVERT_DECODE,
    TRANSFORMERS_DECODE,
    DecodePolicy,
    ImageSettings,
    InvalidInputError,
    decode_image,
    image_pixels,
)
from mmembed.families import get_family

CORPUS = format_corpus()
ODD = odd_files()
POLICIES = {"transformers": TRANSFORMERS_DECODE, "pillow-convert": PILLOW_CONVERT_DECODE, "display": DISPLAY_DECODE}


def _settings(decode: DecodePolicy, shortest_edge: int | None = None) -> ImageSettings:
    return ImageSettings(
        height=32,
        width=32,
        shortest_edge=shortest_edge,
        resample=3,
        rescale_factor=1 / 255,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        decode=decode,
        max_image_pixels=4_000_000,
    )


def test_the_corpus_covers_every_format_pillow_registers() -> None:
    """A Pillow upgrade that adds a format fails here until the corpus has a file of it."""
    seen = set()
    for data in CORPUS.values():
        try:
            with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
                warnings.simplefilter("ignore")
                seen.add(str(image.format).upper())
        except Exception:
            continue
    assert registered_formats() - seen == {"PALM", "PDF"}  # written by Pillow, read by nothing in it
    assert any(name.startswith("PALM-") for name in CORPUS) and any(name.startswith("PDF-") for name in CORPUS)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("shortest_edge", [None, 32])  # squash (SigLIP) and shortest edge + crop (JinaCLIP)
def test_every_file_gives_pixels_or_a_clear_error(policy: str, shortest_edge: int | None) -> None:
    settings = _settings(POLICIES[policy], shortest_edge)
    failures = {}
    for name, data in CORPUS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about odd metadata in broken files
                pixels = image_pixels(data, settings)
        except InvalidInputError as e:
            failures[name] = str(e)
            continue
        assert pixels.shape == (3, 32, 32) and pixels.dtype == np.float32, name
        assert np.isfinite(pixels).all(), name
    valid = {name for name in CORPUS if not name.endswith(BROKEN_VARIANTS)}
    assert {name for name in failures if name in valid} == set(UNDECODABLE)  # every other valid file decodes
    for name, expected in UNDECODABLE.items():
        assert expected in failures[name], (name, failures[name])
    for name, message in failures.items():
        assert "Error:" not in message.split("(")[0], (name, message)  # the problem first, then detail


def test_layered_and_multi_frame_files_whose_frames_do_not_start_at_zero() -> None:
    """Pillow numbers a PSD's layers from 1: seeking to frame 0 failed (EOFError, a whole-batch INTERNAL).
    The merged image is the one every reference pipeline sees."""
    decoded = decode_image(ODD["layered-psd"], _settings(TRANSFORMERS_DECODE))
    assert decoded.size == (8, 6) and decoded.getpixel((0, 0)) == (120, 60, 90)
    for name in ("SPIDER-F", "MPO-two-frames", "DCX-crafted", "FLI-crafted"):
        assert decode_image(CORPUS[name], _settings(TRANSFORMERS_DECODE)).mode == "RGB", name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("EPS-RGB", "unsupported EPS file: EPS needs Ghostscript to render, which this server does not have"),
        ("WMF-crafted", "unsupported WMF file: Pillow has no decoder for it on this server"),
        ("PNG-RGB-truncated", "corrupt or truncated PNG file"),
        ("oversized-png", "image declares too many pixels, over the limit of 4000000"),
    ],
)
def test_messages_say_what_is_wrong(name: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        image_pixels(CORPUS[name], _settings(TRANSFORMERS_DECODE))
    assert str(error.value).startswith(message), str(error.value)


# --- each family decodes as its reference pipeline does -----------------------------------------------


def _siglip_reference_pixels(processor: object, data: bytes, tmp_path: Path) -> np.ndarray:
    """transformers' own way from a file to pixel_values: `load_image(path)`, then the processor."""
    path = tmp_path / "image"
    path.write_bytes(data)
    pixels: np.ndarray = processor(images=load_image(str(path)), return_tensors="np")["pixel_values"][0]  # type: ignore[operator]
    return pixels


@pytest.mark.parametrize("name", sorted(ODD))
def test_siglip2_decodes_as_transformers_load_image(checkpoint: Path, name: str, tmp_path: Path) -> None:
    settings = image_settings(get_family("siglip2"), checkpoint)
    assert settings.decode == TRANSFORMERS_DECODE
    expected = _siglip_reference_pixels(AutoProcessor.from_pretrained(checkpoint), ODD[name], tmp_path)
    np.testing.assert_allclose(image_pixels(ODD[name], settings), expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ODD))
def test_jinaclip2_decodes_as_its_official_encode_image(jina_checkpoint: Path, name: str) -> None:
    settings = image_settings(get_family("jinaclip2"), jina_checkpoint)
    assert settings.decode == PILLOW_CONVERT_DECODE
    expected = official_image_pixels(ODD[name], jina_checkpoint)
    np.testing.assert_allclose(image_pixels(ODD[name], settings), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["rgba-png", "exif-rotated-jpeg", "16bit-png"])
def test_the_families_differ_where_their_references_do(checkpoint: Path, jina_checkpoint: Path, name: str) -> None:
    """The display policy differs from both references on these files: the parity tests above see it."""
    for family, folder in (("siglip2", checkpoint), ("jinaclip2", jina_checkpoint)):
        reference = image_settings(get_family(family), folder)
        display = ImageSettings(**{**reference.__dict__, "decode": DISPLAY_DECODE})
        difference = np.abs(image_pixels(ODD[name], reference) - image_pixels(ODD[name], display)).max()
        if family == "siglip2" and name == "exif-rotated-jpeg":
            assert difference < 1e-6  # both apply EXIF orientation
        else:
            assert difference > 0.1, (family, name)


# --- the display policy (`mmembed export --image-decode display`) ----------------------------------------


def test_display_composites_transparency_on_white_where_references_drop_alpha() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert decode_image(encode(rgba, "PNG"), _settings(DISPLAY_DECODE)).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(encode(rgba, "PNG"), _settings(TRANSFORMERS_DECODE)).getpixel((0, 0)) == (10, 20, 30)


def test_display_scales_sixteen_bits_where_references_clip() -> None:
    values = np.full((4, 4), 32896, dtype=np.uint16)  # half of 65535
    data = encode(Image.fromarray(values), "PNG")
    assert decode_image(data, _settings(DISPLAY_DECODE)).getpixel((0, 0)) == (128, 128, 128)
    assert decode_image(data, _settings(PILLOW_CONVERT_DECODE)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied_or_ignored_as_the_policy_says() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(photo(*PHOTO_SIZE), "JPEG", exif=exif)
    assert decode_image(data, _settings(TRANSFORMERS_DECODE)).size == PHOTO_SIZE[::-1]
    assert decode_image(data, _settings(DISPLAY_DECODE)).size == PHOTO_SIZE[::-1]
    assert decode_image(data, _settings(PILLOW_CONVERT_DECODE)).size == PHOTO_SIZE


def test_the_policy_travels_in_the_settings_file() -> None:
    for policy in POLICIES.values():
        settings = _settings(policy)
        assert ImageSettings.from_json(settings.to_json()) == settings


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(cmyk, "JPEG"), _settings(TRANSFORMERS_DECODE))
    red, green, blue = decoded.getpixel((4, 4))  # type: ignore[misc]
    assert decoded.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, _, blue = decode_image(data, _settings(TRANSFORMERS_DECODE)).getpixel((0, 0))  # type: ignore[misc]
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
        decode_image(data, _settings(TRANSFORMERS_DECODE))


def test_pixel_limit_is_checked_before_decoding() -> None:
    huge = ImageSettings(**{**_settings(TRANSFORMERS_DECODE).__dict__, "max_image_pixels": 100})
    with pytest.raises(InvalidInputError, match="over the limit"):
        decode_image(encode(Image.new("L", (20, 20)), "PNG"), huge)
