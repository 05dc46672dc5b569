"""Concurrent gRPC clients against a served model, from several processes: throughput and latency.

Each thread is one independent user with its own client, sending requests of `batch` items drawn at
random from the corpus, back to back. Only requests that complete inside the measured window count.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    url: str
    model: str
    modality: str  # "image" or "text"
    batch: int  # items per request
    processes: int
    threads: int  # per process
    warmup_s: float
    seconds: float


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    items_per_s: float
    requests: int
    failures: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float


def run_load(plan: LoadPlan, corpus: list[bytes] | list[str]) -> LoadResult:
    context = multiprocessing.get_context("spawn")  # children start clean: no CUDA, no gRPC threads forked
    with context.Pool(plan.processes) as pool:
        parts = pool.starmap(_worker, [(plan, corpus, index) for index in range(plan.processes)])
    latencies = sorted(latency for part_latencies, _, _ in parts for latency in part_latencies)
    items = sum(part_items for _, part_items, _ in parts)
    failures: Counter[str] = Counter()
    for _, _, part_failures in parts:
        failures.update(part_failures)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return LoadResult(
        items_per_s=items / plan.seconds,
        requests=len(latencies),
        failures=dict(failures),
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
    )


def _worker(plan: LoadPlan, corpus: list[bytes] | list[str], index: int) -> tuple[list[float], int, dict[str, int]]:
    from mmembed.client import ClientOptions, EmbeddingClient, EmbeddingError

    start = time.monotonic()
    window_start, window_end = start + plan.warmup_s, start + plan.warmup_s + plan.seconds
    latencies: list[float] = []
    items = [0]
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    options = ClientOptions(timeout_s=120, image_batch_size=plan.batch, text_batch_size=plan.batch, max_in_flight=1)

    def user(seed: int) -> None:
        rng = random.Random(seed)
        with EmbeddingClient(plan.url, options) as client:
            embed = client.embed_images if plan.modality == "image" else client.embed_texts
            while time.monotonic() < window_end:
                chunk = [corpus[rng.randrange(len(corpus))] for _ in range(plan.batch)]
                sent = time.perf_counter()
                error = None
                try:
                    embed(plan.model, chunk)
                except EmbeddingError as e:
                    error = type(e).__name__
                latency, done = time.perf_counter() - sent, time.monotonic()
                if window_start <= done <= window_end:
                    with lock:
                        if error is None:
                            latencies.append(latency)
                            items[0] += plan.batch
                        else:
                            failures[error] += 1

    users = [threading.Thread(target=user, args=(index * 1000 + t,)) for t in range(plan.threads)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    return latencies, items[0], dict(failures)
