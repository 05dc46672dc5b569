"""A real HTTP server on the loopback interface, serving images, redirects, oversized and slow answers:
what the gateway's URL fetching is tested against."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def image_server(files: dict[str, bytes]) -> Iterator[str]:
    """Serve FILES by path; /redirect?to=URL answers 302 to URL, /loop redirects to itself, /slow answers
    after 3 s. Yields the base URL (http://127.0.0.1:PORT)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            if parts.path == "/redirect":
                self._redirect(urllib.parse.parse_qs(parts.query)["to"][0])
            elif parts.path == "/loop":
                self._redirect("/loop")
            elif parts.path == "/slow":
                time.sleep(3)
                self._answer(200, b"late")
            elif parts.path in files:
                self._answer(200, files[parts.path])
            else:
                self._answer(404, b"not found")

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
