"""The command line, end to end: export prints parity, embed prints JSON, serve names the failing model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import JINA_MODEL, MODEL
from image_files import encode, photo

from mmembed.serve import ServeError, ServerSettings, TritonServer


def mmembed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmembed.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_embed_queries_with_matryoshka_dimensions(server: TritonServer) -> None:
    args = ("embed", "--url", server.grpc_url, "--model", JINA_MODEL, "--text", "红色的汽车", "--dimensions", "16")
    result = mmembed(*args, "--query")
    assert result.returncode == 0, result.stderr
    query = json.loads(result.stdout)["texts"][0]["embedding"]
    document = json.loads(mmembed(*args).stdout)["texts"][0]["embedding"]
    assert len(query) == len(document) == 16 and query != document
    refused = mmembed(*args[:-1], "17")
    assert refused.returncode != 0 and "supports dimensions 16, 32, 64, not 17" in refused.stderr


def test_embed_prints_vectors_and_similarity(server: TritonServer, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode(photo(), "JPEG"))
    result = mmembed("embed", "--url", server.grpc_url, "--model", MODEL, "--image", str(image), "--text", "a cat")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert len(output["images"][0]["embedding"]) == 64 and output["texts"][0]["text"] == "a cat"
    similar = mmembed(
        "embed",
        "--url",
        server.grpc_url,
        "--model",
        MODEL,
        "--image",
        str(image),
        "--text",
        "a",
        "--text",
        "b",
        "--similarity",
    )
    matrix = json.loads(similar.stdout)["cosine"]
    assert len(matrix) == 1 and len(matrix[0]) == 2 and all(-1 <= c <= 1 for c in matrix[0])


def test_embed_reports_bad_input_in_one_line(server: TritonServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a broken")
    result = mmembed("embed", "--url", server.grpc_url, "--model", MODEL, "--image", str(bad))
    assert result.returncode == 1
    assert "item 0: cannot identify image format" in result.stderr and "Traceback" not in result.stderr


def test_serve_names_the_model_that_failed_to_load(repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "repository"
    subprocess.run(["cp", "-r", str(repository), str(broken)], check=True)
    (broken / f"{MODEL}_vision_encoder" / "1" / "model.onnx").write_bytes(b"not a graph")
    settings = ServerSettings.on_free_ports(broken)
    with pytest.raises(ServeError) as error:
        TritonServer(settings).start()
    assert f"'{MODEL}_vision_encoder'" in str(error.value)
    assert "full log:" in str(error.value)


def test_serve_without_repository_is_a_clear_error(tmp_path: Path) -> None:
    result = mmembed("serve", "--repository", str(tmp_path / "missing"))
    assert result.returncode == 1 and "does not exist" in result.stderr
