"""The client's input handling and error translation, without a server."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from image_files import encode, photo

from mmembed.client import ClientOptions, InvalidInputError, _triton
from mmembed.client._errors import (
    ModelNotFoundError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
    translate,
)
from mmembed.client._inputs import image_bytes, image_text_bytes, text_bytes
from mmembed.client._items import BatchResult, PartialEmbeddings, assemble, batches, convert_items, rebased
from mmembed.client._types import ModelInfo


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
    items = [(i, bytes([i])) for i in range(10)]
    assert batches(items, 4) == [items[0:4], items[4:8], items[8:10]]


def test_a_bad_item_is_named_by_the_callers_index() -> None:
    """The server names an item by its place in one request; the caller passed a longer list."""
    items = [(index, b"x") for index in range(32, 48)]  # the third request of 16
    server = InvalidInputError("in ensemble 'siglip2_image', item 5: cannot identify image format (13 bytes)")
    error = rebased(server, items)
    assert error.index == 37 and str(error) == "item 37: cannot identify image format (13 bytes)"
    assert rebased(InvalidInputError("batch too large"), items).index is None  # no item to blame


def test_items_that_cannot_be_sent_are_named_or_set_aside(tmp_path: Path) -> None:
    good = encode(photo(), "PNG")
    values: list[object] = [good, tmp_path / "missing.jpg", good, 12345]
    with pytest.raises(InvalidInputError, match=r"^item 1: cannot read image file") as raised:
        convert_items(values, image_bytes, skip=False)  # type: ignore[arg-type]
    assert raised.value.index == 1
    items, set_aside = convert_items(values, image_bytes, skip=True)  # type: ignore[arg-type]
    assert [index for index, _ in items] == [0, 2] and sorted(set_aside.errors) == [1, 3]
    assert str(set_aside.errors[3]).startswith("item 3: unsupported image input")


def test_skipped_results_come_back_in_the_callers_order() -> None:
    first = BatchResult([4, 6], np.full((2, 3), 4.0, dtype=np.float32), {5: InvalidInputError("x", index=5)})
    second = BatchResult([0, 1], np.full((2, 3), 0.0, dtype=np.float32))
    partial = assemble([BatchResult([], None, {2: InvalidInputError("y", index=2)}), first, second], lambda: 3, True)
    assert isinstance(partial, PartialEmbeddings)
    assert partial.indexes.tolist() == [0, 1, 4, 6] and partial.embeddings[:, 0].tolist() == [0, 0, 4, 4]
    assert sorted(partial.errors) == [2, 5]
    nothing = assemble([BatchResult([], None, {0: InvalidInputError("z", index=0)})], lambda: 7, True)
    assert isinstance(nothing, PartialEmbeddings) and nothing.embeddings.shape == (0, 7)


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.INVALID_ARGUMENT", "item 0: corrupt", InvalidInputError),
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'x' is not found", ModelNotFoundError),
        ("StatusCode.NOT_FOUND", "no such model", ModelNotFoundError),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServerUnavailableError),
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ServerOverloadedError),
        ("StatusCode.UNAVAILABLE", "Request timeout expired", ServerOverloadedError),
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'x' has no available versions", ServerUnavailableError),
        ("StatusCode.INTERNAL", "boom", ServerError),
    ],
)
def test_errors_translate_by_status(status: str, message: str, expected: type[Exception]) -> None:
    error = translate(status, message)
    assert type(error) is expected and str(error) == message


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        ClientOptions(max_in_flight=0)


def test_only_not_now_errors_are_retried_and_within_the_deadline() -> None:
    import time

    from mmembed.client import ServerOverloadedError
    from mmembed.client._retry import MAX_BACKOFF_S, retry_delay

    options = ClientOptions(max_retries=3, retry_backoff_s=0.1)
    far = time.monotonic() + 100
    for attempt in range(3):
        delay = retry_delay(ServerOverloadedError("queue full"), attempt, far, options)
        assert delay is not None and 0 <= delay <= min(MAX_BACKOFF_S, 0.1 * 2**attempt)
    assert retry_delay(ServerOverloadedError("queue full"), 3, far, options) is None  # retries used up
    assert retry_delay(ServerUnavailableError("x"), 0, time.monotonic() + 1e-6, options) is None  # deadline
    for error in (InvalidInputError("bad"), ModelNotFoundError("none"), ServerError("boom")):
        assert retry_delay(error, 0, far, options) is None


def _info(**fields: object) -> ModelInfo:
    base: dict[str, object] = {
        "name": "m",
        "family": "f",
        "dimension": 8,
        "modalities": ("image", "text"),
        "image_size": (8, 8),
        "max_text_length": 16,
        "runtime": "onnxruntime-cpu",
        "precision": "fp32",
    }
    return ModelInfo(**{**base, **fields})  # type: ignore[arg-type]


def test_image_text_pairs_go_only_to_models_that_read_them_together() -> None:
    with pytest.raises(InvalidInputError, match="does not embed an image and a text together"):
        _triton.multimodal_modality(_info(), query=False)
    both = _info(modalities=("image", "image_query", "query", "text"), image_with_text=True)
    assert _triton.multimodal_modality(both, query=True) == "image_query"
    assert _triton.multimodal_modality(both, query=False) == "image"
    with pytest.raises(InvalidInputError, match="has no image queries"):
        _triton.multimodal_modality(_info(image_with_text=True), query=True)
    with pytest.raises(InvalidInputError, match=r"^items must be \(image, text\) pairs"):
        image_text_bytes(b"just an image")  # type: ignore[arg-type]


def test_an_instruction_goes_only_where_a_query_takes_one() -> None:
    fixed = _info(modalities=("query", "text"), query_instruction="Represent the query: ")
    with pytest.raises(InvalidInputError, match="takes no per-request instruction; its queries always get"):
        _triton.check_instruction(fixed, query=True, instruction="Find it")
    tasked = _info(instruction_template="Instruct: {task}\nQuery: ")
    _triton.check_instruction(tasked, query=True, instruction="Find it")
    _triton.check_instruction(tasked, query=False, instruction=None)
    with pytest.raises(InvalidInputError, match="applies to queries"):
        _triton.check_instruction(tasked, query=False, instruction="Find it")
