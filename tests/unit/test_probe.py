"""The watchdog's prober against real HTTP endpoints that answer well, answer "unhealthy", are
overloaded, or never answer."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from mmembed.serving.probe import Prober

BEHAVIOUR = {
    "/v2/models/ok_text/infer": (200, b'{"outputs": []}'),
    "/v2/models/busy_text/infer": (503, b'{"error": "Exceeds maximum queue size"}'),
    "/v2/models/broken_text/infer": (500, b'{"error": "Stub process \'x_0_0\' is not healthy."}'),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path not in BEHAVIOUR:  # the hung model: hold the request past every timeout here
            time.sleep(5)
        status, body = BEHAVIOUR.get(self.path, (200, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_alive_overloaded_unhealthy_and_hung_are_told_apart(port: int) -> None:
    ensembles = {name: ["TEXT"] for name in ("ok_text", "busy_text", "broken_text", "hung_text")}
    prober = Prober(port, ensembles, api_key="k", timeout_s=1.0)
    assert prober.failing() == {}  # probes just sent: nothing overdue yet
    time.sleep(1.5)
    failing = prober.failing()
    assert sorted(failing) == ["broken_text", "hung_text"]
    assert "is not healthy" in failing["broken_text"]
    assert "no answer to a probe for 1 s" in failing["hung_text"]
