"""Recovery per model: one model's stub dies (or hangs) under load; the watchdog reloads that model alone;
requests to the other model never fail, and every request the client retried comes back right."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmembed.client import ClientOptions, EmbeddingClient, EmbeddingError
from mmembed.export import ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.server import ServerSettings, TritonServer
from mmembed.serving.watchdog import watch

TEXTS = [f"caption number {i}" for i in range(8)]
PATIENT = ClientOptions(max_retries=200, retry_backoff_s=0.05, timeout_s=120)  # rides out a reload


@pytest.fixture()
def server(checkpoint: Path, tmp_path: Path) -> Iterator[TritonServer]:
    """Two models from one checkpoint, "alpha" and "beta": separate Triton models, separate stubs."""
    for name in ("alpha", "beta"):
        request = ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=tmp_path, name=name)
        export_model(request, log=lambda line: None)
    with TritonServer(ServerSettings.on_free_ports(tmp_path)) as server:
        yield server


class Load:
    """Embeds TEXTS on a model in a loop from a thread, checking every answer against EXPECTED."""

    def __init__(self, server: TritonServer, model: str, expected: np.ndarray) -> None:
        self.client = EmbeddingClient(server.grpc_url, PATIENT)
        self.model, self.expected = model, expected
        self.calls, self.failures, self.wrong = 0, [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                got = self.client.embed_texts(self.model, TEXTS)
                self.wrong += int(not np.allclose(got, self.expected, atol=1e-5))
            except EmbeddingError as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            self.calls += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        self.client.close()


def _stubs_of(server: TritonServer, model: str) -> set[int]:
    return {pid for pid, name in server.stub_models().items() if name == model}


@pytest.mark.parametrize("breakage", [signal.SIGKILL, signal.SIGSTOP], ids=["dead stub", "hung stub"])
def test_one_broken_model_is_reloaded_alone_while_the_other_serves(server: TritonServer, breakage: int) -> None:
    with EmbeddingClient(server.grpc_url) as client:
        expected = {name: client.embed_texts(name, TEXTS) for name in ("alpha", "beta")}
    untouched = {pid for pid, name in server.stub_models().items() if not name.startswith("alpha_text")}
    log: list[str] = []
    stop = threading.Event()
    watchdog = threading.Thread(target=watch, args=(server, 0.5, stop, log.append), daemon=True)
    watchdog.start()
    try:
        with Load(server, "alpha", expected["alpha"]) as alpha, Load(server, "beta", expected["beta"]) as beta:
            time.sleep(1.0)
            (broken,) = _stubs_of(server, "alpha_text_encoder")
            os.kill(broken, breakage)
            deadline = time.monotonic() + 90
            while not any(line.startswith("recovered") for line in log) and time.monotonic() < deadline:
                time.sleep(0.2)
            calls_at_recovery = alpha.calls
            time.sleep(1.5)
    finally:
        stop.set()
        watchdog.join(timeout=30)
    assert any(line.startswith("recovered: alpha_text_encoder") for line in log), log
    assert "restarting tritonserver" not in " ".join(log), log
    assert beta.failures == [] and beta.wrong == 0 and beta.calls > 0  # the other model never failed
    assert alpha.failures == [] and alpha.wrong == 0  # retried through the reload, nothing lost or wrong
    assert alpha.calls > calls_at_recovery  # and served again after it
    assert _stubs_of(server, "alpha_text_encoder") and broken not in server.stub_pids()
    assert untouched <= server.stub_pids()  # no other stub was restarted
    assert server.problem() is None


PROBE = Path(__file__).resolve().parents[2] / "deploy" / "probe.py"


def _probe(server: TritonServer) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(PROBE), "--http-port", str(server.settings.http_port), "--timeout", "10"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_container_probe_fails_the_moment_a_stub_dies(server: TritonServer) -> None:
    """deploy/probe.py, the readiness and liveness probe of the container and the pod: healthy, it exits 0;
    after one encoder's stub dies, the very next probe exits 1 naming the ensemble (Triton's own readiness
    still says ready), and after the model is reloaded it passes again."""
    assert _probe(server).returncode == 0
    (broken,) = _stubs_of(server, "beta_vision_encoder")
    os.kill(broken, signal.SIGKILL)
    time.sleep(0.5)
    failed = _probe(server)
    assert failed.returncode == 1 and "beta_image: " in failed.stderr and "is not healthy" in failed.stderr
    assert "alpha" not in failed.stderr and "beta_text" not in failed.stderr
    server.recover_models(server.broken_models())
    assert _probe(server).returncode == 0
