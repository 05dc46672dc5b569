"""Client settings: one timeout notion, batch sizes, and how many requests one call keeps in flight."""

from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self) -> None:
        for name in ("image_batch_size", "text_batch_size", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.max_retries < 0 or self.retry_backoff_s < 0:
            raise ValueError("max_retries and retry_backoff_s must not be negative")
