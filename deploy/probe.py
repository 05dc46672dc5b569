#!/usr/bin/env python3
"""Readiness and liveness probe for a tritonserver serving an mmembed repository: exit 0 when every
embedding ensemble answers one tiny real request, 1 (with the reason on stderr) when one does not.

Triton keeps a model "ready" while its Python-backend stub is dead or hung, so its own health endpoints
cannot tell; a request can. A stub Triton has given up on is answered "... is not healthy": that fails
the probe at once. Any other answer (an overload rejection included) proves the path alive; no answer
within --timeout fails it. Standard library only: it runs in the tritonserver container's Python, where
mmembed is not installed (mmembed serve's watchdog does the same from mmembed.serving.probe).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

UNHEALTHY = "is not healthy"
MODALITY = "mmembed.modality"  # the parameter every mmembed ensemble carries


def tiny_png() -> bytes:
    """A 1x1 gray PNG, written by hand (no Pillow here)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
    )


ITEMS = {"IMAGE": tiny_png(), "TEXT": b"ok"}


def call(base: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(base + path, body, headers, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: bytes = response.read()
        return answer


def ensembles(base: str, headers: dict[str, str], timeout: float) -> dict[str, list[str]]:
    """Every ready mmembed ensemble with its required inputs."""
    statistics = json.loads(call(base, "/v2/models/stats", None, headers, timeout))  # every loaded model
    found = {}
    for name in sorted({model["name"] for model in statistics.get("model_stats", [])}):
        config = json.loads(call(base, f"/v2/models/{name}/config", None, headers, timeout))
        if config.get("platform") == "ensemble" and MODALITY in config.get("parameters", {}):
            found[name] = [i["name"] for i in config.get("input", []) if not i.get("optional", False)]
    return found


def probe(base: str, ensemble: str, inputs: list[str], headers: dict[str, str], timeout: float) -> str | None:
    """None if ENSEMBLE answers; else why not."""
    blobs = {name: struct.pack("<I", len(ITEMS[name])) + ITEMS[name] for name in inputs}
    described = [
        {"name": name, "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}
        for name, blob in blobs.items()
    ]
    header = json.dumps({"inputs": described}).encode()
    request_headers = {
        **headers,
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    try:
        call(base, f"/v2/models/{ensemble}/infer", header + b"".join(blobs.values()), request_headers, timeout)
    except urllib.error.HTTPError as e:
        message = e.read().decode(errors="replace")
        return f"{ensemble}: {message.strip()}" if UNHEALTHY in message else None
    except OSError as e:
        return f"{ensemble}: no answer within {timeout:.0f} s ({e})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds each request may take")
    parser.add_argument("--api-key", default=None, help="the mmembed-api-key header, if the server wants one")
    args = parser.parse_args(argv)
    base = f"http://{args.host}:{args.http_port}"
    headers = {"mmembed-api-key": args.api_key} if args.api_key else {}
    try:
        found = ensembles(base, headers, args.timeout)
    except OSError as e:
        print(f"tritonserver does not answer on {base}: {e}", file=sys.stderr)
        return 1
    if not found:
        print(f"tritonserver on {base} serves no ready mmembed ensemble", file=sys.stderr)
        return 1
    with ThreadPoolExecutor(len(found)) as pool:
        answers = pool.map(lambda item: probe(base, item[0], item[1], headers, args.timeout), found.items())
        problems = [answer for answer in answers if answer]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
