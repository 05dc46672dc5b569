"""MM-Embed served by a real tritonserver, against the independent reference forward in tests/.

A tiny random checkpoint in the official layout is exported as ONNX graphs (onnxruntime-cpu) and for the
torch runtime in bf16 on the CPU. Text documents and queries, images alone, images with texts, image
queries with and without a task go through the typed client; per-item texts through plain tritonclient;
bad items fail alone, naming their index.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from gateway_server import running_gateway
from image_files import encode, photo
from nvembed_reference import ReferenceMMEmbed
from PIL import Image

from mmembed.client import EmbeddingClient, InvalidInputError
from mmembed.core.numeric_gate import MIN_COSINE
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.gateway.app import GatewaySettings
from mmembed.serving.server import ServerSettings, TritonServer

PHOTOS = [encode(photo(96, 72, seed=seed), "JPEG") for seed in range(3)]
TEXTS = ["a cat on a red car", "", "two dogs in the city at night " * 3]
TASK = "Retrieve images that match the description"
MODELS = {"mm_embed": "fp32", "mm_embed_torch": "bf16"}


@pytest.fixture(scope="module")
def mm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mm-embed-checkpoint")
    get_family("mm_embed").make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="module")
def mm_server(mm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repository = tmp_path_factory.mktemp("mm-embed-repository")
    family = get_family("mm_embed")
    export_model(ExportRequest(family=family, checkpoint=mm_checkpoint, repository=repository), log=print)
    torch_request = ExportRequest(
        family=family,
        checkpoint=mm_checkpoint,
        repository=repository,
        name="mm_embed_torch",
        runtime=Runtime.TORCH,
        precision=Precision.BF16,
        device="cpu",
    )
    export_model(torch_request, log=print)
    with TritonServer(ServerSettings.on_free_ports(repository)) as server:
        yield server


@pytest.fixture(scope="module")
def reference(mm_checkpoint: Path) -> ReferenceMMEmbed:
    return ReferenceMMEmbed(mm_checkpoint)


def _pictures() -> list[Image.Image]:
    return [Image.open(io.BytesIO(data)) for data in PHOTOS]


def test_every_ensemble_of_both_runtimes_passed_the_load_gate(mm_server: TritonServer) -> None:
    reports = {report.tower: report for report in mm_server.gate_reports}
    for model, precision in MODELS.items():
        for modality in ("text", "query", "image", "image_query"):
            report = reports[f"{model}_{modality} served"]
            assert report.precision == precision and report.min_cosine >= MIN_COSINE[precision], report.line()


def test_the_model_describes_what_it_takes(mm_server: TritonServer) -> None:
    with EmbeddingClient(mm_server.grpc_url) as client:
        info = client.model_info("mm_embed")
    assert info.modalities == ("image", "image_query", "query", "text") and info.image_with_text
    assert info.query_instruction == "Query: " and info.instruction_template == "Instruct: {task}\nQuery: "
    assert info.image_size == (56, 56) and info.max_text_length == 512


@pytest.mark.parametrize("model", list(MODELS))
def test_every_kind_of_input_matches_the_reference_forward(
    mm_server: TritonServer, reference: ReferenceMMEmbed, model: str
) -> None:
    minimum = MIN_COSINE[MODELS[model]]
    pairs = list(zip(PHOTOS, TEXTS, strict=True))
    pictures = list(zip(_pictures(), TEXTS, strict=True))
    texts = [text for text in TEXTS if text]
    with EmbeddingClient(mm_server.grpc_url) as client:
        served = {
            "images": client.embed_images(model, PHOTOS),
            "pairs": client.embed_multimodal(model, pairs),
            "image queries": client.embed_multimodal(model, pairs, query=True),
            "tasked image queries": client.embed_multimodal(model, pairs, query=True, instruction=TASK),
            "texts": client.embed_texts(model, texts),
            "queries": client.embed_texts(model, texts, query=True),
            "tasked queries": client.embed_texts(model, texts, query=True, instruction=TASK),
        }
    expected = {
        "images": reference.embed_items([(picture, "") for picture, _ in pictures], query=False),
        "pairs": reference.embed_items(pictures, query=False),
        "image queries": reference.embed_items(pictures, query=True),
        "tasked image queries": reference.embed_items(pictures, query=True, instruction=TASK),
        "texts": reference.embed_items([(None, text) for text in texts], query=False),
        "queries": reference.embed_items([(None, text) for text in texts], query=True),
        "tasked queries": reference.embed_items([(None, text) for text in texts], query=True, instruction=TASK),
    }
    for kind, vectors in served.items():
        assert (vectors * expected[kind]).sum(axis=1).min() >= minimum, kind


def test_a_raw_request_carries_a_text_per_image(mm_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(mm_server.grpc_url)
    inputs = []
    for name, items in (("IMAGE", PHOTOS), ("TEXT", [text.encode() for text in TEXTS])):
        tensor = grpcclient.InferInput(name, [len(items), 1], "BYTES")
        tensor.set_data_from_numpy(np.array(items, dtype=object).reshape(-1, 1))
        inputs.append(tensor)
    raw = client.infer("mm_embed_image", inputs).as_numpy("EMBEDDING")
    with EmbeddingClient(mm_server.grpc_url) as typed:
        pairs = typed.embed_multimodal("mm_embed", list(zip(PHOTOS, TEXTS, strict=True)))
    assert np.allclose(raw, pairs, atol=1e-6)


def test_a_bad_image_fails_alone_naming_its_index(mm_server: TritonServer) -> None:
    pairs = [(PHOTOS[0], "fine"), (b"not an image", "broken"), (PHOTOS[1], "")]
    with EmbeddingClient(mm_server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match=r"^item 1: cannot identify image format") as raised:
            client.embed_multimodal("mm_embed", pairs, query=True, instruction=TASK)
        assert raised.value.index == 1
        partial = client.embed_multimodal("mm_embed", pairs, query=True, instruction=TASK, on_error="skip")
    assert list(partial.indexes) == [0, 2] and set(partial.errors) == {1}


def test_a_query_with_nothing_left_to_pool_is_refused_not_embedded_as_nan(mm_server: TritonServer) -> None:
    """An empty text after a task: the reference's pool mask hides every token (0/0); we refuse it."""
    with (
        EmbeddingClient(mm_server.grpc_url) as client,
        pytest.raises(InvalidInputError, match=r"^item 1: no token is left to embed") as raised,
    ):
        client.embed_texts("mm_embed", ["fine", ""], query=True, instruction=TASK)
    assert raised.value.index == 1


