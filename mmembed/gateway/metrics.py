"""The gateway's Prometheus metrics, in a registry of its own (several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mmembed_gateway_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.items = Counter("mmembed_gateway_items", "items embedded, by kind", ["kind"], registry=self.registry)
        self.errors = Counter(
            "mmembed_gateway_errors", "failed requests by error code", ["code"], registry=self.registry
        )
        self.latency = Histogram(
            "mmembed_gateway_request_seconds",
            "embedding request latency",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )

    def exposition(self) -> bytes:
        result: bytes = generate_latest(self.registry)
        return result
