"""Served embeddings against transformers' own SiglipModel + AutoProcessor, through a real tritonserver."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import JINA_MODEL, JINA_TORCH_MODEL, MODEL, TORCH_MODEL, reference_images, reference_texts
from image_files import encode, photo
from transformers import SiglipModel

from mmembed.client import AsyncEmbeddingClient, EmbeddingClient
from mmembed.core.numeric_gate import MIN_COSINE, row_cosines
from mmembed.serving.server import TritonServer

MIN_COSINE_FP32 = 0.9999
# Every served model of the test repository, with the parity its precision promises (numeric_gate.MIN_COSINE).
PARITY = [(MODEL, MIN_COSINE_FP32), (TORCH_MODEL, MIN_COSINE["bf16"])]


@pytest.mark.parametrize(("model", "min_cosine"), PARITY)
def test_image_embeddings_match_transformers(
    client: EmbeddingClient, reference: tuple[SiglipModel, object], model: str, min_cosine: float
) -> None:
    images = [photo(160, 120, seed=1), photo(50, 300, seed=2), photo(64, 64, seed=3)]
    served = client.embed_images(model, [encode(image, "PNG") for image in images])
    expected = reference_images(reference, images)
    cosines = row_cosines(served, expected)
    print(f"{model} image parity: min cosine {cosines.min():.8f}, max abs error {np.abs(served - expected).max():.3g}")
    assert served.dtype == np.float32 and served.shape == (3, 64)
    assert cosines.min() >= min_cosine


@pytest.mark.parametrize(("model", "min_cosine"), PARITY)
def test_text_embeddings_match_transformers(
    client: EmbeddingClient, reference: tuple[SiglipModel, object], model: str, min_cosine: float
) -> None:
    texts = ["A photo of a cat", "two dogs on the beach", "", "word " * 200, "日本語のテキスト 🙂"]
    served = client.embed_texts(model, texts)
    expected = reference_texts(reference, texts)
    cosines = row_cosines(served, expected)
    print(f"{model} text parity: min cosine {cosines.min():.8f}, max abs error {np.abs(served - expected).max():.3g}")
    assert cosines.min() >= min_cosine


def test_embeddings_have_unit_norm(client: EmbeddingClient) -> None:
    vectors = np.concatenate([client.embed_images(MODEL, [photo()]), client.embed_texts(MODEL, ["a", "b c"])])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_batch_equals_single_requests(server: TritonServer) -> None:
    images = [encode(photo(seed=s), "PNG") for s in range(8)]
    with EmbeddingClient(server.grpc_url) as client:
        batched = client.embed_images(MODEL, images)
        singles = np.concatenate([client.embed_images(MODEL, [image]) for image in images])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_order_is_kept_across_batches_and_concurrent_callers(server: TritonServer) -> None:
    from mmembed.client import ClientOptions

    texts = [f"text number {i}" for i in range(40)]
    with EmbeddingClient(server.grpc_url) as client:
        one_by_one = np.concatenate([client.embed_texts(MODEL, [t]) for t in texts])
    options = ClientOptions(text_batch_size=3, max_in_flight=4)
    with EmbeddingClient(server.grpc_url, options) as client, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda shift: client.embed_texts(MODEL, texts[shift:] + texts[:shift]), range(4)))
    for shift, result in enumerate(results):
        np.testing.assert_allclose(result, np.roll(one_by_one, -shift, axis=0), atol=1e-5)


def test_async_client_matches_sync(server: TritonServer, client: EmbeddingClient) -> None:
    images = [photo(seed=s) for s in range(5)]

    async def run() -> tuple[np.ndarray, np.ndarray, list[str]]:
        async with AsyncEmbeddingClient(server.grpc_url) as aclient:
            vectors = await aclient.embed_images(MODEL, images)
            texts = await aclient.embed_texts(MODEL, ["a cat", "a dog"])
            names = [info.name for info in await aclient.list_models()]
            return vectors, texts, names

    vectors, texts, names = asyncio.run(run())
    np.testing.assert_allclose(vectors, client.embed_images(MODEL, images), atol=1e-5)
    np.testing.assert_allclose(texts, client.embed_texts(MODEL, ["a cat", "a dog"]), atol=1e-5)
    assert names == [JINA_MODEL, JINA_TORCH_MODEL, MODEL, TORCH_MODEL]


def test_list_models(client: EmbeddingClient) -> None:
    (info,) = [model for model in client.list_models() if model.name == MODEL]  # jinaclip2: its own file
    assert (info.name, info.family, info.dimension, info.modalities) == (
        MODEL,
        "siglip2",
        64,
        ("image", "text"),
    )
    assert info.image_size == (64, 64) and info.max_text_length == 64
    assert (info.runtime, info.precision) == ("onnxruntime-cpu", "fp32")
    assert info.matryoshka_dimensions == () and info.query_instruction is None