def test_the_gateway_sends_image_queries_to_the_image_query_ensemble(mm_server: TritonServer) -> None:
    """OpenAI-style bodies: images with input_type "query" (and a task) are MM-Embed image queries; without
    it they are embedded as documents, as embed_images does."""
    uri = "data:image/jpeg;base64," + base64.b64encode(PHOTOS[0]).decode()
    with running_gateway(GatewaySettings(triton_url=mm_server.grpc_url, api_keys=())) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def vector(**extra: object) -> np.ndarray:
            answer = client.embeddings.create(
                model="mm_embed",
                input=[{"image": uri}],
                encoding_format="float",
                extra_body=extra,  # type: ignore[list-item]
            )
            return np.array(answer.data[0].embedding, dtype=np.float32)

        as_query = vector(input_type="query", instruction=TASK)
        as_document = vector()
    with EmbeddingClient(mm_server.grpc_url) as typed:
        expected_query = typed.embed_multimodal("mm_embed", [(PHOTOS[0], "")], query=True, instruction=TASK)[0]
        expected_document = typed.embed_images("mm_embed", [PHOTOS[0]])[0]
    assert np.allclose(as_query, expected_query, atol=1e-5) and np.allclose(as_document, expected_document, atol=1e-5)
    assert float(as_query @ as_document) < 0.9999  # a query is not the document
