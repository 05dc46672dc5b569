"""Runtime torch with encoders compiled ahead of time: export compiles both SigLIP-2 towers (AOTInductor,
bf16, this CPU), tritonserver loads the packages without compiling, and the served embeddings match the
fp32 ONNX model of the same checkpoint within bf16's tolerance. A package that another torch built is
refused at start, with the reason in the error."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL
from image_files import encode, photo

from mmembed.client import EmbeddingClient
from mmembed.core.numeric_gate import MIN_COSINE, row_cosines
from mmembed.core.types import Precision, Runtime
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.runtime.compiled_engine import ENGINE_FOLDER, EngineBuild
from mmembed.serving.server import ServeError, ServerSettings, TritonServer

COMPILED = "siglip2_compiled"


@pytest.fixture(scope="module")
def compiled_repository(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("compiled-repository")
    request = ExportRequest(
        family=get_family("siglip2"),
        checkpoint=checkpoint,
        repository=repository,
        name=COMPILED,
        runtime=Runtime.TORCH,
        precision=Precision.BF16,
        device="cpu",
        compile=True,
    )
    lines: list[str] = []
    export_model(request, log=lines.append)
    assert sum("compiled siglip2_compiled_" in line and "(AOTInductor) for cpu" in line for line in lines) == 2
    return repository


@pytest.fixture(scope="module")
def compiled_server(compiled_repository: Path) -> Iterator[TritonServer]:
    with TritonServer(ServerSettings.on_free_ports(compiled_repository)) as server:
        yield server


def test_compiled_towers_are_served_and_match_fp32(compiled_server: TritonServer, server: TritonServer) -> None:
    photos = [encode(photo(64 + 8 * i, 48 + 8 * i, seed=i), "JPEG") for i in range(5)]
    texts = ["a photo of a cat", "two dogs on a beach", "", "é 猫 🐱", "the city at night " * 20]
    with EmbeddingClient(compiled_server.grpc_url) as compiled, EmbeddingClient(server.grpc_url) as reference:
        pairs = [
            (compiled.embed_images(COMPILED, photos), reference.embed_images(MODEL, photos)),
            (compiled.embed_texts(COMPILED, texts), reference.embed_texts(MODEL, texts)),
            (compiled.embed_texts(COMPILED, texts, query=True), reference.embed_texts(MODEL, texts, query=True)),
        ]
    for served, expected in pairs:
        assert row_cosines(served, expected).min() >= MIN_COSINE["bf16"]
    log = compiled_server.log_file.read_text() if compiled_server.log_file else ""
    assert "mmembed: gate passed" in log


def test_a_package_built_by_another_torch_is_refused_at_start(compiled_repository: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repository"
    shutil.copytree(compiled_repository, copy)
    engine = copy / f"{COMPILED}_vision_encoder" / "1" / ENGINE_FOLDER
    build = EngineBuild.load(engine)
    dataclasses.replace(build, target=dataclasses.replace(build.target, torch_version="2.11.0+cu130")).save(engine)
    with pytest.raises(ServeError, match=r"built with torch 2\.11\.0\+cu130 .* export again with --compile"):
        TritonServer(ServerSettings.on_free_ports(copy)).start()
    assert np.isfinite(build.seconds)
