"""Turn what users hold (paths, bytes, PIL images, arrays, data URIs, strings) into request bytes."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image

from mmembed.client._errors import InvalidInputError

ImageInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | Image.Image | np.ndarray
"""A path, encoded image bytes, a PIL image, a uint8 array (H, W), (H, W, 3) or (H, W, 4), or a data URI."""


def image_bytes(image: ImageInput) -> bytes:
    """Encoded image bytes for one input; decoding happens on the server. Arrays and PIL images go as PNG."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str) and image.startswith("data:"):
        return _data_uri_bytes(image)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            return path.read_bytes()
        except OSError as e:
            raise InvalidInputError(f"cannot read image file {path}: {e.strerror or e}") from None
    if isinstance(image, Image.Image):
        return _png(image)
    if isinstance(image, np.ndarray):
        return _png(_array_image(image))
    raise InvalidInputError(f"unsupported image input of type {type(image).__name__}")


def _data_uri_bytes(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidInputError("data URI must look like data:image/...;base64,<payload>")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as e:
        raise InvalidInputError(f"data URI payload is not valid base64: {e}") from None


def _array_image(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise InvalidInputError(f"image arrays must be uint8 (H, W[, 3|4]), got dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(array))
    raise InvalidInputError(f"image arrays must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def text_bytes(text: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInputError(f"texts must be str, got {type(text).__name__}")
    return text.encode("utf-8")


def image_text_bytes(pair: tuple[ImageInput, str]) -> tuple[bytes, bytes]:
    """An (image, text) pair's request bytes; the text may be "" (the image alone)."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise InvalidInputError(f"items must be (image, text) pairs, got {type(pair).__name__}")
    image, text = pair
    return image_bytes(image), text_bytes(text)
