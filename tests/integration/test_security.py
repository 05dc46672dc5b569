"""TLS and the API key, against a real tritonserver: without them nothing but health gets through."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from conftest import MODEL
from tritonclient.utils import InferenceServerException

from mmembed.client import AccessDeniedError, ClientOptions, EmbeddingClient, ServerUnavailableError
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer

KEY = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl, as an operator would make one)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def secure_server(
    checkpoint: Path, certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    repository = tmp_path_factory.mktemp("secure-repository")
    request = ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=repository, name=MODEL)
    export_model(request, log=lambda line: None)
    cert, key = certificate
    settings = replace(ServerSettings.on_free_ports(repository), tls_cert=cert, tls_key=key, api_key=KEY)
    with TritonServer(settings) as running:
        yield running


def test_tls_and_key_embed(secure_server: TritonServer, certificate: tuple[Path, Path]) -> None:
    options = ClientOptions(ssl=True, root_certificates=str(certificate[0]), api_key=KEY)
    with EmbeddingClient(secure_server.grpc_url, options) as client:
        assert client.embed_texts(MODEL, ["a secure cat"]).shape == (1, 64)
        assert [info.name for info in client.list_models()] == [MODEL]


def test_plaintext_is_refused(secure_server: TritonServer) -> None:
    options = ClientOptions(max_retries=0, api_key=KEY)
    with EmbeddingClient(secure_server.grpc_url, options) as client, pytest.raises(ServerUnavailableError):
        client.embed_texts(MODEL, ["x"])


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_missing_or_wrong_key_is_refused_and_not_retried(
    secure_server: TritonServer, certificate: tuple[Path, Path], key: str | None
) -> None:
    options = ClientOptions(ssl=True, root_certificates=str(certificate[0]), api_key=key)
    with EmbeddingClient(secure_server.grpc_url, options) as client:
        with pytest.raises(AccessDeniedError, match="protocol is restricted"):
            client.embed_texts(MODEL, ["x"])
        with pytest.raises(AccessDeniedError):
            client.list_models()


def test_health_stays_open_for_load_balancers(secure_server: TritonServer, certificate: tuple[Path, Path]) -> None:
    raw = grpcclient.InferenceServerClient(secure_server.grpc_url, ssl=True, root_certificates=str(certificate[0]))
    try:
        assert raw.is_server_ready() and raw.is_server_live()
    finally:
        raw.close()


def test_admin_protocols_are_locked_by_default(server: TritonServer) -> None:
    """The plain test server has no API key; its logging, trace, shared-memory and model-repository APIs
    (load, unload: with explicit model control a load can install code) are still locked."""
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        calls = [raw.get_log_settings, raw.get_trace_settings, raw.get_system_shared_memory_status]
        calls += [raw.get_model_repository_index, lambda: raw.unload_model(f"{MODEL}_image")]
        calls += [lambda: raw.load_model(f"{MODEL}_image")]
        for call in calls:
            with pytest.raises(InferenceServerException, match="protocol is restricted"):
                call()
        assert raw.is_model_ready(f"{MODEL}_image")
    finally:
        raw.close()
