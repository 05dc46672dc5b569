"""An exported repository serves from a Python that has only the run-time packages (deploy/
serve-requirements.txt: numpy<2, Pillow, tokenizers, onnxruntime) and no mmembed, as in an official
tritonserver container: the mmembed code each Python model runs travels beside its model.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL
from image_files import encode, photo

from mmembed.client import EmbeddingClient
from mmembed.core.numeric_gate import MIN_COSINE
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer

REQUIREMENTS = Path(__file__).resolve().parents[2] / "deploy" / "serve-requirements.txt"


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the serve requirements only."""
    folder = tmp_path_factory.mktemp("runtime-only-python")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    subprocess.run(install, check=True)
    return python


@pytest.fixture(scope="module")
def repository(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SigLIP-2 (image and text steps, ONNX encoders) and MM-Embed (instruction and image+text steps)."""
    folder = tmp_path_factory.mktemp("self-contained")
    export_model(ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=folder, name=MODEL))
    mm_checkpoint = tmp_path_factory.mktemp("mm-embed")
    get_family("mm_embed").make_checkpoint("tiny", mm_checkpoint)
    export_model(ExportRequest(family=get_family("mm_embed"), checkpoint=mm_checkpoint, repository=folder))
    return folder


@pytest.fixture(scope="module")
def server(repository: Path, runtime_python: Path) -> Iterator[TritonServer]:
    settings = ServerSettings.on_free_ports(repository)
    with TritonServer(ServerSettings(**{**settings.__dict__, "stub_python": runtime_python})) as server:
        yield server


def test_the_runtime_python_has_no_mmembed(runtime_python: Path, tmp_path: Path) -> None:
    command = [str(runtime_python), "-c", "import mmembed"]
    found = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)  # not beside the source tree
    assert found.returncode != 0 and "No module named 'mmembed'" in found.stderr


def test_every_python_model_carries_the_code_it_runs(repository: Path) -> None:
    for model in repository.glob("*/1/model.py"):
        copied = model.parent / "mmembed"
        assert (copied / "__init__.py").is_file() and (copied / "runtime" / "glue.py").is_file(), model
        assert not (copied / "client").exists() and not (copied / "export").exists(), model


def test_it_serves_and_passes_the_load_gate_without_mmembed(server: TritonServer) -> None:
    towers = {report.tower for report in server.gate_reports}
    assert {f"{MODEL}_image served", f"{MODEL}_text served", "mm_embed_image_query served"} <= towers
    for report in server.gate_reports:
        assert report.min_cosine >= MIN_COSINE["fp32"], report.line()


def test_it_embeds_as_a_server_with_mmembed_installed(server: TritonServer, client: EmbeddingClient) -> None:
    image = encode(photo(80, 60, seed=3), "JPEG")
    with EmbeddingClient(server.grpc_url) as alone:
        vectors = alone.embed_images(MODEL, [image])
        texts = alone.embed_texts(MODEL, ["a photo of a cat"])
        pair = alone.embed_multimodal("mm_embed", [(image, "a cat")], query=True, instruction="Find the photo")
    assert np.allclose(vectors, client.embed_images(MODEL, [image]), atol=1e-6)
    assert np.allclose(texts, client.embed_texts(MODEL, ["a photo of a cat"]), atol=1e-6)
    assert pair.shape == (1, 64) and np.isclose(np.linalg.norm(pair), 1.0)
