"""The command line, end to end: export prints parity, embed prints JSON, serve names the failing model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import JINA_MODEL, MODEL
from image_files import encode, photo

from mmembed.client import EmbeddingClient
from mmembed.core.preprocessing import DISPLAY_DECODE, SETTINGS_FILE, ImageSettings
from mmembed.serving.server import ServeError, ServerSettings, TritonServer


def mmembed(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mmembed.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env, input=stdin)


def test_embed_takes_long_texts_from_files_and_standard_input(
    server: TritonServer, client: EmbeddingClient, tmp_path: Path
) -> None:
    long_text = "A long document about red cars and small houses, line after line.\n" * 400  # about 27 kB
    path = tmp_path / "document.txt"
    path.write_text(long_text)
    common = ("embed", "--url", server.grpc_url, "--model", JINA_MODEL)
    result = mmembed(*common, "--text", "a cat", "--text-file", str(path), "--text-file", "-", stdin="from stdin\n")
    assert result.returncode == 0, result.stderr
    texts = json.loads(result.stdout)["texts"]
    assert [entry.get("text", entry.get("file")) for entry in texts] == ["a cat", str(path), "-"]
    expected = client.embed_texts(JINA_MODEL, ["a cat", long_text.removesuffix("\n"), "from stdin"])
    np.testing.assert_allclose([entry["embedding"] for entry in texts], expected, atol=1e-5)
    missing = mmembed(*common, "--text-file", str(tmp_path / "missing.txt"))
    assert missing.returncode == 1 and "cannot read text file" in missing.stderr


def _hub_cache(checkpoint: Path, home: Path, model_id: str) -> Path:
    """CHECKPOINT laid out as huggingface_hub caches a download under HF_HOME: files stored once by
    content hash in blobs/, a snapshot folder of links per commit, refs/main naming that commit."""
    commit = hashlib.sha1(model_id.encode()).hexdigest()
    root = home / "hub" / f"models--{model_id.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in checkpoint.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        (root / "blobs" / digest).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / digest)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_export_takes_a_hub_model_id_from_the_cache_offline(checkpoint: Path, tmp_path: Path) -> None:
    """`--checkpoint org/name [--revision R]` goes through huggingface_hub: its cache, HF_HOME and offline
    mode. This export also asks for the display decoding, which the repository then records."""
    snapshot = _hub_cache(checkpoint, tmp_path / "hf", "acme/siglip2-tiny")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    repository = tmp_path / "repository"
    export = ("export", "siglip2", "--checkpoint", "acme/siglip2-tiny", "--repository", str(repository))
    result = mmembed(*export, "--revision", snapshot.name, "--name", "hub", "--image-decode", "display", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads((repository / "hub_l2_normalize" / "export_report.json").read_text())
    assert report["checkpoint"] == str(snapshot.resolve())
    settings = ImageSettings.from_json((repository / "hub_image_preprocess" / "1" / SETTINGS_FILE).read_text())
    assert settings.decode == DISPLAY_DECODE
    assert (
        'key: "mmembed.image_decode"\n  value {\n    string_value: "display"'
        in (repository / "hub_image" / "config.pbtxt").read_text()
    )
    for arguments, message in (
        (("--revision", "v9"), "acme/siglip2-tiny at revision v9 is not in the Hugging Face cache"),
        (("--checkpoint", "acme/other"), "acme/other is not in the Hugging Face cache"),
        (("--checkpoint", str(tmp_path / "nope")), f"checkpoint folder {tmp_path / 'nope'} does not exist"),
    ):
        refused = mmembed(*export, *arguments, env=env)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


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


def test_serve_refuses_ports_another_server_holds(server: TritonServer) -> None:
    """The session's server holds its ports. A second one on the same HTTP port used to report "ready",
    run its load gate against the first, and restart itself over and over while saying "recovered"."""
    held = server.settings.http_port
    settings = replace(ServerSettings.on_free_ports(server.settings.repository), http_port=held)
    with pytest.raises(ServeError, match=f"HTTP port {held} is already in use"):
        TritonServer(settings).start()
    result = mmembed("serve", "--repository", str(server.settings.repository), "--grpc-port", str(held))
    assert result.returncode == 1 and f"gRPC port {held} is already in use" in result.stderr, result.stderr
    with urllib.request.urlopen(f"http://localhost:{held}/v2", timeout=10) as answer:
        assert json.loads(answer.read())["name"].startswith("mmembed-")  # the server each probe checks for
    assert f"{MODEL}_image" in server.ready_models()
