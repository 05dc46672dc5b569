"""Client settings: one timeout notion, batch sizes, and how many requests one call keeps in flight."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    timeout_s: float = 60.0  # the deadline of one whole call (every batch of it), unless the call says
    image_batch_size: int = 16  # items per request; keep at or below the server's max_batch_size
    text_batch_size: int = 64
    max_in_flight: int = 4  # requests of one call sent concurrently

    def __post_init__(self) -> None:
        for name in ("image_batch_size", "text_batch_size", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
