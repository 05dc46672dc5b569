"""`mmembed index --ray`: the job on a local Ray cluster (started with `ray start --head`, as a user would),
spread over two tritonservers. Every image is embedded exactly once, by one server or the other; a
re-run over a bigger source embeds only what is new; stored vectors equal the single-server client's."""

from __future__ import annotations

import csv
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL
from qdrant_client import QdrantClient
from server_stats import served
from test_index import photo_folder

from mmembed.client import EmbeddingClient
from mmembed.serving.server import ServerSettings, TritonServer, free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Token authentication, as Ray recommends for any cluster: the head and every driver share the token.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Ray cluster, as `ray start --head` makes it; its address."""
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        check=True, capture_output=True, env=RAY_ENV,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], check=False, capture_output=True, env=RAY_ENV)


@pytest.fixture(scope="module")
def second_server(repository: Path) -> Iterator[TritonServer]:
    with TritonServer(ServerSettings.on_free_ports(repository)) as replica:
        yield replica


def _index(source: Path, cluster: str, servers: list[TritonServer], qdrant: Path) -> list[str]:
    urls = ",".join(server.grpc_url for server in servers)
    finished = subprocess.run(
        [sys.executable, "-m", "mmembed.cli", "index", str(source), "--ray", "--ray-address", cluster,
         "--url", urls, "--model", MODEL, "--collection", "c", "--qdrant-path", str(qdrant), "--batch-size", "4"],
        capture_output=True, text=True, timeout=600, env=RAY_ENV,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    return finished.stdout.strip().splitlines()


def test_ray_job_spreads_over_two_servers_and_embeds_each_image_once(
    ray_cluster: str, server: TritonServer, second_server: TritonServer, tmp_path: Path
) -> None:
    servers = [server, second_server]
    images = photo_folder(tmp_path / "photos", 40)
    (images / "album-0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files = sorted(path for path in images.rglob("photo-*"))
    copy = images / "album-0" / "again.jpeg"  # photo 30 again, first in the folder: another batch and worker
    copy.write_bytes(files[30].read_bytes())
    listing = tmp_path / "first-half.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows({"path": str(path), "caption": f"photo number {i}"} for i, path in enumerate(files[:16]))
    qdrant = tmp_path / "qdrant"
    before = served(servers, f"{MODEL}_image", "items")

    first = _index(listing, ray_cluster, servers, qdrant)
    assert first[-1].startswith("indexed 16, skipped 0 (already there), failed 0")
    lines = _index(images, ray_cluster, servers, qdrant)
    assert lines[-1].startswith("indexed 24, skipped 17 (already there), failed 1")  # 16 stored, the copy
    assert lines[0].startswith(f"failed  {images / 'album-0' / 'broken.jpg'}: ") and "truncated" in lines[0]

    # Each photo embedded once, the copy too (workers do not know of each other; the driver stores it once),
    # the broken file failing in preprocessing, uncounted. Both servers took some: 7+ batches of new images
    # went to at most 4 workers, and a worker's image requests alternate servers.
    after = served(servers, f"{MODEL}_image", "items", total=sum(before) + 41)
    embedded = [now - count for now, count in zip(after, before, strict=True)]
    assert sum(embedded) == 41 and min(embedded) > 0, embedded

    client = QdrantClient(path=str(qdrant))
    try:
        records, _ = client.scroll("c", limit=100, with_payload=True, with_vectors=True)
    finally:
        client.close()
    by_path = {r.payload["path"]: r for r in records if r.payload}
    stored_as = str(copy) if str(copy) in by_path else str(files[30])  # whichever reached the driver first
    assert len(records) == 40 and set(by_path) == {str(p) for p in files} - {str(files[30])} | {stored_as}
    by_path[str(files[30])] = by_path[stored_as]
    with EmbeddingClient(server.grpc_url) as direct:
        expected_images = direct.embed_images(MODEL, [path.read_bytes() for path in files])
        expected_captions = direct.embed_texts(MODEL, [f"photo number {i}" for i in range(16)])
    for i, path in enumerate(files):
        vectors = by_path[str(path)].vector
        assert isinstance(vectors, dict)
        assert np.allclose(vectors["image"], expected_images[i], atol=1e-5)
        if i < 16:
            assert by_path[str(path)].payload == {**by_path[str(path)].payload, "caption": f"photo number {i}"}
            assert np.allclose(vectors["caption"], expected_captions[i], atol=1e-5)
        else:
            assert "caption" not in vectors
