"""The client's one exception tree, and the one place where Triton's errors are translated into it.

    EmbeddingError
    ├── InvalidInputError        an input the server (or the client) cannot embed; never retried
    ├── ModelNotFoundError       no such model, or it is not ready
    ├── AccessDeniedError        the server wants an API key (ClientOptions.api_key) this call lacks
    ├── ServerUnavailableError   cannot reach the server, it is shutting down, or a model is (un)loading
    │   └── ServerOverloadedError    the server's queue is full; try again later
    ├── DeadlineExceededError    the call's timeout passed before all results came back
    └── ServerError              anything else the server reports (an internal error)

Each carries the server's own message. Matching is on the gRPC status code, except where Triton tells
cases apart only by text (an unknown model is UNAVAILABLE over gRPC in some versions).
"""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base of every error the mmembed client raises."""


class InvalidInputError(EmbeddingError, ValueError):
    """An input cannot be embedded: unreadable image, wrong type, invalid text.

    `index` is the item's position in the list the caller passed, when one item is to blame (None when
    the whole call is, e.g. an unsupported `dimensions=`).
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ModelNotFoundError(EmbeddingError):
    """The server has no such model, or it is not ready."""


class AccessDeniedError(EmbeddingError, PermissionError):
    """The server requires an API key this client did not send, or sent wrong."""


class ServerUnavailableError(EmbeddingError):
    """The server cannot be reached or is shutting down."""


class ServerOverloadedError(ServerUnavailableError):
    """The server rejected the request because its queue is full."""


class DeadlineExceededError(EmbeddingError, TimeoutError):
    """The call's timeout passed before every result came back."""


class ServerError(EmbeddingError):
    """Any other error the server reports."""


_BY_STATUS: dict[str, type[EmbeddingError]] = {
    "StatusCode.INVALID_ARGUMENT": InvalidInputError,
    "StatusCode.NOT_FOUND": ModelNotFoundError,
    "StatusCode.UNAVAILABLE": ServerUnavailableError,
    "StatusCode.RESOURCE_EXHAUSTED": ServerOverloadedError,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceededError,
}


def translate(status: str | None, message: str) -> EmbeddingError:
    """The client error for a Triton error with gRPC STATUS (e.g. 'StatusCode.NOT_FOUND') and MESSAGE."""
    lowered = message.lower()
    if "protocol is restricted" in lowered:
        return AccessDeniedError(f"{message} (pass the server's key as ClientOptions(api_key=...))")
    if "has no available versions" in lowered:  # loading or unloading, e.g. while the server restarts
        return ServerUnavailableError(message)
    if "is not healthy" in lowered or ("in ensemble" in lowered and "is not ready" in lowered):
        # a step's stub died or its model is being reloaded (mmembed serve's watchdog): back soon
        return ServerUnavailableError(message)
    if "unknown model" in lowered or "is not ready" in lowered or "is not found" in lowered:
        return ModelNotFoundError(message)
    if "exceeds maximum queue size" in lowered or "request timeout expired" in lowered:
        return ServerOverloadedError(message)
    return _BY_STATUS.get(status or "", ServerError)(message)
