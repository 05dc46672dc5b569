"""Errors as OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`), with the status
codes its clients act on: 400 bad input (naming the item), 401 key, 404 model, 429/503 try again later
(with Retry-After), 504 deadline."""

from __future__ import annotations

from dataclasses import dataclass

from mmembed.client import (
    AccessDeniedError,
    DeadlineExceededError,
    EmbeddingError,
    InvalidInputError,
    ModelNotFoundError,
    ServerOverloadedError,
    ServerUnavailableError,
)

RETRY_AFTER_S = 1  # what a client that was told "not now" should wait before trying again


@dataclass  # not frozen: raising sets __cause__ and __traceback__ on it
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after_s: int | None = None

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}


def bad_input(message: str, param: str = "input", code: str = "invalid_input") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_client_error(error: EmbeddingError, index: int | None = None) -> ApiError:
    """The API error for one of the client's errors; INDEX: the caller's item it concerns, if any."""
    if isinstance(error, InvalidInputError):
        if index is not None:
            item = str(error).split(": ", 1)[-1] if str(error).startswith("item ") else str(error)
            return bad_input(f"input[{index}]: {item}")
        return bad_input(str(error))
    if isinstance(error, ModelNotFoundError):
        return ApiError(404, str(error), param="model", code="model_not_found")
    if isinstance(error, ServerOverloadedError):
        return ApiError(429, str(error), type="rate_limit_error", code="overloaded", retry_after_s=RETRY_AFTER_S)
    if isinstance(error, ServerUnavailableError):
        return ApiError(503, str(error), type="server_error", code="unavailable", retry_after_s=RETRY_AFTER_S)
    if isinstance(error, DeadlineExceededError):
        return ApiError(504, str(error), type="server_error", code="timeout")
    if isinstance(error, AccessDeniedError):  # the gateway's own key to Triton is wrong: not the caller's fault
        return ApiError(502, f"the gateway was refused by Triton: {error}", type="server_error", code="upstream")
    return ApiError(500, str(error), type="server_error", code="internal")
