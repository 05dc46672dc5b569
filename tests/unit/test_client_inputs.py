"""The client's input handling and error translation, without a server."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from conftest import encode, photo
from mmembed.client import ClientOptions, InvalidInputError
from mmembed.client._errors import (
    ModelNotFoundError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
    translate,
)
from mmembed.client._inputs import batches, image_bytes, text_bytes


def test_paths_bytes_pil_arrays_and_data_uris(tmp_path: Path) -> None:
    png = encode(photo(), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(png)
    assert image_bytes(path) == png
    assert image_bytes(str(path)) == png
    assert image_bytes(png) == png
    assert image_bytes(bytearray(png)) == png
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert image_bytes(uri) == png
    assert image_bytes(photo()).startswith(b"\x89PNG")
    assert image_bytes(np.zeros((4, 5, 3), dtype=np.uint8)).startswith(b"\x89PNG")
    assert image_bytes(np.zeros((4, 5), dtype=np.uint8)).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Path("/no/such/image.jpg"), "cannot read image file"),
        ("data:image/png,notbase64", "base64"),
        ("data:image/png;base64,@@@", "not valid base64"),
        (np.zeros((4, 4, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
        (12345, "unsupported image input"),
    ],
)
def test_bad_image_inputs(value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        image_bytes(value)  # type: ignore[arg-type]


def test_texts_must_be_strings() -> None:
    assert text_bytes("héllo") == "héllo".encode()
    with pytest.raises(InvalidInputError, match="must be str"):
        text_bytes(b"bytes")  # type: ignore[arg-type]


def test_batches_keep_order() -> None:
    items = [bytes([i]) for i in range(10)]
    assert batches(items, 4) == [items[0:4], items[4:8], items[8:10]]


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.INVALID_ARGUMENT", "item 0: corrupt", InvalidInputError),
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'x' is not found", ModelNotFoundError),
        ("StatusCode.NOT_FOUND", "no such model", ModelNotFoundError),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServerUnavailableError),
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ServerOverloadedError),
        ("StatusCode.INTERNAL", "boom", ServerError),
    ],
)
def test_errors_translate_by_status(status: str, message: str, expected: type[Exception]) -> None:
    error = translate(status, message)
    assert type(error) is expected and str(error) == message


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        ClientOptions(max_in_flight=0)
