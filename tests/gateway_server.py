"""The gateway (or any ASGI app) on a free port, in this process, for tests: uvicorn in a thread, stopped on
exit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from mmembed.gateway.app import GatewaySettings, create_app
from mmembed.serving.server import free_port


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[str]:
    """Yield the base URL of a gateway with SETTINGS, serving until the block ends."""
    with running_app(create_app(settings)) as url:
        yield url


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Yield the base URL of APP served by uvicorn, until the block ends."""
    port = free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=30)
