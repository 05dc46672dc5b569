"""A bad item fails its own request with INVALID_ARGUMENT; the rest of the dynamic batch and the server go on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import JINA_MODEL, JINA_TORCH_MODEL, MODEL, TORCH_MODEL
from image_files import encode, photo
from mmembed.client import EmbeddingClient, InvalidInputError, ModelNotFoundError

from mmembed.serve import TritonServer

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


def test_unknown_model(client: EmbeddingClient) -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        client.embed_texts("no_such_model", ["x"])
