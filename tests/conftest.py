"""Session fixtures: tiny SigLIP-2 and JinaCLIP-v2 checkpoints, one repository with both exported, and a
real tritonserver on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, SiglipModel

from mmembed.client import EmbeddingClient
from mmembed.core.types import Precision, Runtime
from mmembed.export import BatchingOptions, ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer

MODEL = "siglip2"  # onnxruntime-cpu, fp32: the CI reference path
TORCH_MODEL = "siglip2_torch_bf16"  # runtime torch on the CPU, bf16, image preprocessing in torch
JINA_MODEL = "jinaclip2"  # onnxruntime-cpu, fp32, with its query ensemble and Matryoshka sizes
JINA_TORCH_MODEL = "jinaclip2_torch_bf16"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("siglip2-tiny")
    get_family("siglip2").make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="session")
def jina_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("jinaclip2-tiny")
    get_family("jinaclip2").make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="session")
def repository(checkpoint: Path, jina_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repository")
    family = get_family("siglip2")
    export_model(ExportRequest(family=family, checkpoint=checkpoint, repository=folder, name=MODEL))
    torch_request = ExportRequest(
        family=family,
        checkpoint=checkpoint,
        repository=folder,
        name=TORCH_MODEL,
        runtime=Runtime.TORCH,
        precision=Precision.BF16,
        device="cpu",
        image_preprocess="torch",  # on a GPU: nvJPEG; here Pillow decodes, torch resizes
        batching=BatchingOptions(preprocess_instances=1),
    )
    export_model(torch_request)
    jina = get_family("jinaclip2")
    export_model(ExportRequest(family=jina, checkpoint=jina_checkpoint, repository=folder, name=JINA_MODEL))
    export_model(replace(torch_request, family=jina, checkpoint=jina_checkpoint, name=JINA_TORCH_MODEL))
    return folder


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> tuple[SiglipModel, object]:
    return SiglipModel.from_pretrained(checkpoint).eval(), AutoProcessor.from_pretrained(checkpoint)


def reference_images(reference: tuple[SiglipModel, object], images: list[Image.Image]) -> np.ndarray:
    model, processor = reference
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # type: ignore[operator]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels).pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def reference_texts(reference: tuple[SiglipModel, object], texts: list[str]) -> np.ndarray:
    model, processor = reference
    ids = processor(  # type: ignore[operator]
        text=[t.lower() for t in texts],
        padding="max_length",
        max_length=64,
        truncation=True,
        return_tensors="pt",
    )["input_ids"]
    with torch.no_grad():
        features = model.get_text_features(input_ids=ids).pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def overflowing_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint with one MLP scaled up until its activations leave fp16's range (as SigLIP's real
    outlier features can), while fp32 still computes them."""
    shutil.copytree(checkpoint, folder)
    model = SiglipModel.from_pretrained(folder)
    with torch.no_grad():
        for layer in (model.vision_model.encoder.layers[0], model.text_model.encoder.layers[0]):
            layer.mlp.fc1.weight.mul_(300.0)
            layer.mlp.fc2.weight.mul_(300.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def server(repository: Path) -> Iterator[TritonServer]:
    settings = ServerSettings.on_free_ports(repository)
    with TritonServer(settings) as running:
        yield running


@pytest.fixture()
def client(server: TritonServer) -> Iterator[EmbeddingClient]:
    with EmbeddingClient(server.grpc_url) as embedding_client:
        yield embedding_client
