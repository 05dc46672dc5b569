"""Liveness probes: one tiny real request per ensemble, sent over the server's local HTTP endpoint.

A stub that hangs or stops answering looks healthy to the process list and to Triton's readiness; only a
request tells. Triton answers requests to a stub it has found unresponsive with "Stub process ... is not
healthy" (seen with a stopped stub), so that answer marks the ensemble broken; any other answer, an
overload rejection included, proves the path alive. Queued requests are rejected after the queue timeout
(30 s by default), so a probe unanswered for far longer than that is stuck, not waiting behind load.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from mmembed.core.names import API_KEY_HEADER, EMBEDDING_OUTPUT, IMAGE_INPUT, TEXT_INPUT


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (127, 127, 127)).save(buffer, format="PNG")
    return buffer.getvalue()


PROBE_ITEMS = {IMAGE_INPUT: _tiny_png(), TEXT_INPUT: b"ok"}


UNHEALTHY = "is not healthy"  # in Triton's answer for a stub it has given up on


def probe_once(
    http_port: int, ensemble: str, input_names: list[str], api_key: str | None, timeout_s: float
) -> str | None:
    """Send one probe (one tiny item per input of ENSEMBLE): None if the path is alive, Triton's message
    if it says a stub is unhealthy; raises OSError (a timeout included) when there is no answer at all."""
    inputs = {name: [PROBE_ITEMS[name]] for name in input_names}
    try:
        http_infer(http_port, ensemble, inputs, api_key, timeout_s)  # any answer will do
    except urllib.error.HTTPError as e:  # an error answer is still an answer: alive unless it says otherwise
        message = e.read().decode(errors="replace")
        return message if UNHEALTHY in message else None
    return None


def http_embed(
    http_port: int, ensemble: str, inputs: dict[str, list[bytes]], api_key: str | None, timeout_s: float
) -> np.ndarray:
    """INPUTS (input name -> items) through ENSEMBLE over the server's local HTTP endpoint; the embeddings
    [items, dim] float32. Raises urllib.error.HTTPError with Triton's answer when it refuses, OSError
    without one."""
    (output,) = json.loads(http_infer(http_port, ensemble, inputs, api_key, timeout_s))["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def http_infer(
    http_port: int, ensemble: str, inputs: dict[str, list[bytes]], api_key: str | None, timeout_s: float
) -> bytes:
    """One inference request with each of INPUTS (name -> items) as a BYTES input; Triton's JSON answer,
    unparsed."""
    blobs = {name: b"".join(struct.pack("<I", len(item)) + item for item in items) for name, items in inputs.items()}
    described = [
        {
            "name": name,
            "shape": [len(inputs[name]), 1],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(blob)},  # Triton's binary BYTES, after the JSON header
        }
        for name, blob in blobs.items()
    ]
    outputs = [{"name": EMBEDDING_OUTPUT, "parameters": {"binary_data": False}}]
    header = json.dumps({"inputs": described, "outputs": outputs}).encode()
    blob = b"".join(blobs.values())
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    if api_key:
        headers[API_KEY_HEADER] = api_key
    request = urllib.request.Request(
        f"http://localhost:{http_port}/v2/models/{ensemble}/infer", header + blob, headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer: bytes = response.read()
    return answer


class Prober:
    """Keeps at most one probe in flight per ensemble; `failing()` names the ensembles whose last probe
    was answered "unhealthy" or has gone unanswered for TIMEOUT_S, with the reason."""

    def __init__(self, http_port: int, ensembles: dict[str, list[str]], api_key: str | None, timeout_s: float) -> None:
        """ENSEMBLES: each ensemble's input names."""
        self.http_port, self.ensembles, self.api_key, self.timeout_s = http_port, ensembles, api_key, timeout_s
        self._sent: dict[str, float] = {}  # ensemble -> when its outstanding probe was sent
        self._unhealthy: dict[str, str] = {}  # ensemble -> Triton's answer to its last probe
        self._lock = threading.Lock()

    def failing(self) -> dict[str, str]:
        """Start probes where none is in flight; return {ensemble: reason} for the broken ones."""
        now = time.monotonic()
        with self._lock:
            for ensemble in self.ensembles:
                if ensemble not in self._sent:
                    self._sent[ensemble] = now
                    threading.Thread(target=self._probe, args=(ensemble,), daemon=True).start()
            failing = dict(self._unhealthy)
            for ensemble, sent in self._sent.items():
                if now - sent > self.timeout_s:
                    failing[ensemble] = f"no answer to a probe for {self.timeout_s:.0f} s (a hung stub)"
            return dict(sorted(failing.items()))

    def _probe(self, ensemble: str) -> None:
        try:
            unhealthy = probe_once(self.http_port, ensemble, self.ensembles[ensemble], self.api_key, self.timeout_s * 2)
        except OSError:
            return  # no answer: stays in flight, so failing() keeps reporting it once overdue
        with self._lock:
            self._sent.pop(ensemble, None)
            if unhealthy:
                self._unhealthy[ensemble] = unhealthy.strip()
            else:
                self._unhealthy.pop(ensemble, None)
