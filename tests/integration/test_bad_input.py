"""A bad item fails its own request with INVALID_ARGUMENT; the rest of the dynamic batch and the server go on."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import JINA_MODEL, JINA_TORCH_MODEL, MODEL, TORCH_MODEL
from image_files import encode, photo

from mmembed.client import (
    AsyncEmbeddingClient,
    EmbeddingClient,
    InvalidInputError,
    ModelNotFoundError,
    PartialEmbeddings,
)
from mmembed.serving.server import TritonServer

BAD_IMAGES = {
    "truncated-jpeg": (encode(photo(), "JPEG")[:400], "truncated"),
    "random-bytes": (
        bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)),
        "cannot identify",
    ),
    "zero-bytes": (b"", "empty"),
}


@pytest.mark.parametrize("model", [MODEL, JINA_MODEL, TORCH_MODEL, JINA_TORCH_MODEL])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_fails_alone_in_a_dynamic_batch(server: TritonServer, case: str, model: str) -> None:
    """Pillow preprocessing (fp32 models) and torch preprocessing (the torch-runtime models)."""
    data, message = BAD_IMAGES[case]
    good = [encode(photo(seed=s), "PNG") for s in range(7)]
    with EmbeddingClient(server.grpc_url) as client:
        expected = client.embed_images(model, good)

        def send(index: int) -> object:
            try:
                return client.embed_images(model, [data] if index == 3 else [good[index]])
            except InvalidInputError as e:
                return e

        with ThreadPoolExecutor(7) as pool:  # 7 requests at once: the server batches them together
            results = list(pool.map(send, range(7)))
        bad = results.pop(3)
        assert isinstance(bad, InvalidInputError)
        assert "item 0" in str(bad) and message in str(bad), str(bad)
        for index, result in zip([0, 1, 2, 4, 5, 6], results, strict=True):
            assert isinstance(result, np.ndarray), result
            tolerance = 1e-5 if model in (MODEL, JINA_MODEL) else 1e-2  # bf16 may round by batch shape
            np.testing.assert_allclose(result[0], expected[index], atol=tolerance)
        assert client.embed_images(model, good[:1]).shape == (1, 64)  # the server still works
    assert {f"{model}_image", f"{model}_text"} <= set(server.ready_models())


def test_bad_item_names_its_position(client: EmbeddingClient) -> None:
    with pytest.raises(InvalidInputError, match="item 2: cannot identify image format"):
        client.embed_images(MODEL, [encode(photo(), "PNG"), encode(photo(), "JPEG"), b"not an image"])


def _hundred_images() -> list[bytes]:
    return [encode(photo(seed=index % 9), "PNG") for index in range(100)]


@pytest.mark.parametrize("model", [MODEL, TORCH_MODEL])  # Pillow and torch preprocessing word it alike
def test_a_bad_item_among_a_hundred_is_named_by_the_callers_index(client: EmbeddingClient, model: str) -> None:
    """The client sends 100 images as 7 requests of up to 16: item 37 is item 5 of the third request."""
    images = _hundred_images()
    images[37] = b"GIF89a broken"
    with pytest.raises(InvalidInputError) as raised:
        client.embed_images(model, images)
    assert raised.value.index == 37
    assert str(raised.value).startswith("item 37: cannot identify image format"), str(raised.value)


def test_skip_embeds_every_other_item(client: EmbeddingClient, tmp_path: Path) -> None:
    images: list[object] = list(_hundred_images())
    for index in (5, 37, 38, 99):  # 37 and 38 in one request: it is sent three times
        images[index] = encode(photo(), "JPEG")[:300]
    images[60] = tmp_path / "missing.jpg"  # fails in the client, before any request
    partial = client.embed_images(MODEL, images, on_error="skip")  # type: ignore[arg-type]
    assert sorted(partial.errors) == [5, 37, 38, 60, 99]
    assert all(error.index == index for index, error in partial.errors.items())
    assert "truncated" in str(partial.errors[38]) and "cannot read image file" in str(partial.errors[60])
    kept = [index for index in range(100) if index not in partial.errors]
    assert partial.indexes.tolist() == kept and partial.embeddings.shape == (95, 64)
    expected = client.embed_images(MODEL, [images[index] for index in kept])  # type: ignore[misc]
    np.testing.assert_allclose(partial.embeddings, expected, atol=1e-5)


def test_skip_works_for_texts_and_in_the_async_client(server: TritonServer) -> None:
    texts = ["a cat", "a dog", "x" * (2 * 1024 * 1024), "a bird"]  # over the 1 MiB text limit

    async def run() -> PartialEmbeddings:
        async with AsyncEmbeddingClient(server.grpc_url) as aclient:
            with pytest.raises(InvalidInputError, match=r"^item 2: text is 2097152 bytes, over the limit"):
                await aclient.embed_texts(JINA_MODEL, texts)
            return await aclient.embed_texts(JINA_MODEL, texts, on_error="skip", dimensions=32)

    partial = asyncio.run(run())
    assert partial.indexes.tolist() == [0, 1, 3] and list(partial.errors) == [2]
    with EmbeddingClient(server.grpc_url) as client:
        expected = client.embed_texts(JINA_MODEL, ["a cat", "a dog", "a bird"], dimensions=32)
    np.testing.assert_allclose(partial.embeddings, expected, atol=1e-5)


def test_unknown_model_lists_the_models_by_their_public_names(client: EmbeddingClient) -> None:
    served = f"{JINA_MODEL}, {JINA_TORCH_MODEL}, {MODEL}, {TORCH_MODEL}"
    with pytest.raises(ModelNotFoundError, match=f"no model named 'no_such_model' on this server; .*: {served}$"):
        client.embed_texts("no_such_model", ["x"])
    with pytest.raises(ModelNotFoundError, match=f"the models it serves: {served}$"):
        client.embed_images("no_such_model", [encode(photo(), "PNG")], dimensions=16)
    with pytest.raises(ModelNotFoundError, match=f"the models it serves: {served}$"):
        client.model_info("siglip2_text")  # an ensemble's name is not a model's
