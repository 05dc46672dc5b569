"""The OpenAI-compatible gateway, driven by the official `openai` package, in front of the real tritonserver:
vectors equal the typed client's, images and queries through OpenAI-style bodies, OpenAI's error JSON,
keys, limits, and no mix-ups under concurrency."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from conftest import JINA_MODEL, MODEL
from gateway_server import running_gateway
from image_files import encode, photo
from image_server import image_server

from mmembed.bench.gateway import compare, table
from mmembed.client import EmbeddingClient
from mmembed.gateway.app import GatewaySettings
from mmembed.gateway.fetch import FetchPolicy
from mmembed.serving.server import TritonServer

KEY = "sk-test-key"


PHOTO = encode(photo(80, 60, seed=7), "JPEG")


@pytest.fixture(scope="module")
def images_url() -> Iterator[str]:
    with image_server({"/photo.jpg": PHOTO}) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(server: TritonServer) -> Iterator[str]:
    """The gateway on a free port, in this process, in front of the session's tritonserver; it fetches
    image URLs from the loopback test server only."""
    settings = GatewaySettings(
        triton_url=server.grpc_url,
        api_keys=("sk-other", KEY),
        max_items=64,
        max_request_bytes=1024 * 1024,
        fetch=FetchPolicy(allowed_hosts=("127.0.0.1", "169.254.169.254"), allowed_networks=("127.0.0.1/32",)),
    )
    with running_gateway(settings) as url:
        yield url


@pytest.fixture()
def openai_client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)


def data_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def vectors(response: object) -> np.ndarray:
    """The response's vectors in index order; base64 ones (asked for explicitly, the openai package hands
    them over undecoded) decoded as OpenAI defines them: little-endian float32."""
    data = response.data  # type: ignore[attr-defined]
    assert [item.index for item in data] == list(range(len(data)))
    rows = [
        np.frombuffer(base64.b64decode(item.embedding), dtype="<f4")
        if isinstance(item.embedding, str)
        else item.embedding
        for item in data
    ]
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_texts_equal_the_typed_clients(
    openai_client: openai.OpenAI, client: EmbeddingClient, encoding_format: str
) -> None:
    texts = ["a photo of a cat", "two dogs on a beach", "a red car"]
    response = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format=encoding_format)  # type: ignore[arg-type]
    assert response.model == MODEL and response.object == "list"
    np.testing.assert_allclose(vectors(response), client.embed_texts(MODEL, texts), atol=1e-6)
    single = openai_client.embeddings.create(model=MODEL, input="a red car")
    np.testing.assert_allclose(vectors(single)[0], client.embed_texts(MODEL, ["a red car"])[0], atol=1e-6)


def test_images_and_texts_in_one_request_keep_their_order(
    openai_client: openai.OpenAI, client: EmbeddingClient
) -> None:
    jpegs = [encode(photo(64 + 16 * i, 48, seed=i), "JPEG") for i in range(3)]
    items = [
        {"text": "a cat"},
        {"image": data_uri(jpegs[0])},
        {"image": base64.b64encode(jpegs[1]).decode()},  # plain base64 works too
        "a dog",
        {"image": data_uri(jpegs[2])},
    ]
    got = vectors(openai_client.embeddings.create(model=MODEL, input=items))  # type: ignore[arg-type]
    images, texts = client.embed_images(MODEL, jpegs), client.embed_texts(MODEL, ["a cat", "a dog"])
    np.testing.assert_allclose(got, np.stack([texts[0], images[0], images[1], texts[1], images[2]]), atol=1e-6)
    # Infinity's shape: plain strings that are all images
    infinity = openai_client.embeddings.create(
        model=MODEL, input=[data_uri(jpegs[0])], extra_body={"modality": "image"}
    )
    np.testing.assert_allclose(vectors(infinity)[0], images[0], atol=1e-6)


def test_queries_and_matryoshka_dimensions(openai_client: openai.OpenAI, client: EmbeddingClient) -> None:
    texts = ["红色的汽车", "a red car"]
    response = openai_client.embeddings.create(
        model=JINA_MODEL, input=texts, dimensions=32, extra_body={"input_type": "query"}
    )
    got = vectors(response)
    assert got.shape == (2, 32)
    np.testing.assert_allclose(got, client.embed_texts(JINA_MODEL, texts, query=True, dimensions=32), atol=1e-6)
    documents = vectors(openai_client.embeddings.create(model=JINA_MODEL, input=texts, dimensions=32))
    assert not np.allclose(documents, got, atol=1e-3)  # documents go without the query instruction


def test_image_urls_from_allowed_hosts_are_fetched_and_private_ones_refused(
    openai_client: openai.OpenAI, client: EmbeddingClient, images_url: str
) -> None:
    fetched = openai_client.embeddings.create(model=MODEL, input=[{"image": f"{images_url}/photo.jpg"}])  # type: ignore[list-item]
    np.testing.assert_allclose(vectors(fetched)[0], client.embed_images(MODEL, [PHOTO])[0], atol=1e-6)
    metadata = f"{images_url}/redirect?to=http://169.254.169.254/latest/meta-data/"  # SSRF through a redirect
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.embeddings.create(model=MODEL, input=["a cat", {"image": metadata}])  # type: ignore[list-item]
    body = error(raised)
    assert body["code"] == "url_not_fetched"
    assert body["message"] == (
        "input[1]: image URL not fetched: 169.254.169.254 resolves to 169.254.169.254, a link-local address, "
        "which is not fetched"
    )


def error(raised: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, str]:
    body = raised.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    result: dict[str, str] = body["error"]
    return result


def test_a_bad_item_is_a_400_naming_its_index(openai_client: openai.OpenAI) -> None:
    items = ["fine", {"image": data_uri(encode(photo(32, 32, seed=1), "PNG"))}, {"image": data_uri(b"GIF89a broken")}]
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.embeddings.create(model=MODEL, input=items)  # type: ignore[arg-type]
    body = error(raised)
    assert body["message"].startswith("input[2]: cannot identify image format") and body["param"] == "input"
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]: the image is not valid base64"):
        openai_client.embeddings.create(model=MODEL, input=[{"image": "not base64!"}])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        ({"model": "no_such_model", "input": "x"}, 404, "model_not_found", "no model named 'no_such_model'"),
        ({"model": MODEL, "input": "x", "dimensions": 7}, 400, "invalid_input", "supports dimensions 64, not 7"),
        ({"model": MODEL, "input": ["x"] * 65}, 400, "too_many_items", "65 items, over this server's limit of 64"),
        ({"model": MODEL, "input": []}, 400, "empty_input", "at least one item"),
        (
            {"model": MODEL, "input": ["x", {"image": "https://images.example.com/cat.jpg"}]},
            400,
            "url_not_fetched",
            "input[1]: image URL not fetched: host images.example.com is not in this server's allow-list",
        ),
        ({"model": MODEL, "input": "x" * (2 * 1024 * 1024)}, 413, "request_too_large", "over this server's limit"),
        ({"model": MODEL, "input": [{"video": "x"}]}, 400, "invalid_request", "input"),
        (
            {"model": JINA_MODEL, "input": "x", "extra_body": {"instruction": "Given a question, retrieve"}},
            400,
            "invalid_input",
            "does not take a per-request instruction (its queries get 'Represent the query",
        ),
    ],
)
def test_errors_are_openais_error_objects(
    openai_client: openai.OpenAI, kwargs: dict[str, object], status: int, code: str, message: str
) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        openai_client.embeddings.create(**kwargs)  # type: ignore[call-overload]
    assert raised.value.status_code == status
    body = error(raised)
    assert body["code"] == code and message in body["message"]


def test_a_missing_or_wrong_key_is_a_401(gateway: str) -> None:
    caller = openai.OpenAI(base_url=f"{gateway}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        caller.embeddings.create(model=MODEL, input="x")
    assert error(raised)["code"] == "invalid_api_key"  # type: ignore[arg-type]
    request = urllib.request.Request(f"{gateway}/v1/embeddings", json.dumps({"model": MODEL, "input": "x"}).encode())
    with pytest.raises(urllib.error.HTTPError) as unsigned:  # no Authorization header at all
        urllib.request.urlopen(request, timeout=10)
    assert unsigned.value.code == 401
    assert json.loads(unsigned.value.read())["error"]["code"] == "invalid_api_key"


def test_models_health_and_metrics(openai_client: openai.OpenAI, gateway: str) -> None:
    cards = {card.id: card for card in openai_client.models.list()}
    assert {MODEL, JINA_MODEL} <= set(cards)
    jina = cards[JINA_MODEL].model_extra or {}
    assert jina["dimension"] == 64 and jina["matryoshka_dimensions"] == [16, 32, 64]
    assert jina["modalities"] == ["image", "query", "text"]
    with urllib.request.urlopen(f"{gateway}/health", timeout=10) as answer:
        assert answer.status == 200
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as answer:
        exposition = answer.read().decode()
    assert 'mmembed_gateway_requests_total{endpoint="/v1/embeddings",status="200"}' in exposition
    assert 'mmembed_gateway_errors_total{code="model_not_found"}' in exposition
    assert "mmembed_gateway_request_seconds_bucket" in exposition


def test_parallel_requests_are_never_mixed_up(gateway: str, client: EmbeddingClient) -> None:
    texts = [f"photo number {i} of a {'cat' if i % 2 else 'dog'}" for i in range(100)]
    expected = client.embed_texts(MODEL, texts)

    async def run() -> list[np.ndarray]:
        caller = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
        async with caller:
            calls = [caller.embeddings.create(model=MODEL, input=[text, "shared"]) for text in texts]
            return [vectors(response) for response in await asyncio.gather(*calls)]

    answers = asyncio.run(run())
    np.testing.assert_allclose(np.stack([answer[0] for answer in answers]), expected, atol=1e-6)
    shared = np.stack([answer[1] for answer in answers])
    np.testing.assert_allclose(shared, np.broadcast_to(shared[0], shared.shape), atol=1e-6)


def test_the_gateway_benchmark_measures_both_paths(server: TritonServer) -> None:
    """A one-second rehearsal of `python -m mmembed.bench.gateway`: every row measured (no speed asserted)."""
    rates = compare(server.grpc_url, MODEL, seconds=1.0, concurrency=2)
    assert [(rate.path, rate.kind) for rate in rates] == [
        ("gRPC", "texts"),
        ("gateway", "texts"),
        ("gRPC", "images"),
        ("gateway", "images"),
    ]
    assert all(rate.items_per_s > 0 and rate.p99_ms >= rate.p50_ms > 0 for rate in rates)
    assert table(rates).count("\n") == len(rates) + 1
