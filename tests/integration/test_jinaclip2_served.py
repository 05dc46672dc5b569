"""JinaCLIP-v2 through the real tritonserver: parity with an independent forward on the official weights,
many scripts, truncation, queries vs documents, Matryoshka sizes, bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from conftest import JINA_MODEL, JINA_TORCH_MODEL
from family_settings import image_settings, text_settings
from image_files import encode, photo
from jina_reference import JinaReference
from tritonclient.utils import InferenceServerException

from mmembed.client import EmbeddingClient, InvalidInputError
from mmembed.core.numeric_gate import row_cosines
from mmembed.core.preprocessing import TextTokenizer, decode_image, preprocess_image
from mmembed.families import get_family
from mmembed.serving.server import TritonServer

FAMILY = get_family("jinaclip2")
MULTILINGUAL = [
    "a photo of a cat on the street",
    "一张猫在街道上的照片",  # Chinese
    "猫の写真です",  # Japanese
    "صورة قطة في الشارع",  # Arabic
    "सड़क पर एक बिल्ली की तस्वीर",  # Devanagari (Hindi)
    "фото кошки на улице",  # Cyrillic
    "🐱🚗🌙 😀",  # emoji only
]


@pytest.fixture(scope="module")
def reference(jina_checkpoint: Path) -> JinaReference:
    return JinaReference(jina_checkpoint)


def _normalised(vectors: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(vectors, dim=-1).numpy()


def _reference_texts(checkpoint: Path, reference: JinaReference, texts: list[str], prefix: str = "") -> np.ndarray:
    """The checkpoint's tokenizer as the official encode_text uses it (pad to longest, truncate at the
    model's limit), run through the independent forward."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    limit = text_settings(FAMILY, checkpoint).max_length
    ids = tokenizer([prefix + t for t in texts], padding=True, truncation=True, max_length=limit, return_tensors="pt")
    with torch.no_grad():
        return _normalised(reference.text(ids["input_ids"]))


def test_served_images_match_the_reference(
    client: EmbeddingClient, jina_checkpoint: Path, reference: JinaReference
) -> None:
    settings = image_settings(FAMILY, jina_checkpoint)
    jpegs = [encode(photo(200 + 40 * s, 150 + 30 * s, seed=s), "JPEG", quality=90) for s in range(5)]
    pixels = np.stack([preprocess_image(decode_image(data, settings), settings) for data in jpegs])
    served = client.embed_images(JINA_MODEL, jpegs)
    with torch.no_grad():
        expected = _normalised(reference.image(torch.from_numpy(pixels)))
    assert served.shape == (5, 64)
    assert row_cosines(served, expected).min() >= 0.9999


def test_served_texts_in_many_scripts_match_the_reference(
    client: EmbeddingClient, jina_checkpoint: Path, reference: JinaReference
) -> None:
    served = client.embed_texts(JINA_MODEL, MULTILINGUAL)
    expected = _reference_texts(jina_checkpoint, reference, MULTILINGUAL)
    assert row_cosines(served, expected).min() >= 0.9999
    similarities = served @ served.T
    assert similarities[~np.eye(len(MULTILINGUAL), dtype=bool)].max() < 0.9999  # scripts are not all <unk>


def test_long_text_is_truncated_as_the_model_expects(
    client: EmbeddingClient, jina_checkpoint: Path, reference: JinaReference
) -> None:
    long_text = " ".join(["un chat rouge dans la ville la nuit"] * 40)
    served = client.embed_texts(JINA_MODEL, [long_text])
    np.testing.assert_allclose(served, _reference_texts(jina_checkpoint, reference, [long_text]), atol=1e-4)
    tokenizer = TextTokenizer(text_settings(FAMILY, jina_checkpoint), jina_checkpoint)
    assert (tokenizer([long_text]) != 1).all()  # it did fill the whole window


