"""NV-Embed-v2 served by a real tritonserver, against the independent reference forward in tests/.

A tiny random checkpoint in the official layout (sharded safetensors, official config files) is exported
twice: as an ONNX graph (onnxruntime-cpu) and for the torch runtime in bf16 on the CPU. Documents,
queries with the default instruction, queries with a per-request task, per-item tasks in one raw request,
truncated texts and bad items are checked through the typed client and through plain tritonclient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from gateway_server import running_gateway
from nvembed_reference import DEFAULT_INSTRUCTION, ReferenceNVEmbed
from tritonclient.utils import InferenceServerException

from mmembed.client import EmbeddingClient, InvalidInputError
from mmembed.core.numeric_gate import MIN_COSINE
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.gateway.app import GatewaySettings
from mmembed.serving.server import ServerSettings, TritonServer

TEXTS = [
    "are judo throws allowed in wrestling?",
    "a photo of two cats on a red car",
    "the city at night " * 30,  # past the tiny checkpoint's 64 tokens: truncated, EOS lost
    "é 猫 🐱",
]
TASK = "Retrieve images that match the description"
MODELS = {"nvembed2": "fp32", "nvembed2_torch": "bf16"}


@pytest.fixture(scope="module")
def nvembed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nvembed2-checkpoint")
    get_family("nvembed2").make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="module")
def nvembed_server(nvembed_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repository = tmp_path_factory.mktemp("nvembed2-repository")
    family = get_family("nvembed2")
    export_model(ExportRequest(family=family, checkpoint=nvembed_checkpoint, repository=repository), log=print)
    torch_request = ExportRequest(
        family=family,
        checkpoint=nvembed_checkpoint,
        repository=repository,
        name="nvembed2_torch",
        runtime=Runtime.TORCH,
        precision=Precision.BF16,
        device="cpu",
    )
    export_model(torch_request, log=print)
    with TritonServer(ServerSettings.on_free_ports(repository)) as server:
        yield server


@pytest.fixture(scope="module")
def reference(nvembed_checkpoint: Path) -> ReferenceNVEmbed:
    return ReferenceNVEmbed(nvembed_checkpoint, max_length=64)


def test_both_ensembles_of_both_runtimes_passed_the_load_gate(nvembed_server: TritonServer) -> None:
    reports = {report.tower: report for report in nvembed_server.gate_reports}
    for model, precision in MODELS.items():
        for modality in ("text", "query"):
            report = reports[f"{model}_{modality} served"]
            assert report.precision == precision and report.min_cosine >= MIN_COSINE[precision], report.line()


def test_the_model_describes_its_instruction(nvembed_server: TritonServer) -> None:
    with EmbeddingClient(nvembed_server.grpc_url) as client:
        info = client.model_info("nvembed2")
    assert info.modalities == ("query", "text") and info.dimension == 64 and info.max_text_length == 64
    assert info.query_instruction == DEFAULT_INSTRUCTION
    assert info.instruction_template == "Instruct: {task}\nQuery: "


@pytest.mark.parametrize("model", list(MODELS))
def test_documents_and_queries_match_the_reference_forward(
    nvembed_server: TritonServer, reference: ReferenceNVEmbed, model: str
) -> None:
    minimum = MIN_COSINE[MODELS[model]]
    with EmbeddingClient(nvembed_server.grpc_url) as client:
        documents = client.embed_texts(model, TEXTS)
        queries = client.embed_texts(model, TEXTS, query=True)
        tasked = client.embed_texts(model, TEXTS, query=True, instruction=TASK)
    assert (documents * reference.embed(TEXTS)).sum(axis=1).min() >= minimum
    assert (queries * reference.embed(TEXTS, DEFAULT_INSTRUCTION)).sum(axis=1).min() >= minimum
    assert (tasked * reference.embed(TEXTS, f"Instruct: {TASK}\nQuery: ")).sum(axis=1).min() >= minimum
    # The instruction matters: the same text as a document, a default query and a tasked query differ.
    assert (documents * queries).sum(axis=1).max() < 0.999 and (queries * tasked).sum(axis=1).max() < 0.999


def _raw_query(url: str, texts: list[bytes], tasks: list[bytes]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, items in (("TEXT", texts), ("INSTRUCTION", tasks)):
        tensor = grpcclient.InferInput(name, [len(items), 1], "BYTES")
        tensor.set_data_from_numpy(np.array(items, dtype=object).reshape(-1, 1))
        inputs.append(tensor)
    result: np.ndarray = client.infer("nvembed2_query", inputs).as_numpy("EMBEDDING")
    return result


def test_each_item_of_a_raw_request_may_carry_its_own_task(
    nvembed_server: TritonServer, reference: ReferenceNVEmbed
) -> None:
    """Plain tritonclient, one request: a task per item, and an empty task meaning the default."""
    texts = [TEXTS[0], TEXTS[1], TEXTS[0]]
    served = _raw_query(nvembed_server.grpc_url, [t.encode() for t in texts], [TASK.encode(), b"", b"Find a quote"])
    expected = np.concatenate(
        [
            reference.embed([texts[0]], f"Instruct: {TASK}\nQuery: "),
            reference.embed([texts[1]], DEFAULT_INSTRUCTION),
            reference.embed([texts[2]], "Instruct: Find a quote\nQuery: "),
        ]
    )
    assert (served * expected).sum(axis=1).min() >= MIN_COSINE["fp32"]


def test_a_bad_instruction_fails_its_request_naming_the_item(nvembed_server: TritonServer) -> None:
    with pytest.raises(InferenceServerException, match=r"item 1: instruction: text is not valid UTF-8"):
        _raw_query(nvembed_server.grpc_url, [b"a", b"b"], [b"fine", b"\xff\xfe"])


def test_a_bad_text_fails_alone_and_the_rest_are_embedded(
    nvembed_server: TritonServer, reference: ReferenceNVEmbed
) -> None:
    texts = ["fine", "x" * (2 * 1024 * 1024), "also fine"]
    with EmbeddingClient(nvembed_server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match=r"^item 1: text is 2097152 bytes") as raised:
            client.embed_texts("nvembed2", texts, query=True, instruction=TASK)
        assert raised.value.index == 1
        partial = client.embed_texts("nvembed2", texts, query=True, instruction=TASK, on_error="skip")
    assert list(partial.indexes) == [0, 2] and set(partial.errors) == {1}
    expected = reference.embed(["fine", "also fine"], f"Instruct: {TASK}\nQuery: ")
    assert (partial.embeddings * expected).sum(axis=1).min() >= MIN_COSINE["fp32"]


def test_instructions_the_model_cannot_carry_are_refused_before_sending(nvembed_server: TritonServer) -> None:
    with EmbeddingClient(nvembed_server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match="applies to queries"):
            client.embed_texts("nvembed2", ["a"], instruction=TASK)
        with pytest.raises(InvalidInputError, match="instruction is empty"):
            client.embed_texts("nvembed2", ["a"], query=True, instruction=" ")


def test_the_openai_gateway_passes_the_task_through(nvembed_server: TritonServer, reference: ReferenceNVEmbed) -> None:
    """`instruction` in the body (the openai package's extra_body) makes the texts queries with that task."""
    with running_gateway(GatewaySettings(triton_url=nvembed_server.grpc_url, api_keys=())) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        response = client.embeddings.create(
            model="nvembed2", input=TEXTS[:2], encoding_format="float", extra_body={"instruction": TASK}
        )
        served = np.array([item.embedding for item in response.data], dtype=np.float32)
        assert (served * reference.embed(TEXTS[:2], f"Instruct: {TASK}\nQuery: ")).sum(axis=1).min() >= 0.9999
        with pytest.raises(openai.BadRequestError, match="applies to queries"):
            client.embeddings.create(
                model="nvembed2", input="a", extra_body={"instruction": TASK, "input_type": "document"}
            )
