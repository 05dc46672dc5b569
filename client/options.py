"""Client settings: one timeout notion, batch sizes, requests in flight, retries, TLS and headers."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmembed.core.names import GRPC_API_KEY_HEADER


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    timeout_s: float = 60.0  # the deadline of one whole call (every batch of it), unless the call says
    image_batch_size: int = 16  # items per request; keep at or below the server's max_batch_size
    text_batch_size: int = 64
    max_in_flight: int = 4  # requests of one call sent concurrently
    # A request that fails with ServerUnavailableError (unreachable, restarting, queue full) is sent again
    # up to max_retries times, after jittered exponential backoff from retry_backoff_s, within timeout_s.
    max_retries: int = 3
    retry_backoff_s: float = 0.05
    # Security: gRPC over TLS (root_certificates: a PEM file to trust, default the system's), the key of a
    # server started with `mmembed serve --api-key`, and any other headers (a proxy's Authorization, say).
    ssl: bool = False
    root_certificates: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_headers(self) -> dict[str, str]:
        """The headers every request carries."""
        return {**self.headers, **({GRPC_API_KEY_HEADER: self.api_key} if self.api_key else {})}

    def __post_init__(self) -> None:
        for name in ("image_batch_size", "text_batch_size", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.max_retries < 0 or self.retry_backoff_s < 0:
            raise ValueError("max_retries and retry_backoff_s must not be negative")
