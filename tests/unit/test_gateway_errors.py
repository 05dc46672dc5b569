"""The gateway's translation of the client's errors into OpenAI's status codes and error objects."""

from __future__ import annotations

import pytest

from mmembed.client import (
    AccessDeniedError,
    DeadlineExceededError,
    EmbeddingError,
    InvalidInputError,
    ModelNotFoundError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from mmembed.gateway.errors import from_client_error


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (InvalidInputError("item 3: text is 9 bytes, over the limit of 8", index=3), 400, "invalid_input", None),
        (ModelNotFoundError("no model named 'x'"), 404, "model_not_found", None),
        (ServerOverloadedError("queue full"), 429, "overloaded", "1"),
        (ServerUnavailableError("connection refused"), 503, "unavailable", "1"),
        (DeadlineExceededError("deadline"), 504, "timeout", None),
        (AccessDeniedError("bad key"), 502, "upstream", None),
        (ServerError("boom"), 500, "internal", None),
    ],
)
def test_client_errors_become_openai_errors(
    error: EmbeddingError, status: int, code: str, retry_after: str | None
) -> None:
    api_error = from_client_error(error, index=7 if isinstance(error, InvalidInputError) else None)
    assert (api_error.status, api_error.code) == (status, code)
    assert api_error.headers().get("Retry-After") == retry_after
    body = api_error.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}


def test_a_bad_item_is_named_by_the_callers_index_not_the_batchs() -> None:
    api_error = from_client_error(InvalidInputError("item 3: text is 9 bytes, over the limit of 8", index=3), index=7)
    assert api_error.message == "input[7]: text is 9 bytes, over the limit of 8"
    assert api_error.param == "input"
