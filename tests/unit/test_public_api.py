"""The public surface is pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import mmembed


def test_exported_names() -> None:
    assert sorted(mmembed.__all__) == [
        "AccessDeniedError",
        "AsyncEmbeddingClient",
        "ClientOptions",
        "DeadlineExceededError",
        "EmbeddingClient",
        "EmbeddingError",
        "ImageInput",
        "InvalidInputError",
        "ModelInfo",
        "ModelNotFoundError",
        "PartialEmbeddings",
        "ServerError",
        "ServerOverloadedError",
        "ServerUnavailableError",
        "__version__",
    ]
    for name in mmembed.__all__:
        assert hasattr(mmembed, name), name


def test_error_tree() -> None:
    assert issubclass(mmembed.ServerOverloadedError, mmembed.ServerUnavailableError)
    for name in (
        "InvalidInputError",
        "ModelNotFoundError",
        "AccessDeniedError",
        "ServerUnavailableError",
        "DeadlineExceededError",
    ):
        assert issubclass(getattr(mmembed, name), mmembed.EmbeddingError)
