"""When to try a request again: only errors that say "not now" (unreachable, shutting down, overloaded),
never bad input or a missing model, and never past the call's deadline."""

from __future__ import annotations

import random
import time

from mmembed.client._errors import EmbeddingError, ServerUnavailableError
from mmembed.client.options import ClientOptions

MAX_BACKOFF_S = 2.0


def retry_delay(error: EmbeddingError, attempt: int, deadline: float, options: ClientOptions) -> float | None:
    """Seconds to wait before attempt ATTEMPT + 1, or None to raise ERROR now.

    Exponential backoff with full jitter (a uniform draw up to base x 2^attempt), so clients that failed
    together do not come back together."""
    if not isinstance(error, ServerUnavailableError) or attempt >= options.max_retries:
        return None
    delay = random.uniform(0, min(MAX_BACKOFF_S, options.retry_backoff_s * 2**attempt))
    if time.monotonic() + delay >= deadline:
        return None
    return delay
