"""What tritonservers say they served, read from their own statistics.

Triton records a request's statistics when it releases the request, which can come just after the client
has its response. So a count read at once can be one short (CI saw 9 of 10); these helpers read until
the counts settle, and the caller still asserts the exact numbers.
"""

from __future__ import annotations

import time
from typing import Literal

import tritonclient.grpc as grpcclient

from mmembed.serving.server import TritonServer

Counted = Literal["requests", "items"]


def _count(server: TritonServer, model: str, counted: Counted) -> int:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    finally:
        client.close()
    if counted == "requests":
        return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)
    return sum(int(s.get("inference_count", 0)) for s in stats)


def served(
    servers: list[TritonServer], model: str, counted: Counted, total: int | None = None, wait_s: float = 10.0
) -> list[int]:
    """Each server's count for `model`, once they add up to `total` or, without one, once two reads 0.25 s
    apart agree; after `wait_s` the last read is returned as it is, for the caller's assert to judge."""
    deadline = time.monotonic() + wait_s
    counts = [_count(server, model, counted) for server in servers]
    while time.monotonic() < deadline:
        if total is not None and sum(counts) == total:
            return counts
        time.sleep(0.25)
        previous, counts = counts, [_count(server, model, counted) for server in servers]
        if total is None and counts == previous:
            return counts
    return counts
