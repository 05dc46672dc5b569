"""Several Triton endpoints behind one client: round robin over the healthy ones, and an endpoint that
answers "not now" (unreachable, restarting, overloaded) set aside for a while, so that its requests go to
the others at once, within the call's deadline. For replicas without a load balancer or service mesh."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

COOL_DOWN_S = 5.0  # how long an endpoint that failed is left out before it is tried again


def parse_urls(url: str | Sequence[str]) -> list[str]:
    """ "host:port", "host1:port,host2:port" or a list of them -> the list of endpoints."""
    urls = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip() for u in urls if u.strip()]
    if not urls:
        raise ValueError("give at least one Triton endpoint (host:port)")
    return urls


class Endpoints(Generic[T]):
    """The clients of several endpoints, each with the time until which it is left out."""

    def __init__(self, urls: list[str], clients: list[T]) -> None:
        self.urls, self.clients = urls, clients
        self._down_until = [0.0] * len(clients)
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def pick(self, turn: str = "") -> tuple[int, T]:
        """The next healthy endpoint in TURN's rotation; when none is, the one that comes back first.

        Each kind of request (an ensemble) has its own rotation, so a caller that alternates image and text
        requests still spreads both; each starts at random, so many fresh clients do not all start on the
        first endpoint."""
        now = time.monotonic()
        with self._lock:
            count = len(self.clients)
            start = self._next.get(turn, random.randrange(count))
            for step in range(count):
                index = (start + step) % count
                if self._down_until[index] <= now:
                    self._next[turn] = index + 1
                    return index, self.clients[index]
            index = min(range(count), key=self._down_until.__getitem__)
            return index, self.clients[index]

    def set_aside(self, index: int) -> bool:
        """Leave endpoint INDEX out for a while; whether another endpoint is healthy now (try it at once)."""
        now = time.monotonic()
        with self._lock:
            self._down_until[index] = now + COOL_DOWN_S
            return any(until <= now for until in self._down_until)

    def healthy(self, index: int) -> None:
        with self._lock:
            self._down_until[index] = 0.0
