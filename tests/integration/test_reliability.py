"""Bad input of every kind and overload, against the real tritonserver: each failure is a clear
per-request error, and the server stays ready and serves the next good request."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import MODEL
from image_files import encode, photo
from PIL import Image
from tritonclient.utils import InferenceServerException

from mmembed.client import (
    ClientOptions,
    EmbeddingClient,
    InvalidInputError,
    ServerOverloadedError,
)
from mmembed.core.sample_images import synthetic_jpeg
from mmembed.export import BatchingOptions, ExportRequest, export_model
from mmembed.families import get_family
from mmembed.serving.processes import group_members, wait_for_group_exit
from mmembed.serving.server import ServerSettings, TritonServer


def png_declaring(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims WIDTH x HEIGHT: a decompression bomb's calling card."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


BAD_FILES = {
    "pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", "cannot identify image format"),
    "html": (b"<!DOCTYPE html><html><body><img src='x.png'></body></html>", "cannot identify image format"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "cannot identify"),
    "bomb-10000x10000-png": (png_declaring(10000, 10000), "100000000 pixels, over the limit of 67108864"),
    "bomb-30000x30000-png": (png_declaring(30000, 30000), "declares too many pixels, over the limit of 67108864"),
}


def assert_still_serving(client: EmbeddingClient, server: TritonServer) -> None:
    assert client.embed_images(MODEL, [encode(photo(), "PNG")]).shape == (1, 64)
    assert client.embed_texts(MODEL, ["still here"]).shape == (1, 64)
    assert f"{MODEL}_image" in server.ready_models()


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_non_images_and_bombs_fail_alone(client: EmbeddingClient, server: TritonServer, case: str) -> None:
    data, message = BAD_FILES[case]
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=message):
        client.embed_images(MODEL, [data])
    assert time.monotonic() - started < 5  # the bomb is refused from its header, not decoded
    assert_still_serving(client, server)


def test_text_over_the_byte_limit(client: EmbeddingClient, server: TritonServer) -> None:
    with pytest.raises(InvalidInputError, match=r"item 0: text is 1100000 bytes, over the limit of 1048576"):
        client.embed_texts(MODEL, ["x" * 1_100_000])
    assert_still_serving(client, server)


def test_more_items_than_the_batch_limit(server: TritonServer) -> None:
    options = ClientOptions(image_batch_size=65)  # the client would normally split this
    with EmbeddingClient(server.grpc_url, options) as client:
        with pytest.raises(InvalidInputError, match="batch-size must be <= 64"):
            client.embed_images(MODEL, [encode(photo(), "PNG")] * 65)
        assert_still_serving(client, server)


@pytest.fixture()
def raw(server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    raw_client = grpcclient.InferenceServerClient(server.grpc_url)
    yield raw_client
    raw_client.close()


@pytest.mark.parametrize(
    ("name", "shape", "datatype", "message"),
    [
        ("WRONG", [1, 1], "BYTES", "unexpected inference input 'WRONG'"),
        ("IMAGE", [1, 1], "FP32", "data-type is 'FP32', but model 'siglip2_image' expects 'BYTES'"),
        ("IMAGE", [1, 2], "BYTES", "unexpected shape for input 'IMAGE'"),
    ],
)
def test_wrong_tensor_name_type_or_shape(
    raw: grpcclient.InferenceServerClient,
    client: EmbeddingClient,
    server: TritonServer,
    name: str,
    shape: list[int],
    datatype: str,
    message: str,
) -> None:
    tensor = grpcclient.InferInput(name, shape, datatype)
    if datatype == "BYTES":
        tensor.set_data_from_numpy(np.full(shape, b"x", dtype=object))
    else:
        tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        raw.infer(f"{MODEL}_image", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in caught.value.message(), caught.value.message()
    assert_still_serving(client, server)


def test_invalid_utf8_text(
    raw: grpcclient.InferenceServerClient, client: EmbeddingClient, server: TritonServer
) -> None:
    tensor = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"fine"], [b"bad \xff\xfe"]], dtype=object))
    with pytest.raises(InferenceServerException) as caught:
        raw.infer(f"{MODEL}_text", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "item 1: text is not valid UTF-8 (byte 4" in caught.value.message()
    assert_still_serving(client, server)


@pytest.fixture(scope="module")
def small_queue_server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One preprocessing instance and a queue of two requests: easy to flood."""
    repository = tmp_path_factory.mktemp("small-queue")
    batching = BatchingOptions(max_batch_size=4, preprocess_instances=1, max_queue_size=2, max_queue_delay_us=0)
    request = ExportRequest(
        family=get_family("siglip2"), checkpoint=checkpoint, repository=repository, name=MODEL, batching=batching
    )
    export_model(request, log=lambda line: None)
    with TritonServer(ServerSettings.on_free_ports(repository)) as running:
        yield running