@pytest.mark.parametrize("model", [JINA_MODEL, JINA_TORCH_MODEL])
def test_concurrent_requests_of_different_lengths(server: TritonServer, model: str) -> None:
    """Each request is padded to its own longest text (16, 32 or 64 tokens here): sent at once, requests of
    different lengths must each still get exactly what they get alone."""
    texts = ["a cat", "cat " * 10, "一只猫 " * 30, "🐱", "fotos de gatos " * 3, "a dog"]
    with EmbeddingClient(server.grpc_url) as client:
        alone = [client.embed_texts(model, [text])[0] for text in texts]
        with ThreadPoolExecutor(len(texts)) as pool:
            together = list(pool.map(lambda text: client.embed_texts(model, [text])[0], texts * 3))
    for index, vector in enumerate(together):
        np.testing.assert_allclose(vector, alone[index % len(texts)], atol=1e-5)


def test_queries_get_the_instruction_documents_do_not(
    client: EmbeddingClient, jina_checkpoint: Path, reference: JinaReference
) -> None:
    texts = ["where is the red car", "红色的汽车在哪里"]
    instruction = text_settings(FAMILY, jina_checkpoint, "query").prefix
    assert instruction
    queries = client.embed_texts(JINA_MODEL, texts, query=True)
    documents = client.embed_texts(JINA_MODEL, texts)
    assert row_cosines(queries, _reference_texts(jina_checkpoint, reference, texts, instruction)).min() >= 0.9999
    assert row_cosines(documents, _reference_texts(jina_checkpoint, reference, texts)).min() >= 0.9999
    assert row_cosines(queries, documents).max() < 0.9999


def test_list_models_reports_matryoshka_sizes_and_queries(client: EmbeddingClient) -> None:
    (info,) = [model for model in client.list_models() if model.name == JINA_MODEL]
    assert (info.family, info.dimension, info.modalities) == ("jinaclip2", 64, ("image", "query", "text"))
    assert info.matryoshka_dimensions == (16, 32, 64)
    assert info.query_instruction == "Represent the query for retrieving evidence documents: "
    assert info.image_size == (56, 56) and info.max_text_length == 64


def test_matryoshka_dimensions_per_request(client: EmbeddingClient) -> None:
    images = [photo(seed=s) for s in range(3)]
    full = client.embed_images(JINA_MODEL, images)
    short = client.embed_images(JINA_MODEL, images, dimensions=16)
    assert short.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(short * np.linalg.norm(full[:, :16], axis=1, keepdims=True), full[:, :16], atol=1e-6)
    assert client.embed_texts(JINA_MODEL, ["a cat"], query=True, dimensions=32).shape == (1, 32)
    with pytest.raises(InvalidInputError, match="supports dimensions 16, 32, 64, not 48"):
        client.embed_texts(JINA_MODEL, ["a cat"], dimensions=48)


def test_torch_runtime_bf16_matches_the_reference(
    client: EmbeddingClient, jina_checkpoint: Path, reference: JinaReference
) -> None:
    """The same towers served by the torch runtime in bf16 (CPU here): within the bf16 gate."""
    settings = image_settings(FAMILY, jina_checkpoint)
    images = [photo(180, 140, seed=s) for s in range(3)]
    pixels = np.stack([preprocess_image(image, settings) for image in images])
    with torch.no_grad():
        expected = _normalised(reference.image(torch.from_numpy(pixels)))
    assert row_cosines(client.embed_images(JINA_TORCH_MODEL, images), expected).min() >= 0.999
    instruction = text_settings(FAMILY, jina_checkpoint, "query").prefix
    queries = client.embed_texts(JINA_TORCH_MODEL, MULTILINGUAL, query=True)
    expected_queries = _reference_texts(jina_checkpoint, reference, MULTILINGUAL, instruction or "")
    assert row_cosines(queries, expected_queries).min() >= 0.999


@pytest.mark.parametrize("ensemble", ["text", "query"])
def test_bad_text_fails_alone(client: EmbeddingClient, server: TritonServer, ensemble: str) -> None:
    tensor = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([["猫".encode()], [b"bad \xff\xfe"]], dtype=object))
    with grpcclient.InferenceServerClient(server.grpc_url) as raw, pytest.raises(InferenceServerException) as caught:
        raw.infer(f"{JINA_MODEL}_{ensemble}", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "item 1: text is not valid UTF-8 (byte 4" in caught.value.message()
    assert client.embed_texts(JINA_MODEL, ["still fine"], query=True).shape == (1, 64)
