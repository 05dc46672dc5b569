"""Image preprocessing in torch (on the encoder's device) matches the Pillow path it replaces.

On this CPU machine Pillow decodes and torch resizes; nvJPEG (GPU decoding) is not run here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from family_settings import image_settings
from PIL import Image

from mmembed.core.numeric_gate import row_cosines
from mmembed.core.preprocessing import ImageSettings, InvalidInputError, decode_image, preprocess_image
from mmembed.core.sample_images import synthetic_jpeg
from mmembed.families import get_family
from mmembed.runtime.device_preprocessing import DevicePreprocessor, nvjpeg_can_decode, upright

SIZES = [(640, 480), (2048, 1536), (480, 640), (300, 200), (1600, 300), (100, 100)]


def _settings(request: pytest.FixtureRequest, family: str, side: int) -> ImageSettings:
    checkpoint = Path(request.getfixturevalue("checkpoint" if family == "siglip2" else "jina_checkpoint"))
    settings = image_settings(get_family(family), checkpoint)
    edge = None if settings.shortest_edge is None else side
    return replace(settings, height=side, width=side, shortest_edge=edge)  # the real models' 512 too


@pytest.mark.parametrize("side", [64, 512])
@pytest.mark.parametrize("family", ["siglip2", "jinaclip2"])  # squash + bilinear; shortest edge + bicubic + crop
def test_pixels_match_pillow_preprocessing(family: str, side: int, request: pytest.FixtureRequest) -> None:
    settings = _settings(request, family, side)
    preprocessor = DevicePreprocessor(settings, "cpu")
    jpegs = [synthetic_jpeg(width, height, seed=index) for index, (width, height) in enumerate(SIZES)]
    actual = preprocessor(jpegs).numpy()
    expected = np.stack([preprocess_image(decode_image(data, settings), settings) for data in jpegs])
    assert actual.shape == expected.shape == (len(SIZES), 3, side, side)
    assert actual.dtype == np.float32
    level = (settings.rescale_factor or 1.0) / min(settings.image_std or (1.0,))  # one 8-bit step, normalised
    difference = np.abs(actual - expected)
    assert (difference < level / 100).mean() > 0.8  # most pixels agree exactly (8-bit steps, as Pillow)
    assert (difference > 1.5 * level).mean() < 1e-3  # Pillow rounds to 8 bits between its two passes
    assert row_cosines(actual.reshape(len(SIZES), -1), expected.reshape(len(SIZES), -1)).min() >= 0.9999


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_pixels_as_pillow_turns_exif_orientations(orientation: int) -> None:
    pixels = torch.arange(3 * 4 * 6, dtype=torch.uint8).reshape(3, 4, 6)
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    exif = Image.Exif()
    exif[0x0112] = orientation
    turned = Image.open(_jpeg_with_exif(image, exif)).getexif().get(0x0112)
    assert turned == orientation
    pillow = {
        1: image,
        2: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: image.transpose(Image.Transpose.ROTATE_180),
        4: image.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: image.transpose(Image.Transpose.TRANSPOSE),
        6: image.transpose(Image.Transpose.ROTATE_270),
        7: image.transpose(Image.Transpose.TRANSVERSE),
        8: image.transpose(Image.Transpose.ROTATE_90),
    }[orientation]  # what ImageOps.exif_transpose applies for each tag value
    expected = torch.from_numpy(np.asarray(pillow).copy()).permute(2, 0, 1)
    assert torch.equal(upright(pixels, orientation), expected)


def _jpeg_with_exif(image: Image.Image, exif: Image.Exif) -> object:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    buffer.seek(0)
    return buffer


def test_other_formats_take_the_pillow_decoder(request: pytest.FixtureRequest) -> None:
    import io

    settings = _settings(request, "siglip2", 64)
    rgba = Image.new("RGBA", (90, 70), (200, 30, 40, 128))
    items = []
    for image, format_name in ((rgba, "PNG"), (rgba.convert("L"), "WEBP"), (rgba.convert("CMYK"), "JPEG")):
        buffer = io.BytesIO()
        image.save(buffer, format_name)
        items.append(buffer.getvalue())
    actual = DevicePreprocessor(settings, "cpu")(items).numpy()
    expected = np.stack([preprocess_image(decode_image(data, settings), settings) for data in items])
    assert np.abs(actual - expected).max() <= 1.01 * (settings.rescale_factor or 1.0) / min(settings.image_std or (1,))


def test_a_bad_item_is_named_with_the_default_paths_message(request: pytest.FixtureRequest) -> None:
    settings = _settings(request, "jinaclip2", 64)
    preprocessor = DevicePreprocessor(settings, "cpu")
    good = synthetic_jpeg(640, 480, seed=0)
    with pytest.raises(InvalidInputError, match=r"item 1: cannot identify image format"):
        preprocessor([good, b"not an image", good])
    with pytest.raises(InvalidInputError, match=r"item 0: corrupt or truncated image"):
        preprocessor([good[:600]])
    with pytest.raises(InvalidInputError, match=r"item 1: image is 4000x20: aspect ratio over 64:1"):
        preprocessor([good, synthetic_jpeg(4000, 20, seed=1)])
    small = replace(settings, max_image_pixels=1000)
    with pytest.raises(InvalidInputError, match=r"item 0: image is 640x480 = 307200 pixels, over the limit of 1000"):
        DevicePreprocessor(small, "cpu")([good])


def test_filters_without_a_torch_twin_are_refused_at_load(request: pytest.FixtureRequest) -> None:
    settings = replace(_settings(request, "siglip2", 64), resample=Image.Resampling.LANCZOS)
    with pytest.raises(ValueError, match=r"bilinear or bicubic .* filter 1: use the default"):
        DevicePreprocessor(settings, "cpu")


def test_only_complete_rgb_or_gray_jpegs_are_sent_to_nvjpeg() -> None:
    """The rest goes to Pillow, so a truncated file is refused with the default path's message, not decoded
    to a partly grey image by a lenient GPU decoder."""
    import io

    def header_and_bytes(image: Image.Image, format_name: str) -> tuple[Image.Image, bytes]:
        buffer = io.BytesIO()
        image.save(buffer, format_name)
        return Image.open(io.BytesIO(buffer.getvalue())), buffer.getvalue()

    jpeg = synthetic_jpeg(640, 480, seed=0)
    assert nvjpeg_can_decode(Image.open(io.BytesIO(jpeg)), jpeg)
    assert nvjpeg_can_decode(*header_and_bytes(Image.new("L", (32, 32)), "JPEG"))
    assert not nvjpeg_can_decode(Image.open(io.BytesIO(jpeg[:5000])), jpeg[:5000])
    assert not nvjpeg_can_decode(*header_and_bytes(Image.new("CMYK", (32, 32)), "JPEG"))
    assert not nvjpeg_can_decode(*header_and_bytes(Image.new("RGB", (32, 32)), "PNG"))
