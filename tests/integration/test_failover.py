"""One client, several Triton endpoints: requests go round robin to both replicas; one replica is stopped in
the middle of a job, and every input is still embedded exactly once, by the other, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL
from server_stats import served

from mmembed.client import ClientOptions, EmbeddingClient
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer

TEXTS = [f"a photo of thing number {i}" for i in range(120)]
OPTIONS = ClientOptions(text_batch_size=2, max_in_flight=2, max_retries=20, retry_backoff_s=0.05, timeout_s=120)


@pytest.fixture()
def replicas(checkpoint: Path, tmp_path: Path) -> Iterator[list[TritonServer]]:
    request = ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=tmp_path, name=MODEL)
    export_model(request, log=lambda line: None)
    servers = [TritonServer(ServerSettings.on_free_ports(tmp_path)) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_requests_spread_over_replicas_and_survive_one_going_down(replicas: list[TritonServer]) -> None:
    first, second = replicas
    with EmbeddingClient(first.grpc_url) as single:
        expected = single.embed_texts(MODEL, TEXTS)
    before = served(replicas, f"{MODEL}_text", "requests")
    with EmbeddingClient([first.grpc_url, second.grpc_url], OPTIONS) as client:
        assert np.allclose(client.embed_texts(MODEL, TEXTS[:20]), expected[:20], atol=1e-6)
        after = served(replicas, f"{MODEL}_text", "requests", total=sum(before) + 10)
        spread = [now - count for now, count in zip(after, before, strict=True)]
        assert min(spread) >= 3 and sum(spread) == 10, spread  # 10 requests, round robin over both

        result: dict[str, np.ndarray] = {}
        job = threading.Thread(target=lambda: result.update(vectors=client.embed_texts(MODEL, TEXTS)))
        job.start()
        time.sleep(0.3)
        second.stop()  # mid-job: its in-flight and later requests fail over to the first replica
        job.join(timeout=120)
    assert "vectors" in result, "the job did not finish"
    assert result["vectors"].shape == expected.shape  # every input once, in order
    assert np.allclose(result["vectors"], expected, atol=1e-6)
