"""Session fixtures: a tiny SigLIP-2 checkpoint, its exported repository, and a real tritonserver on it."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mmembed.client import EmbeddingClient
from mmembed.export import ExportRequest, export_model
from PIL import Image

from mmembed.families import get_family
from mmembed.serve import ServerSettings, TritonServer

MODEL = "siglip2"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("siglip2-tiny")
    get_family("siglip2").make_checkpoint("tiny", folder)
    return folder


@pytest.fixture(scope="session")
def repository(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repository")
    export_model(ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=folder, name=MODEL))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def server(repository: Path) -> Iterator[TritonServer]:
    settings = ServerSettings(
        repository=repository, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port()
    )
    with TritonServer(settings) as running:
        yield running


@pytest.fixture()
def client(server: TritonServer) -> Iterator[EmbeddingClient]:
    with EmbeddingClient(server.grpc_url) as embedding_client:
        yield embedding_client


def photo(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients plus noise, so resizing and JPEG both matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