def flood(server: TritonServer, options: ClientOptions, requests: int = 24) -> list[object]:
    """REQUESTS concurrent requests of four large photos each; each result is an array or the error."""
    images = [synthetic_jpeg(1600, 1200, seed=seed) for seed in range(4)]
    with EmbeddingClient(server.grpc_url, options) as client:

        def send(_: int) -> object:
            try:
                return client.embed_images(MODEL, images)
            except (ServerOverloadedError, InvalidInputError) as e:
                return e

        with ThreadPoolExecutor(requests) as pool:
            return list(pool.map(send, range(requests)))


def test_overload_is_rejected_fast_and_the_server_recovers(small_queue_server: TritonServer) -> None:
    started = time.monotonic()
    results = flood(small_queue_server, ClientOptions(max_retries=0, max_in_flight=24))
    rejected = [r for r in results if isinstance(r, ServerOverloadedError)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert rejected and served and len(rejected) + len(served) == len(results), results
    assert all("Exceeds maximum queue size" in str(error) for error in rejected)
    print(f"overload: {len(rejected)} of {len(results)} rejected, {time.monotonic() - started:.1f} s for the flood")
    with EmbeddingClient(small_queue_server.grpc_url) as client:
        assert client.embed_images(MODEL, [encode(photo(), "PNG")]).shape == (1, 64)


def test_client_retries_carry_a_flood_through(small_queue_server: TritonServer) -> None:
    results = flood(small_queue_server, ClientOptions(max_retries=20, retry_backoff_s=0.05, max_in_flight=24))
    assert all(isinstance(r, np.ndarray) for r in results), [r for r in results if not isinstance(r, np.ndarray)]


def test_a_server_restart_mid_job_loses_nothing(small_queue_server: TritonServer) -> None:
    """The server stops and starts again while a long job runs: the client retries while it cannot connect,
    and the job ends with every input embedded exactly once, in order."""
    import threading

    images = [encode(photo(48, 40, seed=seed), "PNG") for seed in range(48)]
    options = ClientOptions(image_batch_size=2, max_in_flight=1, max_retries=60, retry_backoff_s=0.2, timeout_s=120)
    with EmbeddingClient(small_queue_server.grpc_url, options) as client:
        expected = client.embed_images(MODEL, images)
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(0.5)
        small_queue_server.stop()
        small_queue_server.start()
        restarted.set()

    thread = threading.Thread(target=restart)
    with EmbeddingClient(small_queue_server.grpc_url, options) as client:
        thread.start()
        try:
            got = client.embed_images(MODEL, images * 4)  # long enough to span the restart
        finally:
            thread.join()
    assert restarted.is_set()
    np.testing.assert_allclose(got, np.concatenate([expected] * 4), atol=1e-5)


def test_a_crashed_stub_is_noticed_and_the_server_recovers(small_queue_server: TritonServer) -> None:
    """Triton neither restarts a crashed stub nor marks its model unready; mmembed notices from the
    processes and restarts the server, after which requests succeed again."""
    import os
    import signal

    from mmembed.client import ServerUnavailableError

    image = [encode(photo(), "PNG")]
    stubs = small_queue_server.stub_pids()
    assert len(stubs) >= 5 and small_queue_server.problem() is None
    vision = next(pid for pid in stubs if b"vision_encoder" in Path(f"/proc/{pid}/cmdline").read_bytes())
    os.kill(vision, signal.SIGKILL)
    time.sleep(0.5)
    with EmbeddingClient(small_queue_server.grpc_url, ClientOptions(image_batch_size=2)) as client:
        with pytest.raises(ServerUnavailableError, match="Stub process 'siglip2_vision_encoder_0_0' is not healthy"):
            client.embed_images(MODEL, image)
        problem = small_queue_server.problem()
        assert problem is not None and "stub process(es) died" in problem
        seconds = small_queue_server.recover()
        print(f"recovered in {seconds:.1f} s")
        assert small_queue_server.problem() is None
        assert client.embed_images(MODEL, image).shape == (1, 64)


def test_stop_leaves_no_process_behind(checkpoint: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    export_model(
        ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=repository, name=MODEL),
        log=lambda line: None,
    )
    server = TritonServer(ServerSettings.on_free_ports(repository))
    server.start()
    group = server._process.pid if server._process else 0
    assert len(group_members(group)) >= 6  # the server and its stubs
    server.stop()
    assert group_members(group) == []


def test_a_killed_parent_takes_its_server_along(checkpoint: Path, tmp_path: Path) -> None:
    """kill -9 (or the OOM killer) on the process that started the server runs no cleanup; the server
    and its stubs must still go, not keep the ports and the memory."""
    import subprocess
    import sys

    repository = tmp_path / "repository"
    export_model(
        ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=repository, name=MODEL),
        log=lambda line: None,
    )
    script = (
        "import sys, time; from pathlib import Path; from mmembed.serving.server import ServerSettings, TritonServer; "
        "server = TritonServer(ServerSettings.on_free_ports(Path(sys.argv[1]))); server.start(); "
        "print(server._process.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(repository)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    group = int(parent.stdout.readline())
    assert len(group_members(group)) >= 6  # the server and its stubs
    parent.kill()
    parent.wait()
    wait_for_group_exit(group, timeout_s=60)
    assert group_members(group) == []


def test_a_hung_stub_is_noticed_and_the_server_recovers(checkpoint: Path, tmp_path: Path) -> None:
    """A stub that is alive but stopped (SIGSTOP) fools Triton's readiness and the process list; the
    watchdog's probe request to its ensemble is answered "not healthy" (or not at all), the server is
    restarted, and requests succeed again."""
    import os
    import signal
    from dataclasses import replace

    repository = tmp_path / "repository"
    export_model(
        ExportRequest(family=get_family("siglip2"), checkpoint=checkpoint, repository=repository, name=MODEL),
        log=lambda line: None,
    )
    server = TritonServer(replace(ServerSettings.on_free_ports(repository), wedge_timeout_s=3))
    server.start()
    group = server._process.pid if server._process else 0
    try:
        assert server.problem() is None  # probes start; a healthy server answers them at once
        time.sleep(0.5)
        assert server.problem() is None
        stubs = server.stub_pids()
        text = next(pid for pid in stubs if b"text_encoder" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(text, signal.SIGSTOP)
        deadline, problem = time.monotonic() + 30, None
        while problem is None and time.monotonic() < deadline:
            time.sleep(0.5)
            problem = server.problem()
        assert problem is not None and f"{MODEL}_text:" in problem, problem
        assert "is not healthy" in problem or "hung stub" in problem, problem
        assert f"{MODEL}_image" not in problem  # the image path still answers
        print(f"{problem}; recovered in {server.recover():.1f} s")
        with EmbeddingClient(server.grpc_url) as client:
            assert client.embed_texts(MODEL, ["back"]).shape == (1, 64)
        assert server.problem() is None
    finally:
        server.stop()
    assert group_members(group) == []
