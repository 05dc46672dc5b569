"""What the OpenAI-compatible gateway costs: the same requests sent straight to Triton over gRPC and through
the gateway (the official `openai` client), in one process, one after the other, as a table.

    python -m mmembed.bench.gateway --url localhost:8001 --model siglip2 [--seconds 20] [--concurrency 8]

The gateway runs as `mmembed gateway` in a process of its own (as deployed), on a free port, in front of
the server at --url; the load comes from this process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import openai

from mmembed.client import AsyncEmbeddingClient
from mmembed.core.sample_images import CAPTIONS, synthetic_jpeg
from mmembed.serving.server import free_port


@dataclass(frozen=True, kw_only=True)
class PathRate:
    path: str  # "gRPC" or "gateway"
    kind: str  # "texts" or "images"
    items_per_s: float
    p50_ms: float
    p99_ms: float
    # CPU time per request (user + system): of the process sending the load (this one), and of the gateway
    # process where the path is the gateway. On a small machine they compete with Triton for the cores.
    client_cpu_ms: float
    gateway_cpu_ms: float | None = None


@contextmanager
def running_gateway(triton_url: str, timeout_s: float = 60.0) -> Iterator[tuple[str, int]]:
    """`mmembed gateway` on a free loopback port, in its own process; yields its /v1 URL and pid."""
    port = free_port()
    command = [sys.executable, "-m", "mmembed.cli", "gateway", "--triton-url", triton_url, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mmembed gateway exited: {process.stderr.read().decode() if process.stderr else ''}"
                )
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mmembed gateway did not become ready") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1", process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process PID so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(call: Callable[[], Awaitable[int]], seconds: float, concurrency: int) -> tuple[float, list[float]]:
    """Items/s and per-request latencies (ms) of CONCURRENCY users calling CALL back to back for SECONDS."""
    latencies: list[float] = []
    items = 0
    deadline = time.perf_counter() + seconds

    async def user() -> None:
        nonlocal items
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            items += await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return items / (time.perf_counter() - started), latencies


def compare(
    triton_url: str, model: str, *, seconds: float, concurrency: int, text_batch: int = 8, image_batch: int = 4
) -> list[PathRate]:
    """Texts and images, gRPC first then the gateway, each for SECONDS."""
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(text_batch)]
    jpegs = [synthetic_jpeg(640, 480, seed=i) for i in range(image_batch)]
    uris = [{"image": "data:image/jpeg;base64," + base64.b64encode(j).decode()} for j in jpegs]
    results = []
    with running_gateway(triton_url) as (base_url, pid):

        async def run() -> None:
            async with AsyncEmbeddingClient(triton_url) as direct:
                caller = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
                async with caller:

                    async def grpc_texts() -> int:
                        return len(await direct.embed_texts(model, texts))

                    async def grpc_images() -> int:
                        return len(await direct.embed_images(model, jpegs))

                    async def gateway_texts() -> int:
                        return len((await caller.embeddings.create(model=model, input=texts)).data)

                    async def gateway_images() -> int:
                        return len((await caller.embeddings.create(model=model, input=uris)).data)  # type: ignore[arg-type]

                    calls = [
                        ("gRPC", "texts", grpc_texts),
                        ("gateway", "texts", gateway_texts),
                        ("gRPC", "images", grpc_images),
                        ("gateway", "images", gateway_images),
                    ]
                    for path, kind, call in calls:
                        await call()  # warm-up: connections, model metadata
                        cpu_before, client_before = cpu_seconds(pid), cpu_seconds(os.getpid())
                        rate, latencies = await _measure(call, seconds, concurrency)
                        cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / len(latencies)
                        client_ms = (cpu_seconds(os.getpid()) - client_before) * 1000 / len(latencies)
                        p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
                        rate_row = PathRate(
                            path=path,
                            kind=kind,
                            items_per_s=rate,
                            p50_ms=p50,
                            p99_ms=p99,
                            client_cpu_ms=client_ms,
                            gateway_cpu_ms=cpu_ms if path == "gateway" else None,
                        )
                        results.append(rate_row)

        asyncio.run(run())
    return results


def table(rates: list[PathRate]) -> str:
    """Markdown: each path's items/s and latency, and the gateway's rate as a share of gRPC's."""
    direct = {rate.kind: rate.items_per_s for rate in rates if rate.path == "gRPC"}
    lines = [
        "| path | kind | items/s | p50 ms | p99 ms | vs gRPC | client CPU ms/request | gateway CPU ms/request |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in rates:
        share = rate.items_per_s / direct[rate.kind] if direct.get(rate.kind) else float("nan")
        cpu = f"{rate.gateway_cpu_ms:.2f}" if rate.gateway_cpu_ms is not None else ""
        lines.append(
            f"| {rate.path} | {rate.kind} | {rate.items_per_s:.1f} | {rate.p50_ms:.1f} | {rate.p99_ms:.1f} | "
            f"{share:.2f} | {rate.client_cpu_ms:.2f} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint host:port")
    parser.add_argument("--model", required=True)
    parser.add_argument("--seconds", type=float, default=20.0, help="per path and kind")
    parser.add_argument("--concurrency", type=int, default=8, help="users, each one request at a time")
    args = parser.parse_args()
    rates = compare(args.url, args.model, seconds=args.seconds, concurrency=args.concurrency)
    print(table(rates))


if __name__ == "__main__":
    main()
