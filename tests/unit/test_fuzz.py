"""Fuzzing the preprocessing: arbitrary bytes never crash it. Each input ends as a valid tensor or as
InvalidInputError, the one error the Python models turn into a per-request INVALID_ARGUMENT; anything
else would fail a whole dynamic batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from family_settings import text_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_files import encode, photo

from mmembed.core.preprocessing import (
    DISPLAY_DECODE,
    ImageSettings,
    InvalidInputError,
    TextTokenizer,
    decode_image,
    decode_text,
    preprocess_image,
)
from mmembed.families import get_family

IMAGE = ImageSettings(
    height=32,
    width=32,
    resample=2,
    rescale_factor=1 / 255,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    max_image_pixels=4_000_000,
    decode=DISPLAY_DECODE,  # the policy with the most steps: EXIF, compositing, 16-bit scaling
)
REAL_IMAGES = [encode(photo(40, 30, seed=1), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "ICO")]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def image_or_typed_error(data: bytes) -> None:
    try:
        image = decode_image(data, IMAGE)
    except InvalidInputError:
        return
    pixels = preprocess_image(image, IMAGE)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all()


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data: bytes) -> None:
    image_or_typed_error(data)


@FUZZ
@given(
    st.sampled_from(REAL_IMAGES),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=16),
    st.integers(0, 1 << 20),
)
def test_real_images_with_flipped_and_cut_bytes(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    image_or_typed_error(bytes(data[: 1 + cut % len(data)]))


@pytest.fixture(scope="module")
def tokenize(checkpoint: Path) -> TextTokenizer:
    return TextTokenizer(text_settings(get_family("siglip2"), checkpoint), checkpoint)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_text_bytes(tokenize: TextTokenizer, data: bytes) -> None:
    try:
        text = decode_text(data, max_bytes=1024)
    except InvalidInputError:
        return
    ids = tokenize([text])
    assert ids.shape == (1, tokenize.settings.max_length) and ids.dtype == np.int64
    assert ((ids >= 0) & (ids < 4096)).all()
